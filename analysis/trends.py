"""Does utilization fall as the codebook grows? (SimVQ paper, Sec. 3: "representation collapse").

One verdict per quantizer from three things: a rank test (Spearman ρ of utilization with log2 K, exact p
at small n, Holm-adjusted over the quantizers), an effect size (the drop from the smallest to the largest
K, with a t-interval over seeds), and the state of the measurement (convergence at the largest K, token
cap). A drop of 0.978 → 0.948 is not the same finding as 0.9 → 0.2, however small its p. Every verdict
resting on a trial that is not converged (the slope rule, :mod:`analysis.checkpoints`) ends "at this
budget"; the "add seeds" hint asks for a design whose smallest attainable p clears Holm's first bar α/m.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .checkpoints import AT_THIS_BUDGET
from .statistics import (ALPHA, holm, mean_ci, sample_columns, seeds_needed, smallest_exact_spearman_p,
                         spearman)
from .tables import TOKENS_PER_CODE

#: The smallest drop called a trend: 0.2 of the codebook in absolute terms, or half of the utilization at
#: the smallest K, whichever is smaller. 0.2 is a fifth of the codebook going unused, well beyond seed noise
#: at these budgets; the half rule lets a quantizer already low at the smallest K (VQ at 0.15 -> 0.003)
#: count as collapsing when it loses most of what it had. SimVQ's 0.978 -> 0.948 (0.03) is neither.
MIN_DROP_ABSOLUTE = 0.2
MIN_DROP_FRACTION = 0.5

COLLAPSES = "collapses with size"
RISES = "rises with size"
NO_MEANINGFUL_TREND = "no meaningful trend"
NOT_CONVERGED = "not converged at this budget"
CAPPED = "capped by tokens"
ADD_SEEDS = "add seeds"
NO_TREND = "no trend"
INSUFFICIENT = "insufficient data"

TREND_COLUMNS = ["quantizer", "metric", "n", "n_sizes", "mean_at_smallest", "mean_at_largest", "codes_at_smallest",
                 "codes_at_largest", "codes_slope", "drop", "drop_ci_low", "drop_ci_high", "drop_n", "min_effect",
                 "rho", "p", "p_holm", "verdict", "note"]


def utilization_metric(frame: pd.DataFrame) -> str:
    """``utilization_relative`` (utilization / the uniform ceiling for the run's K and test tokens) when
    every run logged it, else raw ``utilization``. Relative removes the token cap from a size trend: with
    N tokens a perfect quantizer's raw utilization must fall once K passes N."""
    if "utilization_relative" in frame and len(frame) and frame["utilization_relative"].notna().all():
        return "utilization_relative"
    return "utilization"


def minimum_effect(at_smallest: float) -> float:
    return min(MIN_DROP_ABSOLUTE, MIN_DROP_FRACTION * at_smallest) if math.isfinite(at_smallest) else MIN_DROP_ABSOLUTE


def capped_sizes(frame: pd.DataFrame) -> list[int]:
    """Requested sizes whose mean test-token count is below TOKENS_PER_CODE · K (the real K)."""
    if "tokens" not in frame or frame["tokens"].isna().all():
        return []
    per_size = frame.dropna(subset=["tokens"]).groupby("codebook_size_requested")[["tokens", "codebook_size"]].mean()
    return [int(k) for k, row in per_size.iterrows() if row["tokens"] < TOKENS_PER_CODE * row["codebook_size"]]


def _points(part: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One point per (sample, requested K): the mean over the latent dims run there. Columns: the sample
    columns, codebook_size_requested, x = log2 of the real K, value."""
    by = [*sample_columns(part), "codebook_size_requested"]
    points = part.groupby(by, dropna=False).agg(value=(metric, "mean"), size=("codebook_size", "median"))
    points["x"] = np.log2(points.pop("size").astype(float))
    return points.reset_index()


def _drop(points: pd.DataFrame, smallest, largest) -> tuple[float, float, float, int]:
    """Mean drop (smallest K − largest K) paired by sample, with its t-interval over samples."""
    wide = points.pivot_table(index=[c for c in points if c in ("seed", "replicate")],
                              columns="codebook_size_requested", values="value")
    paired = (wide[smallest] - wide[largest]).dropna()
    if len(paired) >= 1:
        return mean_ci(paired)
    at = points.groupby("codebook_size_requested")["value"].mean()
    return float(at[smallest] - at[largest]), math.nan, math.nan, 0


def _codes_used(part: pd.DataFrame, sizes: list) -> tuple[float, float, float]:
    """Mean count of used codes (utilization x K) at the smallest and the largest requested K, and the
    log-log slope of the count against K over every run (descriptive: 1 = the count grows as fast as K, a
    constant utilization; 0 = a fixed number of codes whatever K). Utilization as a fraction can fall while
    the count of used codes still grows, so the report shows both."""
    if "utilization" not in part:
        return math.nan, math.nan, math.nan
    runs = part.dropna(subset=["utilization"])
    counts = runs["utilization"] * runs["codebook_size"]
    at = counts.groupby(runs["codebook_size_requested"]).mean()
    usable = counts > 0
    slope = math.nan
    if runs.loc[usable, "codebook_size"].nunique() >= 2:
        slope = float(np.polyfit(np.log2(runs.loc[usable, "codebook_size"].astype(float)),
                                 np.log2(counts[usable].astype(float)), 1)[0])
    return float(at.get(sizes[0], math.nan)), float(at.get(sizes[-1], math.nan)), slope


def _convergence_note(part: pd.DataFrame, largest) -> tuple[bool, int, str]:
    """(any trial at the largest K unconverged, unconverged trials at any K, note)."""
    if "converged" not in part or part["converged"].dropna().empty:
        return False, 0, "convergence not recorded"
    known = part["converged"].dropna()
    at_largest = part.loc[part["codebook_size_requested"] == largest, "converged"].dropna()
    stuck_largest, stuck = int((at_largest < 0.5).sum()), int((known < 0.5).sum())
    notes = []
    if stuck_largest:
        notes.append(f"{stuck_largest} of {len(at_largest)} trials at the largest K not converged")
    if stuck > stuck_largest:
        notes.append(f"{stuck} of {len(known)} trials not converged in all")
    return stuck_largest > 0, stuck, "; ".join(notes)


def _verdict(row: dict, unconverged: bool, capped: bool) -> tuple[str, list[str]]:
    notes = []
    drop, low, high, min_effect = row["drop"], row["drop_ci_low"], row["drop_ci_high"], row["min_effect"]
    significant = math.isfinite(row["p_holm"]) and row["p_holm"] < ALPHA
    meaningful = abs(drop) >= min_effect
    negligible = math.isfinite(low) and -min_effect < low and high < min_effect
    if negligible:
        return NO_MEANINGFUL_TREND, [f"the drop's 95% CI [{low:.3g}, {high:.3g}] lies within ±{min_effect:.3g}"]
    if significant and meaningful and (row["rho"] < 0) == (drop > 0):
        if unconverged:
            return NOT_CONVERGED, ["utilization was still moving at the largest K: "
                                   + ("falls" if drop > 0 else "rises") + " with size so far"]
        if drop > 0 and capped and row["metric"] == "utilization":
            return CAPPED, ["the fall is at sizes where tokens < 10·K, and no ceiling was logged to correct for it"]
        return (COLLAPSES if drop > 0 else RISES), notes
    if not significant:
        notes.append(f"Holm-adjusted p = {row['p_holm']:.3g} ≥ {ALPHA}")
    elif not meaningful:
        notes.append(f"|drop| {abs(drop):.3g} < minimum effect {min_effect:.3g}, but its CI reaches it")
    return ADD_SEEDS, notes


def size_trends(frame: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Per quantizer: Spearman ρ of ``metric`` (default :func:`utilization_metric`) with log2 of the real
    codebook size, the drop from the smallest to the largest K, and a verdict (see the module constants).

    Each point is one (seed, requested K) — the mean over the latent dims run there — so n counts seeds ×
    sizes, never latent dims as if they were seeds. p is Holm-adjusted over the quantizers tested."""
    metric = metric or utilization_metric(frame)
    data = frame.dropna(subset=[metric, "codebook_size"])
    rows, states = [], []
    for quantizer, part in data.groupby("quantizer", sort=True):
        points = _points(part, metric)
        sizes = sorted(points["codebook_size_requested"].unique())
        n, n_sizes = len(points), len(sizes)
        at = points.groupby("codebook_size_requested")["value"].mean()
        row = {"quantizer": quantizer, "metric": metric, "n": n, "n_sizes": n_sizes,
               "mean_at_smallest": float(at[sizes[0]]), "mean_at_largest": float(at[sizes[-1]]),
               "drop": math.nan, "drop_ci_low": math.nan, "drop_ci_high": math.nan, "drop_n": 0,
               "min_effect": minimum_effect(float(at[sizes[0]])), "rho": math.nan, "p": math.nan,
               **dict(zip(("codes_at_smallest", "codes_at_largest", "codes_slope"), _codes_used(part, sizes))),
               "verdict": "", "note": ""}
        capped = [k for k in capped_sizes(part) if k in sizes]
        state = {"capped": capped, "unconverged": False, "stuck": 0, "notes": [], "floor": None}
        if n_sizes < 2:
            row["verdict"], row["note"] = INSUFFICIENT, "one codebook size"
        elif n < 3:
            row["verdict"], row["note"] = INSUFFICIENT, f"{n} points"
        elif np.ptp(points["value"]) == 0:
            row["verdict"], row["note"] = NO_TREND, f"{metric} is {points['value'].iloc[0]:.4g} at every size"
        else:
            row["drop"], row["drop_ci_low"], row["drop_ci_high"], row["drop_n"] = _drop(points, sizes[0], sizes[-1])
            row["rho"], row["p"] = spearman(points["x"], points["value"])
            state["unconverged"], state["stuck"], convergence = _convergence_note(part, sizes[-1])
            state["floor"] = (smallest_exact_spearman_p(points["x"].value_counts().to_list()), n_sizes, n)
            state["notes"] += [convergence] if convergence else []
        if capped:
            sizes_text = ", ".join(map(str, capped))
            state["notes"].append(f"capped by tokens at K = {sizes_text} (tokens < {TOKENS_PER_CODE}·K)")
        rows.append(row)
        states.append(state)
    table = pd.DataFrame(rows, columns=TREND_COLUMNS)
    table["p_holm"] = holm(table["p"]) if len(table) else []
    family = max(1, int(table["p"].notna().sum())) if len(table) else 1
    for i, state in enumerate(states):
        row = table.iloc[i].to_dict()
        if state["floor"] is not None:
            # Holm rejects nothing unless the smallest p is below α/m, so that is the bar a design must clear
            floor, n_sizes, n = state["floor"]
            bar = ALPHA / family
            if floor >= bar:
                need = seeds_needed(n_sizes, alpha=bar)
                state["notes"].insert(0, f"{n_sizes} sizes × {n // n_sizes} seeds: the smallest attainable exact p is "
                                      f"{floor:.3g} ≥ {ALPHA}" + (f"/{family} (Holm over {family} tests)" if family > 1 else "")
                                      + (f"; {need} seeds per size can go below" if need else ""))
        if not row["verdict"]:
            verdict, notes = _verdict(row, state["unconverged"], bool(state["capped"]))
            if verdict != NOT_CONVERGED and state["stuck"]:
                verdict += AT_THIS_BUDGET   # every verdict resting on an unconverged trial says so
            table.loc[table.index[i], "verdict"] = verdict
            state["notes"] = notes + state["notes"]
        table.loc[table.index[i], "note"] = "; ".join(filter(None, [row["note"], *state["notes"]]))
    return table
