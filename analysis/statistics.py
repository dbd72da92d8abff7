"""The statistical primitives behind vqbench's verdicts (scipy), each a plain function over numbers.

The verdicts themselves live by job: :mod:`analysis.trends` (utilization vs codebook size),
:mod:`analysis.comparisons` (SimVQ vs the others and the controls), :mod:`analysis.mechanism` (probes vs
utilization). Three rules hold everywhere (issue 12):

- every p-value comes with an effect size and its 95% CI, and the CI is *consistent with the test*: a
  paired t-test is reported with the Student-t interval of the same mean and standard error, so at any n
  the CI excludes 0 exactly when p < ALPHA (a percentile bootstrap at n ≤ 5 can exclude 0 while the t-test
  says p = 0.2);
- p-values are Holm-adjusted within each family of tests (the report names each family);
- a sample is one seed (``seed`` plus ``replicate``, which is 0 unless repeats are explicitly allowed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
CONFIDENCE = 0.95
#: Up to this many points the Spearman p-value is exact: all n! pairings are enumerated. SciPy's default
#: t-approximation is only asymptotic: for n = 4 points with rho = -1 it reports p = 0, where the exact
#: two-sided p is 2/24 = 0.083. Above this size, the approximation is used.
EXACT_SPEARMAN_MAX_N = 9
#: Columns that identify one sample: a seed, and the repeat of that seed (0 unless repeats are allowed).
SAMPLE = ["seed", "replicate"]


def sample_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in SAMPLE if c in frame]


def mean_ci(values) -> tuple[float, float, float, int]:
    """Mean and Student-t 95% interval: (mean, low, high, n); the interval is NaN for n < 2."""
    array = np.asarray(pd.Series(values, dtype=float).dropna(), dtype=float)
    n = len(array)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(array.mean())
    if n < 2:
        return mean, math.nan, math.nan, n
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * array.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


def summarize(frame: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """Mean and 95% t-interval of ``value`` per group: columns ``by`` + mean, ci_low, ci_high, n."""
    rows = []
    for group, part in frame.groupby(by, sort=True, dropna=True):
        mean, low, high, n = mean_ci(part[value])
        if n:
            rows.append({**dict(zip(by, group if isinstance(group, tuple) else (group,))),
                         "mean": mean, "ci_low": low, "ci_high": high, "n": n})
    return pd.DataFrame(rows, columns=[*by, "mean", "ci_low", "ci_high", "n"])


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment (Holm 1979) of one family of p-values; NaN entries (no test) stay NaN
    and do not count towards the family size.

    Written here (ten lines) rather than taken from statsmodels, which vqbench does not depend on:
    sort the m p-values, multiply the i-th smallest (0-based) by m − i, carry the running maximum so the
    adjusted values keep the raw order, cap at 1. Example: [0.01, 0.04, 0.03] -> [0.03, 0.06, 0.06]."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    if m:
        order = finite[np.argsort(p[finite], kind="stable")]
        steps = (m - np.arange(m)) * p[order]
        adjusted[order] = np.minimum(1.0, np.maximum.accumulate(steps))
    return adjusted


# ---------------------------------------------------------------- rank correlation
def spearman(x, y) -> tuple[float, float]:
    """Spearman rho and its two-sided p-value: exact (every pairing of the ranks) for up to
    EXACT_SPEARMAN_MAX_N points, SciPy's t-approximation above. Ties get average ranks, as in spearmanr."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    result = stats.spearmanr(x, y)
    rho = float(result.statistic)
    if len(x) > EXACT_SPEARMAN_MAX_N:
        return rho, float(result.pvalue)
    ranks_x, ranks_y = stats.rankdata(x), stats.rankdata(y)
    centred_y = ranks_y - ranks_y.mean()
    scale = math.sqrt(((ranks_x - ranks_x.mean()) ** 2).sum() * (centred_y ** 2).sum())

    def rank_correlation(permuted_ranks_x, axis=-1):  # Pearson of ranks = Spearman
        return ((permuted_ranks_x - ranks_x.mean()) * centred_y).sum(axis=axis) / scale

    exact = stats.permutation_test((ranks_x,), rank_correlation, permutation_type="pairings",
                                   vectorized=True, n_resamples=np.inf, alternative="two-sided")
    return rho, float(exact.pvalue)


def smallest_exact_spearman_p(tie_counts) -> float:
    """The smallest two-sided exact Spearman p any outcome can reach when x has these tie groups (e.g.
    4 codebook sizes × 3 seeds -> [3, 3, 3, 3]) and y has no ties: 2 / (n! / ∏ c!), the two extreme
    orderings among the distinguishable arrangements. With 4 sizes × 1 seed it is 2/24 = 0.083; with 2
    sizes × 3 seeds 2·3!·3!/6! = 0.1, so no result of that design can be significant at 0.05."""
    counts = [int(c) for c in tie_counts if c]
    n = sum(counts)
    if n < 2:
        return 1.0
    log_arrangements = math.lgamma(n + 1) - sum(math.lgamma(c + 1) for c in counts)
    return min(1.0, 2.0 * math.exp(-log_arrangements))


