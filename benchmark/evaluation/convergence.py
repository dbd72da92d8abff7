"""Has a trial's utilization levelled off? A trend over the last checkpoints, not two points.

The rule (:func:`convergence_verdict`), applied by the trainer at every evaluation checkpoint (stopping
rule, ``TrainConfig.stop_when_converged``), logged once per trial (:func:`benchmark.evaluation.checkpoints.
convergence`) and re-applied by the analysis to runs logged before it existed:

1. Take the last ``window`` checkpoints (default: every checkpoint given; at least ``min_points`` = 3).
2. Regress the *relative* level ``y_i = u_i / mean(u)`` on ``x_i = log2(samples seen_i)`` by ordinary least
   squares. The slope b is the change of utilization per doubling of samples as a fraction of its mean level
   (b = 0.04: +4 % of the current level per doubling). Relative, so one tolerance fits VQ at 0.02 and LFQ at
   1.0; per doubling, so checkpoints at 1/8, 1/4, 1/2, 1 of the steps are equally spaced.
3. A two-sided Student-t interval of b with n − 2 degrees of freedom at ``confidence`` (0.95).
4. The tolerance band, in the same relative units: ``±max(rel_tol, abs_tol / mean(u))``: either part
   suffices. ``rel_tol`` = 0.02: less than 2 % of the level per doubling, so even 8× more training (3 doublings)
   would move utilization by under 6 % of its level (a steady +4 % per doubling is *not* converged);
   ``abs_tol`` = 0.001: less than 0.1 % of the codebook per doubling (one code in 1,024), which lets a
   utilization near zero (where relative changes are a few codes) count as flat.
5. Status: **converged** when the whole CI lies inside the band; **rising** / **falling** when the whole CI
   lies beyond +band / −band; **unclear** otherwise (the data cannot tell: e.g. 0.30 → 0.60 → 0.31 → 0.30,
   or three points whose residual makes the t interval with 1 degree of freedom wide); **too few
   checkpoints** below ``min_points`` (never converged).

With 3 points the interval has 1 degree of freedom (t = 12.7), so "converged" then needs an almost exactly
flat curve: the rule errs towards "unclear", never towards "converged". Cost: a few arithmetic operations
on at most a handful of numbers (no torch, no scipy beyond one t quantile).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

CONVERGED = "converged"
RISING = "rising"
FALLING = "falling"
UNCLEAR = "unclear"
TOO_FEW = "too few checkpoints"
#: Numeric codes logged as ``eval/convergence_status`` (MLflow metrics are numbers).
STATUS_CODES = {CONVERGED: 0.0, RISING: 1.0, FALLING: -1.0, UNCLEAR: 2.0, TOO_FEW: 3.0}
STATUS_NAMES = {code: name for name, code in STATUS_CODES.items()}

MIN_POINTS = 3
REL_TOL = 0.02      # relative slope per doubling
ABS_TOL = 0.001     # utilization (fraction of K) per doubling
CONFIDENCE = 0.95


@dataclass(frozen=True)
class ConvergenceVerdict:
    status: str          # one of CONVERGED, RISING, FALLING, UNCLEAR, TOO_FEW
    slope: float         # relative change of utilization per doubling of samples (NaN with too few points)
    ci_low: float
    ci_high: float
    points: int          # checkpoints the fit used
    tolerance: float = math.nan   # the band half-width used, relative units

    @property
    def converged(self) -> bool:
        return self.status == CONVERGED

    @property
    def code(self) -> float:
        return STATUS_CODES[self.status]


def convergence_verdict(samples_seen, utilization, *, min_points: int = MIN_POINTS, window: int | None = None,
                        abs_tol: float = ABS_TOL, rel_tol: float = REL_TOL,
                        confidence: float = CONFIDENCE) -> ConvergenceVerdict:
    """The convergence status of utilization against samples seen (see the module docstring).

    ``samples_seen`` and ``utilization``: equal-length sequences, one entry per checkpoint (any order; they
    are sorted by samples seen; samples must be positive and distinct). ``window``: use only the last
    ``window`` checkpoints (None: all). Raises ValueError on mismatched lengths or non-positive samples."""
    samples, values = [float(s) for s in samples_seen], [float(u) for u in utilization]
    if len(samples) != len(values):
        raise ValueError(f"samples_seen and utilization must have the same length; got {len(samples)} and {len(values)}")
    pairs = sorted(zip(samples, values))
    pairs = [(s, u) for s, u in pairs if math.isfinite(s) and math.isfinite(u)]
    if any(s <= 0 for s, _ in pairs):
        raise ValueError("samples_seen must be positive (the fit is against log2 of it)")
    if window is not None:
        pairs = pairs[-max(int(window), min_points):]
    n = len(pairs)
    if n < max(min_points, 3):
        return ConvergenceVerdict(TOO_FEW, math.nan, math.nan, math.nan, n)
    x = [math.log2(s) for s, _ in pairs]
    level = sum(u for _, u in pairs) / n
    x_mean = sum(x) / n
    sxx = sum((v - x_mean) ** 2 for v in x)
    if sxx <= 0:
        raise ValueError("samples_seen must hold at least two distinct values")
    tolerance = rel_tol if level <= 0 else max(rel_tol, abs_tol / level)
    if level <= 0:   # never used a code at any checkpoint: flat at zero
        return ConvergenceVerdict(CONVERGED, 0.0, 0.0, 0.0, n, tolerance)
    y = [u / level for _, u in pairs]
    slope = sum((xi - x_mean) * yi for xi, yi in zip(x, y)) / sxx
    intercept = sum(y) / n - slope * x_mean
    residual = sum((yi - intercept - slope * xi) ** 2 for xi, yi in zip(x, y))
    se = math.sqrt(residual / (n - 2) / sxx)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 2)) * se
    low, high = slope - half, slope + half
    if -tolerance <= low and high <= tolerance:
        status = CONVERGED
    elif low > tolerance:
        status = RISING
    elif high < -tolerance:
        status = FALLING
    else:
        status = UNCLEAR
    return ConvergenceVerdict(status, slope, low, high, n, tolerance)
