"""Dead-code revival against a null: how often would dead codes come back with no codebook mechanism?

Revival is not computed from utilization, but it is tied to it: a codebook that uses more codes and
reshuffles which ones has more refills to give to dead codes. The null (``benchmark.evaluation.revival.
growth_only_revival``): a fraction g of the used codes stays used and the vacancies are refilled at
random, so a dead code returns with probability u(1 − g)/(1 − g·u). Per run, u is the final test
utilization and g the keep rate over the last checkpoint interval, 1 − codes_died / u_previous, corrected
for re-drawn codes (``null_keep_rate``); the excess is revival − null. Where no run logged the turnover
(runs before ``eval/codes_died``), the reference is the frozen-W arm ``simvq-frozen-w`` at the same K
(its codebook gets no gradient), and the excess is revival − that arm's mean revival.

The theory predicts VQ's dead codes stay dead beyond chance (excess < 0: a code nobody selects gets no
update) and SimVQ's do not. It is supported only where VQ sits below the null within a K cell while no SimVQ
cell does; revival at the null, for every method, is what a process without any mechanism produces.
"Above"/"below" need the excess's t-interval beyond ± a margin (MARGIN_FRACTION of the null rate, at
least MARGIN_MIN): seeds that agree closely would otherwise make a negligible excess "significant".
"""
from __future__ import annotations

import math

import pandas as pd

from benchmark.evaluation.revival import growth_only_revival, null_keep_rate
from benchmark.tracking import keys

from .checkpoints import AT_THIS_BUDGET
from .statistics import mean_ci

REFERENCE_ARM = "simvq-frozen-w"
#: The smallest excess that counts: a quarter of the null's own rate (at least 0.005). The theory's VQ
#: revives almost nothing against a chance rate; a few-percent excess over seeds that agree is no mechanism.
MARGIN_FRACTION = 0.25
MARGIN_MIN = 0.005
ABOVE, BELOW, AT = "above the null", "below the null (dead codes stay dead beyond chance)", "at the null"
REVIVAL_COLUMNS = ["quantizer", "codebook_size_requested", "reference", "n", "revival", "null", "excess",
                   "excess_ci_low", "excess_ci_high", "verdict"]


def kept_observed(histories: pd.DataFrame, checkpoints: pd.DataFrame) -> pd.Series:
    """Per run: the observed keep rate over the last checkpoint interval, 1 − died / u_previous."""
    died = histories[histories["key"] == keys.EVAL_CODES_DIED].sort_values("step").groupby("run_id")["value"].last()
    out = {}
    for run_id, points in checkpoints.sort_values("step").groupby("run_id"):
        points = points.dropna(subset=["utilization"])
        if run_id in died.index and len(points) >= 2 and points["utilization"].iloc[-2] > 0:
            out[run_id] = max(0.0, 1 - died[run_id] / points["utilization"].iloc[-2])
    return pd.Series(out, dtype=float)


def revival_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (quantizer, K): mean revival, null and excess with its t-interval. ``runs`` columns: quantizer,
    codebook_size_requested, dead_code_revival, utilization, kept_observed (NaN where not logged),
    optionally converged."""
    data = runs.dropna(subset=["dead_code_revival"]).copy()
    if data.empty:
        return pd.DataFrame(columns=REVIVAL_COLUMNS)
    with_turnover = data["kept_observed"].notna() if "kept_observed" in data else pd.Series(False, index=data.index)
    data["null"] = math.nan
    for index in data.index[with_turnover]:
        u = float(data.at[index, "utilization"])
        data.at[index, "null"] = growth_only_revival(u, null_keep_rate(float(data.at[index, "kept_observed"]), u))
    data["reference"] = ["growth-only null" if t else "" for t in with_turnover]
    if not with_turnover.any() and (data["quantizer"] == REFERENCE_ARM).any():
        arm = data[data["quantizer"] == REFERENCE_ARM].groupby("codebook_size_requested")["dead_code_revival"].mean()
        data["null"] = data["codebook_size_requested"].map(arm)
        data["reference"] = f"{REFERENCE_ARM} arm"
        data = data[data["quantizer"] != REFERENCE_ARM]
    data = data.dropna(subset=["null"])
    rows = []
    for (quantizer, size), part in data.groupby(["quantizer", "codebook_size_requested"], sort=True):
        excess, low, high, n = mean_ci(part["dead_code_revival"] - part["null"])
        margin = max(MARGIN_MIN, MARGIN_FRACTION * float(part["null"].mean()))
        if math.isfinite(low) and low > margin:
            verdict = ABOVE
        elif math.isfinite(high) and high < -margin:
            verdict = BELOW
        else:
            verdict = AT
        stuck = int((part["converged"] < 0.5).sum()) if "converged" in part else 0
        rows.append({"quantizer": quantizer, "codebook_size_requested": int(size),
                     "reference": part["reference"].iloc[0], "n": n, "revival": float(part["dead_code_revival"].mean()),
                     "null": float(part["null"].mean()), "excess": excess, "excess_ci_low": low,
                     "excess_ci_high": high, "verdict": verdict + (AT_THIS_BUDGET if stuck else "")})
    return pd.DataFrame(rows, columns=REVIVAL_COLUMNS)


def revival_against_null(frame: pd.DataFrame, histories: pd.DataFrame, checkpoints: pd.DataFrame) -> pd.DataFrame:
    if "dead_code_revival" not in frame:
        return pd.DataFrame(columns=REVIVAL_COLUMNS)
    runs = frame.assign(kept_observed=frame["run_id"].map(kept_observed(histories, checkpoints)))
    return revival_rows(runs)


def revival_summary(table: pd.DataFrame) -> str:
    """One sentence: does revival support the theory beyond the null?"""
    if table.empty:
        return "Revival could not be set against a null (no revival, or neither turnover nor the frozen-W arm logged)."
    vq_below = table[(table["quantizer"] == "vq") & table["verdict"].str.startswith(BELOW)]
    simvq_below = table[table["quantizer"].str.startswith("simvq") & table["verdict"].str.startswith(BELOW)]
    budget = AT_THIS_BUDGET if table["verdict"].str.endswith(AT_THIS_BUDGET).any() else ""
    if len(vq_below) and simvq_below.empty:
        sizes = ", ".join(str(k) for k in vq_below["codebook_size_requested"])
        return (f"Revival supports the theory{budget}: VQ's dead codes stay dead beyond the null at K = {sizes}, "
                "and no SimVQ cell does.")
    if table["verdict"].str.startswith(AT).all():
        return (f"Revival shows no mechanism beyond the null{budget}: every (quantizer, K) cell revives as a "
                "process with no codebook mechanism would; revival does not support the theory here.")
    return (f"Revival does not support the theory beyond the null{budget}: "
            + "; ".join(f"{r.quantizer} K = {r.codebook_size_requested}: {r.verdict}" for r in table.itertuples()) + ".")
