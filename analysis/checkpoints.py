"""The budget axis (issue 12): how utilization moves with the training images seen.

The trainer evaluates at several checkpoints of one trial (by default 1/8, 1/4, 1/2 and all of the
steps), logging ``eval/*`` with step = the optimizer step and ``eval/samples_seen`` beside them. From those
histories: the (K × samples seen) grid per quantizer (the phase diagram: where a method does or does not
escape collapse as training goes on), and per (quantizer, K) the change over the last doubling of
samples (``eval/utilization_change``) with its CI, against the convergence tolerance.
"""
from __future__ import annotations

import math

import pandas as pd

from benchmark.tracking import keys

from .statistics import mean_ci

CHECKPOINT_KEYS = [keys.EVAL_UTILIZATION, keys.EVAL_UTILIZATION_RELATIVE, keys.EVAL_SAMPLES_SEEN]
_COLUMNS = {keys.EVAL_UTILIZATION: "utilization", keys.EVAL_UTILIZATION_RELATIVE: "utilization_relative",
            keys.EVAL_SAMPLES_SEEN: "samples_seen"}
MOVEMENT_COLUMNS = ["quantizer", "codebook_size_requested", "checkpoints", "first_samples", "first_value",
                    "final_samples", "final_value", "change", "change_ci_low", "change_ci_high", "n",
                    "converged", "movement"]


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


def movement(frame: pd.DataFrame, checkpoints: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (quantizer, requested K): the metric at the first and the final checkpoint (means over runs),
    the last-doubling change (eval/utilization_change) with its t-interval, converged k/n, and a word:
    "settled" when the change's CI lies within ±CONVERGENCE_TOLERANCE (one run: its change does),
    "still rising"/"still falling" when the mean change is beyond it, "unclear" otherwise."""
    tolerance = keys.CONVERGENCE_TOLERANCE
    rows = []
    for (quantizer, size), part in frame.groupby(["quantizer", "codebook_size_requested"], sort=True):
        curve = checkpoints[(checkpoints["quantizer"] == quantizer) & (checkpoints["codebook_size_requested"] == size)]
        per_samples = curve.groupby("samples_seen")[metric].mean().dropna() if metric in curve else pd.Series()
        changes = part["utilization_change"] if "utilization_change" in part else pd.Series(dtype=float)
        change, low, high, n = mean_ci(changes)
        known = part["converged"].dropna() if "converged" in part else pd.Series(dtype=float)
        if n == 0:
            word = "not recorded"
        elif (math.isfinite(low) and -tolerance <= low and high <= tolerance) or (n == 1 and abs(change) <= tolerance):
            word = "settled"   # one run has no CI: its own change, the trainer's convergence rule
        elif abs(change) > tolerance:
            word = "still rising" if change > 0 else "still falling"
        else:
            word = "unclear"
        rows.append({"quantizer": quantizer, "codebook_size_requested": int(size), "checkpoints": len(per_samples),
                     "first_samples": per_samples.index[0] if len(per_samples) else math.nan,
                     "first_value": per_samples.iloc[0] if len(per_samples) else math.nan,
                     "final_samples": per_samples.index[-1] if len(per_samples) else math.nan,
                     "final_value": per_samples.iloc[-1] if len(per_samples) else math.nan,
                     "change": change, "change_ci_low": low, "change_ci_high": high, "n": n,
                     "converged": f"{int((known >= 0.5).sum())}/{len(known)}" if len(known) else "–",
                     "movement": word})
    return pd.DataFrame(rows, columns=MOVEMENT_COLUMNS)
