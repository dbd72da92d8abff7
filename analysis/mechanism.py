"""Does a collapse-theory probe predict utilization? (the paper's mechanism, Sec. 3–4)

Only probes that are *not* computed from utilization can be evidence. ``probe/codes_with_gradient`` is
excluded by construction: for VQ it equals the fraction of codes the batch used (utilization again), for
SimVQ it is 1.0 because W moves every code. The probes used, each with the sign the theory predicts:

- ``unused_code_distance`` (unused codes' distance to the data over the used codes' error): unused codes
  drift away from the data, so a larger distance should go with lower utilization (ρ < 0);
- ``distribution_gap`` (2-Wasserstein of Gaussian fits, codes vs latents): a codebook that does not
  cover the latent distribution leaves codes unused (ρ < 0);
- ``dead_code_revival`` (of codes dead at a checkpoint, the fraction used later): a method whose dead
  codes come back keeps more of its codebook (ρ > 0).

- ``distribution_gap_weighted`` (the same gap, codes weighted by their use in the batch) and
  ``dead_code_distance`` (unused-code distance over codes dead for ``dead_code_window`` steps, one
  definition for every method), where logged: ρ < 0.

Each trial contributes its probe's mean over the last quarter of training (less noisy than the last
point) and its final utilization. Mechanism questions are decided **within cells** (:mod:`analysis.cells`):
per quantizer within its K cells, and pooled within (quantizer, K) cells, each with the smallest p its
design can reach; Holm over those rows. The pooled Spearman across every trial is shown as "between
methods": it mixes "method A has more of the probe and more utilization" with a mechanism, so it carries
no verdict and is not in the family.
"""
from __future__ import annotations

import math

import pandas as pd

from benchmark.tracking import keys

from .cells import within_cell_association
from .checkpoints import AT_THIS_BUDGET
from .statistics import ALPHA, holm, spearman, spearman_ci

#: probe key -> (column name, the sign of ρ the theory predicts)
PROBES: dict[str, tuple[str, int]] = {
    keys.PROBE_UNUSED_CODE_DISTANCE: ("unused_code_distance", -1),
    keys.PROBE_DISTRIBUTION_GAP: ("distribution_gap", -1),
    keys.PROBE_DEAD_CODE_REVIVAL: ("dead_code_revival", +1),
    keys.PROBE_DISTRIBUTION_GAP_WEIGHTED: ("distribution_gap_weighted", -1),
    keys.PROBE_DEAD_CODE_DISTANCE: ("dead_code_distance", -1),
}
#: Never evidence (see the module docstring); listed so nothing reads it by mistake.
TAUTOLOGICAL_PROBES = [keys.PROBE_CODES_WITH_GRADIENT]
LAST_FRACTION = 0.25
POOLED = "all codebook quantizers"
BETWEEN = "between methods"
WITHIN_K = "within K cells"
WITHIN_CELLS = "within (quantizer, K) cells"
MIN_POINTS = 3
ASSOCIATION_COLUMNS = ["probe", "quantizer", "design", "n", "cells", "rho", "rho_ci_low", "rho_ci_high", "p",
                       "min_p", "p_holm", "expected_sign", "verdict"]


def probe_summaries(histories: pd.DataFrame) -> pd.DataFrame:
    """Per run: each probe's mean over the last LAST_FRACTION of its logged steps. Columns run_id and one
    column per probe that has any data."""
    curves = histories[histories["key"].isin(PROBES)]
    if curves.empty:
        return pd.DataFrame(columns=["run_id"])
    last_step = curves.groupby(["run_id", "key"])["step"].transform("max")
    late = curves[curves["step"] >= (1 - LAST_FRACTION) * last_step]
    wide = late.groupby(["run_id", "key"])["value"].mean().unstack("key")
    return wide.rename(columns={k: PROBES[k][0] for k in wide.columns}).reset_index()


def _verdict(rho: float, p_holm: float, sign: int) -> str:
    if not math.isfinite(p_holm):
        return "no test"
    if p_holm >= ALPHA:
        return "no significant association"
    return "as the theory predicts" if (rho > 0) == (sign > 0) else "opposite to the theory"


