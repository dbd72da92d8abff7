"""The budget axis (issue 12): how utilization moves with the training images seen.

The trainer evaluates at several checkpoints of one trial (by default 1/8, 1/4, 1/2 and all of the
steps), logging ``eval/*`` with step = the optimizer step and ``eval/samples_seen`` beside them. From those
histories: the (K × samples seen) grid per quantizer (the phase diagram: where a method does or does not
escape collapse as training goes on), and per (quantizer, K) the change over the last doubling of
samples; per run the convergence verdict of the slope rule (:mod:`benchmark.evaluation.convergence`), logged
or recomputed from the checkpoint history for runs logged before the rule; per (quantizer, K) the mean slope
with its CI and the runs' statuses.
"""
from __future__ import annotations

import math

import pandas as pd

from benchmark.evaluation.convergence import CONVERGED, FALLING, RISING, STATUS_NAMES, convergence_verdict
from benchmark.tracking import keys

from .statistics import mean_ci

CHECKPOINT_KEYS = [keys.EVAL_UTILIZATION, keys.EVAL_UTILIZATION_RELATIVE, keys.EVAL_SAMPLES_SEEN]
_COLUMNS = {keys.EVAL_UTILIZATION: "utilization", keys.EVAL_UTILIZATION_RELATIVE: "utilization_relative",
            keys.EVAL_SAMPLES_SEEN: "samples_seen"}
MOVEMENT_COLUMNS = ["quantizer", "codebook_size_requested", "checkpoints", "first_samples", "first_value",
                    "final_samples", "final_value", "slope", "slope_ci_low", "slope_ci_high", "n",
                    "converged", "movement"]
AT_THIS_BUDGET = " at this budget"
#: How the report names the rule (one sentence, with the tolerances the verdicts used).
RULE = (f"a trial is **converged** when the 95% t-interval of the slope of utilization / its mean level "
        f"against log2(samples seen), fitted over its evaluation checkpoints (at least 3), lies inside "
        f"±max({keys.CONVERGENCE_REL_TOL:g}, {keys.CONVERGENCE_ABS_TOL:g} / mean utilization) per doubling "
        f"(`benchmark.evaluation.convergence.convergence_verdict`); rising/falling when the whole interval lies "
        f"beyond, unclear otherwise, never converged with fewer than 3 checkpoints")


def checkpoint_frame(histories: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, checkpoint): run info, step, samples_seen (logged, else step × batch size),
    utilization and utilization_relative (NaN where not logged)."""
    curves = histories[histories["key"].isin(CHECKPOINT_KEYS)]
    if curves.empty or not (curves["key"] != keys.EVAL_SAMPLES_SEEN).any():
        return pd.DataFrame(columns=["run_id", "step", *_COLUMNS.values()])
    wide = curves.pivot_table(index=["run_id", "step"], columns="key", values="value", aggfunc="last")
    wide = wide.rename(columns=_COLUMNS).reset_index()
    for column in _COLUMNS.values():
        if column not in wide:
            wide[column] = math.nan
    info = frame[["run_id", "quantizer", "codebook_size_requested", "codebook_size", "latent_dim", "seed",
                  "batch_size", "converged"]]
    wide = wide.merge(info, on="run_id", how="inner")
    fallback = wide["step"] * wide["batch_size"].astype(float)
    wide["samples_seen"] = wide["samples_seen"].fillna(fallback)
    return wide.dropna(subset=["samples_seen"])


def run_convergence(checkpoints: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """Per run: the convergence verdict of :func:`benchmark.evaluation.convergence.convergence_verdict` (the
    slope rule). Runs that logged ``eval/convergence_status`` keep it (``convergence_source`` "logged");
    runs logged before the rule (only the old two-point ``eval/converged``) are re-judged from their
    checkpoint history of raw utilization against samples seen ("recomputed"); runs with neither: NaN.
    Columns run_id, convergence_status, utilization_slope, slope_ci_low, slope_ci_high, convergence_source,
    converged (1.0 only for "converged")."""
    rows = []
    logged = frame.set_index("run_id")
    for run_id in frame["run_id"]:
        code = logged.at[run_id, "convergence_status"] if "convergence_status" in logged else math.nan
        if pd.notna(code) and float(code) in STATUS_NAMES:
            rows.append({"run_id": run_id, "convergence_status": STATUS_NAMES[float(code)],
                         "utilization_slope": logged.at[run_id, "utilization_slope"]
                         if "utilization_slope" in logged else math.nan,
                         "slope_ci_low": logged.at[run_id, "utilization_slope_ci_low"]
                         if "utilization_slope_ci_low" in logged else math.nan,
                         "slope_ci_high": logged.at[run_id, "utilization_slope_ci_high"]
                         if "utilization_slope_ci_high" in logged else math.nan,
                         "convergence_source": "logged"})
            continue
        curve = checkpoints[checkpoints["run_id"] == run_id].dropna(subset=["utilization", "samples_seen"])
        curve = curve[curve["samples_seen"] > 0]
        if curve.empty:
            rows.append({"run_id": run_id, "convergence_status": math.nan, "utilization_slope": math.nan,
                         "slope_ci_low": math.nan, "slope_ci_high": math.nan, "convergence_source": "none"})
            continue
        verdict = convergence_verdict(curve["samples_seen"].tolist(), curve["utilization"].tolist(),
                                      abs_tol=keys.CONVERGENCE_ABS_TOL, rel_tol=keys.CONVERGENCE_REL_TOL)
        rows.append({"run_id": run_id, "convergence_status": verdict.status, "utilization_slope": verdict.slope,
                     "slope_ci_low": verdict.ci_low, "slope_ci_high": verdict.ci_high,
                     "convergence_source": "recomputed"})
    table = pd.DataFrame(rows, columns=["run_id", "convergence_status", "utilization_slope", "slope_ci_low",
                                        "slope_ci_high", "convergence_source"])
    table["converged"] = [math.nan if pd.isna(s) else float(s == CONVERGED) for s in table["convergence_status"]]
    return table


def apply_convergence(frame: pd.DataFrame, checkpoints: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``converged`` (and the status, slope, CI and source) replaced by :func:`run_convergence`."""
    verdicts = run_convergence(checkpoints, frame)
    kept = frame.drop(columns=[c for c in verdicts.columns if c != "run_id" and c in frame])
    return kept.merge(verdicts, on="run_id", how="left")


