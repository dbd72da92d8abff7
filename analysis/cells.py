"""Associations decided *within* cells: is a probe related to utilization among trials of one
(quantizer, K) cell, where the method and the codebook size are held fixed? Pooling across methods lets
"SimVQ has more revival and more utilization" pass for a mechanism; within cells it cannot.

Statistic: the Pearson correlation of within-cell centred ranks (each variable ranked inside its cell,
the cell's mean rank subtracted): a Spearman ρ with cell fixed effects. Its p-value is a permutation test
that shuffles y only inside cells (stratified), exact (every within-cell arrangement) when there are at most
EXACT_MAX arrangements, else MONTE_CARLO seeded random ones (p = (1 + #as extreme) / (1 + resamples)).
The smallest p the design can reach is reported beside it: 2 / ∏ n_c! exact (3 seeds in one cell: 1/3;
three such cells: 2/216), 1 / (1 + resamples) by Monte Carlo. Cells with one trial carry no information and
are dropped. CI of ρ: Fisher z with the Bonett–Wright error at n − (cells − 1) effective points.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .statistics import spearman_ci

EXACT_MAX = 50_000
MONTE_CARLO = 9_999
SEED = 0


@dataclass
class CellTest:
    rho: float
    p: float
    min_p: float       # the smallest p this design (cell sizes, resampling) can produce
    n: int             # trials in cells of two or more
    cells: int
    ci_low: float
    ci_high: float


def _centred_ranks(values: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    out = np.zeros(len(values))
    for index in groups:
        ranks = stats.rankdata(values[index])
        out[index] = ranks - ranks.mean()
    return out


def _every_arrangement(rx: np.ndarray, ry: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """``sum_c <rx_c, perm(ry_c)>`` for every combination of within-cell permutations, as one array: each
    cell's dot products over its permutations, then their outer sum cell by cell (the same float sums, in
    the same order, as looping over ``itertools.product``; 2.3 M Python iterations took 7 s in the quick
    report)."""
    totals = np.zeros(1)
    for g in groups:
        perms = np.array(list(itertools.permutations(range(len(g)))))
        dots = (ry[g][perms] * rx[g]).sum(axis=1)
        totals = np.add.outer(totals, dots).ravel()
    return totals


def within_cell_association(x, y, cells) -> CellTest:
    """Within-cell rank association of ``x`` with ``y`` (``cells``: one label per point); NaN where no
    cell holds two points with varying x and y."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    labels = np.asarray([str(c) for c in cells])
    keep = np.isfinite(x) & np.isfinite(y)
    x, y, labels = x[keep], y[keep], labels[keep]
    groups = [np.flatnonzero(labels == c) for c in dict.fromkeys(labels)]
    groups = [g for g in groups if len(g) >= 2]
    index = np.concatenate(groups) if groups else np.array([], dtype=int)
    nan = CellTest(math.nan, math.nan, math.nan, len(index), len(groups), math.nan, math.nan)
    if not groups:
        return nan
    remap = {old: new for new, old in enumerate(index)}
    groups = [np.array([remap[i] for i in g]) for g in groups]
    x, y = x[index], y[index]
    rx, ry = _centred_ranks(x, groups), _centred_ranks(y, groups)
    scale = math.sqrt((rx ** 2).sum() * (ry ** 2).sum())
    if scale == 0:
        return nan
    rho = float((rx * ry).sum() / scale)
    arrangements = math.prod(math.factorial(len(g)) for g in groups)
    if arrangements <= EXACT_MAX:
        stats_all = _every_arrangement(rx, ry, groups) / scale
        p = float((np.abs(stats_all) >= abs(rho) - 1e-12).mean())
        min_p = min(1.0, 2 / arrangements)
    else:
        rng = np.random.default_rng(SEED)
        shuffled = np.tile(ry, (MONTE_CARLO, 1))
        for g in groups:
            block = shuffled[:, g]
            shuffled[:, g] = np.take_along_axis(block, rng.random(block.shape).argsort(axis=1), axis=1)
        values = (shuffled * rx).sum(axis=1) / scale
        p = float((1 + (np.abs(values) >= abs(rho) - 1e-12).sum()) / (1 + MONTE_CARLO))
        min_p = 1 / (1 + MONTE_CARLO)
    low, high = spearman_ci(rho, len(x) - (len(groups) - 1))
    return CellTest(rho, p, min_p, len(x), len(groups), low, high)
