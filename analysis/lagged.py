"""Does a probe *predict* utilization, rather than accompany it? Two lagged tests, both within cells
(:mod:`analysis.cells`), Holm over the rows of one family ("lagged"):

- **lagged change**: the probe's value at evaluation checkpoint t (its latest logged value at a step ≤ t)
  against the change of utilization from t to the next checkpoint (2t at the default checkpoint ratio),
  within (quantizer, K, checkpoint) cells: a probe that drives collapse should move utilization *later*;
- **early gap**: the distribution gap (usage-weighted where logged, else the unweighted one) at the first
  checkpoint against final utilization, within (quantizer, K) cells: the rival explanation, read as a
  prediction.
Theory signs: revival +, distances and gaps −.
"""
from __future__ import annotations

import math

import pandas as pd

from benchmark.tracking import keys

from .cells import within_cell_association
from .checkpoints import AT_THIS_BUDGET
from .mechanism import PROBES, _verdict
from .statistics import holm

LAGGED_COLUMNS = ["test", "probe", "cells", "n", "rho", "rho_ci_low", "rho_ci_high", "p", "min_p", "p_holm",
                  "expected_sign", "verdict"]


def _value_at(curve: pd.DataFrame, step: int) -> float:
    before = curve[curve["step"] <= step]
    return float(before["value"].iloc[-1]) if len(before) else math.nan


def lagged_points(histories: pd.DataFrame, checkpoints: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (run, probe, checkpoint t with a next checkpoint): probe value at t, change of ``metric``
    to the next checkpoint, the cell label (quantizer/K/checkpoint index)."""
    rows = []
    probes = histories[histories["key"].isin(PROBES)].sort_values("step")
    for run_id, points in checkpoints.sort_values("step").groupby("run_id", sort=False):
        points = points.dropna(subset=[metric])
        run_curves = probes[probes["run_id"] == run_id]
        info = points.iloc[0] if len(points) else None
        for key, curve in run_curves.groupby("key", sort=False):
            for i in range(len(points) - 1):
                step = int(points["step"].iloc[i])
                rows.append({"run_id": run_id, "probe": PROBES[key][0], "value": _value_at(curve, step),
                             "change": float(points[metric].iloc[i + 1] - points[metric].iloc[i]),
                             "cell": f"{info['quantizer']}/{info['codebook_size_requested']}/{i}",
                             "converged": info.get("converged", math.nan)})
    return pd.DataFrame(rows, columns=["run_id", "probe", "value", "change", "cell", "converged"])


def early_gap_points(histories: pd.DataFrame, checkpoints: pd.DataFrame, frame: pd.DataFrame,
                     metric: str) -> pd.DataFrame:
    """Per run: the gap at the first checkpoint (weighted where logged) and final ``metric``."""
    rows = []
    for key in (keys.PROBE_DISTRIBUTION_GAP_WEIGHTED, keys.PROBE_DISTRIBUTION_GAP):
        curves = histories[histories["key"] == key].sort_values("step")
        if curves.empty:
            continue
        first = checkpoints.groupby("run_id")["step"].min()
        for run in frame.dropna(subset=[metric]).itertuples():
            curve = curves[curves["run_id"] == run.run_id]
            if curve.empty or run.run_id not in first.index:
                continue
            value = _value_at(curve, int(first[run.run_id]))
            rows.append({"run_id": run.run_id, "probe": PROBES[key][0], "value": value,
                         "change": float(getattr(run, metric)),
                         "cell": f"{run.quantizer}/{run.codebook_size_requested}",
                         "converged": getattr(run, "converged", math.nan)})
        break   # the weighted gap where logged, else the unweighted one
    return pd.DataFrame(rows, columns=["run_id", "probe", "value", "change", "cell", "converged"])


def lagged_predictions(histories: pd.DataFrame, checkpoints: pd.DataFrame, frame: pd.DataFrame,
                       metric: str) -> pd.DataFrame:
    """The lagged family: per probe, probe at t vs Δ utilization t → next checkpoint; and early gap vs final."""
    rows = []
    sets = [("probe at t → Δ utilization to the next checkpoint", lagged_points(histories, checkpoints, metric)),
            ("gap at the first checkpoint → final utilization",
             early_gap_points(histories, checkpoints, frame, metric))]
    for test, points in sets:
        for probe, part in points.groupby("probe", sort=True):
            result = within_cell_association(part["value"], part["change"], part["cell"])
            sign = PROBES[next(k for k, v in PROBES.items() if v[0] == probe)][1]
            stuck = int((part["converged"] < 0.5).sum()) if "converged" in part else 0
            rows.append({"test": test, "probe": probe, "cells": result.cells, "n": result.n, "rho": result.rho,
                         "rho_ci_low": result.ci_low, "rho_ci_high": result.ci_high, "p": result.p,
                         "min_p": result.min_p, "expected_sign": "+" if sign > 0 else "−", "stuck": stuck})
    table = pd.DataFrame(rows, columns=[*LAGGED_COLUMNS, "stuck"])
    if len(table):
        table["p_holm"] = holm(table["p"])
        table["verdict"] = [_verdict(r, p, 1 if s == "+" else -1) + (AT_THIS_BUDGET if stuck else "")
                            for r, p, s, stuck in zip(table["rho"], table["p_holm"], table["expected_sign"],
                                                      table["stuck"])]
    return table[LAGGED_COLUMNS]