def budget_suffix(unconverged: int) -> str:
    """" at this budget" when any trial a verdict rests on is not converged (slope rule), else ""."""
    return AT_THIS_BUDGET if unconverged else ""


def movement(frame: pd.DataFrame, checkpoints: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (quantizer, requested K): the metric at the first and the final checkpoint (means over runs),
    the per-run slope of the convergence rule (relative change per doubling) averaged with its t-interval
    over runs, converged k/n, and a word from the runs' statuses: "converged" when every run is, "still
    rising" / "still falling" when every run is, "unclear" otherwise."""
    rows = []
    for (quantizer, size), part in frame.groupby(["quantizer", "codebook_size_requested"], sort=True):
        curve = checkpoints[(checkpoints["quantizer"] == quantizer) & (checkpoints["codebook_size_requested"] == size)]
        per_samples = curve.groupby("samples_seen")[metric].mean().dropna() if metric in curve else pd.Series()
        slopes = part["utilization_slope"] if "utilization_slope" in part else pd.Series(dtype=float)
        change, low, high, n = mean_ci(slopes)
        statuses = part["convergence_status"].dropna() if "convergence_status" in part else pd.Series(dtype=object)
        if statuses.empty:
            word = "not recorded"
        elif (statuses == CONVERGED).all():
            word = "converged"
        elif (statuses == RISING).all():
            word = "still rising"
        elif (statuses == FALLING).all():
            word = "still falling"
        else:
            word = "unclear (" + ", ".join(f"{k} {s}" for s, k in statuses.value_counts().sort_index().items()) + ")"
        rows.append({"quantizer": quantizer, "codebook_size_requested": int(size), "checkpoints": len(per_samples),
                     "first_samples": per_samples.index[0] if len(per_samples) else math.nan,
                     "first_value": per_samples.iloc[0] if len(per_samples) else math.nan,
                     "final_samples": per_samples.index[-1] if len(per_samples) else math.nan,
                     "final_value": per_samples.iloc[-1] if len(per_samples) else math.nan,
                     "slope": change, "slope_ci_low": low, "slope_ci_high": high, "n": n,
                     "converged": f"{int((statuses == CONVERGED).sum())}/{len(statuses)}" if len(statuses) else "–",
                     "movement": word})
    return pd.DataFrame(rows, columns=MOVEMENT_COLUMNS)
