"""The statistics behind vqbench's verdicts (scipy), each a plain function over a runs DataFrame.

They test the SimVQ paper's claims (Zhu et al. 2024, arXiv 2411.02038): vanilla VQ's utilization falls as
the codebook grows (Sec. 3, "representation collapse"); reparameterizing the codebook as C·W keeps it
high (Sec. 4); the mechanism is that VQ's loss only moves the selected codes (disjoint optimization), so
the fraction of codes a step moves (gradient coverage) should go with utilization.

Input frames are rows of FINISHED runs as built by :func:`analysis.runs.runs_frame` (one per trial).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
#: Up to this many points the Spearman p-value is exact: all n! pairings are enumerated. SciPy's default
#: t-approximation is only asymptotic: for n = 4 points with rho = -1 it reports p = 0, where the exact
#: two-sided p is 2/24 = 0.083. Above this size, the approximation is used.
EXACT_SPEARMAN_MAX_N = 9
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0          # fixed so that the report is the same every time it is regenerated
# Below this many pairs the exact two-sided Wilcoxon p-value cannot go below 2 / 2**n = 0.0625 > ALPHA.
WILCOXON_MIN_PAIRS = 6


def mean_ci(values) -> tuple[float, float, float, int]:
    """Mean and Student-t 95% interval over seeds: (mean, low, high, n); the interval is NaN for n < 2."""
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


# ---------------------------------------------------------------- utilization vs codebook size
TREND_COLUMNS = ["quantizer", "n", "n_sizes", "mean_at_smallest", "mean_at_largest", "rho", "p", "verdict"]


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


def size_trends(frame: pd.DataFrame, metric: str = "utilization") -> pd.DataFrame:
    """Per quantizer: Spearman ρ of ``metric`` with log2 of the real codebook size over all its trials.

    Columns: quantizer, n (trials), n_sizes, mean at the smallest and at the largest size (the effect's
    magnitude), rho, p, verdict. "collapses with size" only when ρ < 0 and p < ALPHA."""
    rows = []
    for quantizer, part in frame.dropna(subset=[metric, "codebook_size"]).groupby("quantizer", sort=True):
        log2_size = np.log2(part["codebook_size"].astype(float).to_numpy())
        values = part[metric].astype(float).to_numpy()
        n, n_sizes = len(values), len(np.unique(log2_size))
        rho = p = math.nan
        if n_sizes < 2:
            verdict = "insufficient data: one codebook size"
        elif n < 3:
            verdict = f"insufficient data: {n} trials"
        elif np.ptp(values) == 0:
            verdict = f"no trend: {metric} is {values[0]:.4g} at every size"
        else:
            rho, p = spearman(log2_size, values)
            if p < ALPHA:
                verdict = "collapses with size" if rho < 0 else f"{metric} rises with size"
            else:
                direction = "falls" if rho < 0 else "rises"
                verdict = f"no significant trend ({metric} {direction} with size, p >= {ALPHA}"
                if 2 / math.factorial(n) >= ALPHA:
                    verdict += f"; {n} trials cannot reach p < {ALPHA}: add seeds"
                verdict += ")"
        rows.append({"quantizer": quantizer, "n": n, "n_sizes": n_sizes,
                     "mean_at_smallest": float(values[log2_size == log2_size.min()].mean()),
                     "mean_at_largest": float(values[log2_size == log2_size.max()].mean()),
                     "rho": rho, "p": p, "verdict": verdict})
    return pd.DataFrame(rows, columns=TREND_COLUMNS)



# ---------------------------------------------------------------- paired comparisons
@dataclass
class PairedTest:
    """A paired comparison of ``n`` differences (reference − other)."""

    n: int
    mean_difference: float
    test: str                  # "paired t-test", "Wilcoxon signed-rank", or "none"
    statistic: float
    p: float
    ci_low: float              # bootstrap 95% CI of the mean difference (percentile method)
    ci_high: float
    note: str                  # why this test, or why there is none


def paired_test(differences) -> PairedTest:
    """Test whether the mean of paired differences is zero, with a test suited to n.

    n < 2: none ("insufficient seeds"). 2 ≤ n < 6: paired t-test (assumes normal differences), because
    the exact Wilcoxon test cannot reach p < 0.05 with so few pairs. n ≥ 6: Wilcoxon signed-rank, which
    needs no normality. The CI is a percentile bootstrap (BCa is unstable at these n) with a fixed seed.
    ``scipy.stats.ttest_1samp(d, 0)`` equals ``ttest_rel(a, b)`` and ``wilcoxon(d)`` equals
    ``wilcoxon(a, b)`` for d = a − b."""
    d = np.asarray(differences, dtype=float)
    d = d[np.isfinite(d)]
    n = len(d)
    if n == 0:
        return PairedTest(0, math.nan, "none", math.nan, math.nan, math.nan, math.nan, "no pairs")
    mean = float(d.mean())
    if n < 2:
        return PairedTest(n, mean, "none", math.nan, math.nan, math.nan, math.nan, "insufficient seeds (n = 1)")
    if np.ptp(d) == 0:
        return PairedTest(n, mean, "none", math.nan, math.nan, mean, mean,
                          f"every difference equals {mean:.4g}: no variance to test")
    if n < WILCOXON_MIN_PAIRS:
        result = stats.ttest_1samp(d, 0.0)
        test, note = "paired t-test", f"n = {n} < {WILCOXON_MIN_PAIRS}: exact Wilcoxon cannot reach p < {ALPHA}"
    else:
        result = stats.wilcoxon(d)
        test, note = "Wilcoxon signed-rank", f"n = {n} ≥ {WILCOXON_MIN_PAIRS}: distribution-free"
    interval = bootstrap_ci(d)
    return PairedTest(n, mean, test, float(result.statistic), float(result.pvalue), interval[0], interval[1], note)


def bootstrap_ci(values) -> tuple[float, float]:
    """Percentile bootstrap 95% CI of the mean, BOOTSTRAP_RESAMPLES resamples, seed BOOTSTRAP_SEED."""
    result = stats.bootstrap((np.asarray(values, dtype=float),), np.mean, n_resamples=BOOTSTRAP_RESAMPLES,
                             confidence_level=CONFIDENCE, method="percentile",
                             rng=np.random.default_rng(BOOTSTRAP_SEED))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


COMPARISON_COLUMNS = ["reference", "quantizer", "codebook_size_requested", "paired_on", "n",
                      "reference_mean", "other_mean", "mean_difference", "ci_low", "ci_high",
                      "test", "statistic", "p", "verdict"]


def _pairs(reference: pd.DataFrame, other: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, str]:
    """Paired values (columns ref, other) and a description of what pairs them.

    Pairs are trials with the same seed and latent dim. When the two share no latent dim (FSQ and LFQ
    may fix their own), each quantizer is averaged over its latent dims per seed and paired by seed."""
    shared = set(reference["latent_dim"].dropna()) & set(other["latent_dim"].dropna())
    if shared:
        on = ["seed", "latent_dim"]
        left = reference[reference["latent_dim"].isin(shared)]
        right = other[other["latent_dim"].isin(shared)]
        paired_on = "seed, latent dim"
    else:
        on = ["seed"]
        left, right = reference, other
        dims = lambda part: "/".join(str(v) for v in sorted(part["latent_dim"].dropna().unique()))  # noqa: E731
        paired_on = f"seed (latent dims differ: {dims(reference)} vs {dims(other)})"
    left = left.groupby(on)[metric].mean().rename("ref")
    right = right.groupby(on)[metric].mean().rename("other")
    return pd.concat([left, right], axis=1, join="inner").dropna(), paired_on


def compare_to_reference(frame: pd.DataFrame, reference: str = "simvq", metric: str = "utilization") -> pd.DataFrame:
    """``reference`` vs every other quantizer at each requested codebook size, paired over seeds.

    One row per (other quantizer, requested size): n pairs, means, mean difference (reference − other)
    with its bootstrap CI, the test from :func:`paired_test` and a verdict."""
    data = frame.dropna(subset=[metric])
    ref_runs = data[data["quantizer"] == reference]
    rows = []
    for (quantizer, size), other in data[data["quantizer"] != reference].groupby(
            ["quantizer", "codebook_size_requested"], sort=True):
        ref_at_size = ref_runs[ref_runs["codebook_size_requested"] == size]
        if ref_at_size.empty:
            continue
        pairs, paired_on = _pairs(ref_at_size, other, metric)
        result = paired_test(pairs["ref"] - pairs["other"])
        if result.n < 2:
            verdict = f"insufficient seeds (n = {result.n})"
        elif result.test == "none":
            verdict = ("identical in every pair" if result.mean_difference == 0 else
                       f"every pair differs by {result.mean_difference:.4g} (no variance to test)")
        elif result.p < ALPHA:
            verdict = f"{reference} higher" if result.mean_difference > 0 else f"{reference} lower"
        else:
            verdict = "no significant difference"
        rows.append({
            "reference": reference, "quantizer": quantizer, "codebook_size_requested": int(size),
            "paired_on": paired_on, "n": result.n,
            "reference_mean": float(pairs["ref"].mean()) if result.n else math.nan,
            "other_mean": float(pairs["other"].mean()) if result.n else math.nan,
            "mean_difference": result.mean_difference, "ci_low": result.ci_low, "ci_high": result.ci_high,
            "test": result.test, "statistic": result.statistic, "p": result.p, "verdict": verdict,
        })
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


# ---------------------------------------------------------------- the mechanism
@dataclass
class Association:
    """Spearman association between two per-trial quantities."""

    n: int
    rho: float
    p: float
    verdict: str


def coverage_predicts_utilization(frame: pd.DataFrame, coverage: str = "gradient_coverage_mean",
                                  utilization: str = "utilization") -> Association:
    """Spearman ρ across trials between gradient coverage (mean over training) and final utilization.

    The paper's mechanism predicts ρ > 0: quantizers whose steps move more of the codebook use more of it.
    Trials without a coverage curve (FSQ/LFQ have no learned codebook) are left out."""
    data = frame.dropna(subset=[coverage, utilization])
    x, y = data[coverage].astype(float).to_numpy(), data[utilization].astype(float).to_numpy()
    n = len(data)
    if n < 3:
        return Association(n, math.nan, math.nan, f"insufficient data: {n} trials with gradient coverage")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return Association(n, math.nan, math.nan, "no test: coverage or utilization is constant across trials")
    rho, p = spearman(x, y)
    if p >= ALPHA:
        verdict = "no significant association"
    elif rho > 0:
        verdict = "higher gradient coverage goes with higher utilization (supports the mechanism)"
    else:
        verdict = "higher gradient coverage goes with lower utilization (contradicts the mechanism)"
    return Association(n, rho, p, verdict)