def probe_associations(frame: pd.DataFrame, utilization: str) -> pd.DataFrame:
    """Per probe: the within-cell association with final ``utilization`` per quantizer (cells = K) and
    pooled (cells = (quantizer, K)), Holm over those; plus the between-methods Spearman (no verdict)."""
    rows = []
    for key, (column, sign) in PROBES.items():
        if column not in frame:
            continue
        data = frame.dropna(subset=[column, utilization])
        if data.empty:
            continue
        groups = [(q, WITHIN_K, part, part["codebook_size_requested"]) for q, part in data.groupby("quantizer", sort=True)]
        if data["quantizer"].nunique() > 1:
            cells = data["quantizer"].astype(str) + "/" + data["codebook_size_requested"].astype(str)
            groups.append((POOLED, WITHIN_CELLS, data, cells))
        for quantizer, design, part, cells in groups:
            test = within_cell_association(part[column], part[utilization], cells)
            stuck = int((part["converged"] < 0.5).sum()) if "converged" in part else 0
            rows.append({"probe": column, "quantizer": quantizer, "design": design, "n": test.n, "cells": test.cells,
                         "rho": test.rho, "rho_ci_low": test.ci_low, "rho_ci_high": test.ci_high, "p": test.p,
                         "min_p": test.min_p, "expected_sign": "+" if sign > 0 else "−", "stuck": stuck})
        if data["quantizer"].nunique() > 1:
            x, y = data[column].astype(float), data[utilization].astype(float)
            row = {"probe": column, "quantizer": POOLED, "design": BETWEEN, "n": len(data), "cells": 1,
                   "rho": math.nan, "rho_ci_low": math.nan, "rho_ci_high": math.nan, "p": math.nan,
                   "min_p": math.nan, "expected_sign": "+" if sign > 0 else "−", "stuck": 0, "between_p": math.nan}
            if len(data) >= MIN_POINTS and x.nunique() > 1 and y.nunique() > 1:
                row["rho"], row["between_p"] = spearman(x, y)
                row["rho_ci_low"], row["rho_ci_high"] = spearman_ci(row["rho"], len(data))
            rows.append(row)
    table = pd.DataFrame(rows, columns=[*ASSOCIATION_COLUMNS, "stuck", "between_p"])
    if len(table):
        inside = table["design"] != BETWEEN
        table["p_holm"] = math.nan
        table.loc[inside, "p_holm"] = holm(table.loc[inside, "p"])
        table.loc[~inside, "p"] = table.loc[~inside, "between_p"]   # shown, not in the family
        table["verdict"] = [
            ("between methods: descriptive, no verdict" if design == BETWEEN else
             _verdict(r, p, 1 if s == "+" else -1) + (AT_THIS_BUDGET if stuck else ""))
            for r, p, s, design, stuck in zip(table["rho"], table["p_holm"], table["expected_sign"], table["design"],
                                              table["stuck"])]
    return table[ASSOCIATION_COLUMNS]


def best_probe(associations: pd.DataFrame) -> str:
    """Which probe predicts utilization best across quantizers: the largest pooled |ρ|, and whether its
    CI separates it from the runner-up (overlapping CIs: not distinguishable at this n)."""
    within = associations[associations["design"] != BETWEEN] if "design" in associations else associations
    pooled = within[within["quantizer"] == POOLED].dropna(subset=["rho"])
    if pooled.empty:   # one quantizer logged probes: its own rows, one per probe
        pooled = within.dropna(subset=["rho"])
    if pooled.empty:
        return "No probe could be tested (too few trials with a probe and a varying utilization)."
    ranked = pooled.assign(strength=pooled["rho"].abs()).sort_values("strength", ascending=False)
    best = ranked.iloc[0]
    text = (f"`{best['probe']}` predicts utilization best within cells ({best.get('design', '')}): "
            f"|ρ| = {abs(best['rho']):.3g} "
            f"(ρ 95% CI [{best['rho_ci_low']:.3g}, {best['rho_ci_high']:.3g}], n = {int(best['n'])}, "
            f"Holm p = {best['p_holm']:.3g}: {best['verdict']})")
    if len(ranked) < 2:
        return text + "; it is the only probe tested."
    second = ranked.iloc[1]
    same_sign = best["rho_ci_low"] * best["rho_ci_high"] > 0
    low_best = min(abs(best["rho_ci_low"]), abs(best["rho_ci_high"])) if same_sign else 0.0   # lower bound of |ρ|
    high_second = max(abs(second["rho_ci_low"]), abs(second["rho_ci_high"]))
    separated = math.isfinite(high_second) and low_best > high_second
    return text + (f"; its |ρ| CI lies above that of `{second['probe']}` (|ρ| = {abs(second['rho']):.3g})."
                   if separated else f"; not distinguishable from `{second['probe']}` "
                   f"(|ρ| = {abs(second['rho']):.3g}) at this n: their CIs overlap.")