def seeds_needed(n_sizes: int, alpha: float = ALPHA, most: int = 50) -> int | None:
    """The fewest samples per size for which :func:`smallest_exact_spearman_p` drops below ``alpha``."""
    for per_size in range(1, most + 1):
        if smallest_exact_spearman_p([per_size] * n_sizes) < alpha:
            return per_size
    return None


def spearman_ci(rho: float, n: int) -> tuple[float, float]:
    """95% CI of Spearman's rho by Fisher's z with the Bonett & Wright (2000) standard error
    sqrt((1 + rho²/2) / (n − 3)); NaN below 4 points. |rho| = 1 is pulled in by 1e-9 so z stays finite."""
    if n < 4 or not math.isfinite(rho):
        return math.nan, math.nan
    z = math.atanh(max(-1 + 1e-9, min(1 - 1e-9, rho)))
    half = stats.norm.ppf(0.5 + CONFIDENCE / 2) * math.sqrt((1 + rho * rho / 2) / (n - 3))
    return math.tanh(z - half), math.tanh(z + half)


# ---------------------------------------------------------------- paired differences
@dataclass
class PairedTest:
    """A paired t-test of ``n`` differences (a − b), with the t-interval of their mean."""

    n: int
    mean_difference: float
    statistic: float           # t
    p: float
    ci_low: float              # Student-t 95% CI of the mean difference: excludes 0 iff p < ALPHA
    ci_high: float
    note: str                  # why there is no test, when there is none


def paired_test(differences) -> PairedTest:
    """Paired t-test of whether the mean difference is zero, and the t-interval of that mean.

    ``stats.ttest_1samp(d, 0)`` equals ``ttest_rel(a, b)`` for d = a − b. The interval uses the same
    mean, standard error and t quantile as the test, so the two never disagree. n < 2: no test
    ("insufficient seeds"); identical differences (up to rounding): no variance, no test (the CI is the
    single value)."""
    d = np.asarray(differences, dtype=float)
    d = d[np.isfinite(d)]
    n = len(d)
    if n == 0:
        return PairedTest(0, math.nan, math.nan, math.nan, math.nan, math.nan, "no pairs")
    mean = float(d.mean())
    if n < 2:
        return PairedTest(n, mean, math.nan, math.nan, math.nan, math.nan, f"insufficient seeds (n = {n})")
    if np.ptp(d) <= 1e-12 * max(1.0, float(np.abs(d).max())):   # equal up to rounding: t would be noise
        return PairedTest(n, mean, math.nan, math.nan, mean, mean,
                          f"every difference equals {mean:.4g}: no variance to test")
    result = stats.ttest_1samp(d, 0.0)
    _, low, high, _ = mean_ci(d)
    return PairedTest(n, mean, float(result.statistic), float(result.pvalue), low, high, "")


# ---------------------------------------------------------------- family-adjusted intervals and ratios
def adjusted_interval(differences, family_size: int) -> tuple[float, float]:
    """Bonferroni-adjusted Student-t interval of the mean difference: confidence 1 − α/m for a family of
    m tests (simultaneous coverage ≥ 1 − α). It excludes 0 only where the raw p < α/m, and then Holm rejects
    too; Holm (step-down) can also reject where this interval still touches 0. NaN for n < 2."""
    d = np.asarray(differences, dtype=float)
    d = d[np.isfinite(d)]
    if len(d) < 2 or family_size < 1:
        return math.nan, math.nan
    mean = float(d.mean())
    half = float(stats.t.ppf(1 - ALPHA / (2 * family_size), len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return mean - half, mean + half


def fieller_ratio(numerator, denominator, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Ratio of paired means mean(a)/mean(b) with Fieller's interval (Fieller 1954), for paired samples
    (a_i, b_i), e.g. one part of SimVQ's advantage and the total advantage on the same seed.

    Solves (ā − r·b̄)² = t²·(s_aa − 2r·s_ab + r²·s_bb)/n for r, t the Student quantile with n − 1 df.
    Bounded only where b̄ is significantly non-zero (b̄² > t²·s_bb/n); otherwise (−inf, inf): the total
    is too uncertain for any share to be stated. (ratio, low, high); NaN for n < 2."""
    a, b = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = len(a)
    if n < 2 or b.mean() == 0:
        return math.nan, math.nan, math.nan
    ratio = float(a.mean() / b.mean())
    t2 = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) ** 2
    covariance = np.cov(a, b, ddof=1) / n
    s_aa, s_ab, s_bb = covariance[0, 0], covariance[0, 1], covariance[1, 1]
    quad = b.mean() ** 2 - t2 * s_bb
    lin = a.mean() * b.mean() - t2 * s_ab
    const = a.mean() ** 2 - t2 * s_aa
    discriminant = lin * lin - quad * const
    if quad <= 0 or discriminant < 0:
        return ratio, -math.inf, math.inf
    root = math.sqrt(discriminant)
    return ratio, float((lin - root) / quad), float((lin + root) / quad)
