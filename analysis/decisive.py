"""The decisive experiment's statistics (issue 20): the learning-rate pick, the pre-registered contrasts
with Holm p-values and Bonferroni-adjusted paired t-intervals, each part's share of the total, and how
many seeds the target half-width needs.

Everything here is a pure function of a trial frame (one row per finished trial, from
:mod:`analysis.decisive_runs`) and the design (``sweeps/designs/decide.toml``, as logged to MLflow), so
the seed loop that decides whether to run more trials and the report compute the same numbers.

Why Bonferroni intervals beside Holm p-values: Holm is uniformly more powerful for the tests, but has no
simple matching interval; an interval at level 1 - alpha/m covers all m contrasts at once, and a
contrast whose Holm p < alpha may still have a Bonferroni interval touching 0 (the report then says the
test and its interval disagree, never silently). Both use the same family of m tests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .statistics import holm

#: Bootstrap resamples of seeds for the shares' intervals, and their fixed seed (the report is reproducible).
BOOTSTRAP_RESAMPLES = 4000
BOOTSTRAP_SEED = 0


# ----------------------------------------------------------------------------- the learning-rate pick
def pick_learning_rates(frame: pd.DataFrame, design: dict) -> dict[str, float]:
    """Each arm's learning rate: the lowest validation ``select_by`` (reconstruction MSE) among the grid's
    rates with the design's selectable optimizer. Raises ValueError naming an arm with no finished trial."""
    rule = design["learning_rate"]
    column = rule["select_by"].split("/", 1)[-1]
    picks = {}
    for arm in design["arms"]:
        rows = frame[(frame.quantizer == arm) & (frame.optimizer != rule.get("paper_optimizer", ""))
                     & frame.lr.isin(rule["grid"]) & frame[column].notna()]
        if rows.empty:
            raise ValueError(f"no finished learning-rate trial for arm {arm!r}: cannot pick its rate")
        picks[arm] = float(rows.sort_values([column, "lr"]).iloc[0].lr)
    return picks


# ----------------------------------------------------------------------------- the confirmatory family
@dataclass
class Contrast:
    name: str
    plus: str
    minus: str
    codebook_size: int
    n: int                  # paired seeds
    mean: float             # mean paired difference of utilization (plus - minus)
    sd: float
    p: float                # two-sided paired t-test
    p_holm: float
    ci_low: float           # Bonferroni-adjusted (alpha / m) paired t-interval
    ci_high: float
    censored_plus: int      # trials of each arm that reached the cap without levelling off
    censored_minus: int

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2 if math.isfinite(self.ci_low) else math.inf


def paired_differences(frame: pd.DataFrame, plus: str, minus: str, codebook_size: int,
                       column: str = "utilization") -> pd.Series:
    """``plus - minus`` by seed at one size, over the seeds both arms finished."""
    at_size = frame[frame.codebook_size == codebook_size]
    a = at_size[at_size.quantizer == plus].set_index("seed")[column]
    b = at_size[at_size.quantizer == minus].set_index("seed")[column]
    both = a.index.intersection(b.index)
    return (a.loc[both] - b.loc[both]).sort_index()


def t_half_width(sd: float, n: int, level: float) -> float:
    """Half-width of a two-sided t-interval at ``level`` for the mean of n values with standard deviation sd."""
    if n < 2 or not math.isfinite(sd):
        return math.inf
    return float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n))


def family_size(design: dict) -> int:
    return len(design["contrasts"]) * len(design["codebook_sizes"])


def confirmatory(frame: pd.DataFrame, design: dict) -> list[Contrast]:
    """Every pre-registered contrast at every size: paired t-test, Holm over the family, Bonferroni CI."""
    m = family_size(design)
    level = 1 - design["alpha"] / m
    rows = []
    for size in design["codebook_sizes"]:
        for contrast in design["contrasts"]:
            d = paired_differences(frame, contrast["plus"], contrast["minus"], size)
            n = len(d)
            mean = float(d.mean()) if n else math.nan
            sd = float(d.std(ddof=1)) if n > 1 else math.nan
            p = float(stats.ttest_1samp(d, 0.0).pvalue) if n > 1 and sd > 0 else math.nan
            half = t_half_width(sd, n, level)
            censored = frame[(frame.codebook_size == size) & frame.seed.isin(d.index)]
            rows.append(Contrast(contrast["name"], contrast["plus"], contrast["minus"], size, n, mean, sd, p,
                                 math.nan, mean - half, mean + half,
                                 int(censored[censored.quantizer == contrast["plus"]].censored.sum()),
                                 int(censored[censored.quantizer == contrast["minus"]].censored.sum())))
    for row, adjusted in zip(rows, holm([row.p for row in rows])):
        row.p_holm = float(adjusted)
    return rows


def seeds_needed(contrasts: list[Contrast], design: dict) -> int:
    """The smallest n at which every contrast's adjusted half-width would reach the target, from its
    current standard deviation (a contrast without one counts as needing the pilot size)."""
    target = design["seeds"]["target_half_width"]
    level = 1 - design["alpha"] / family_size(design)
    needed = design["seeds"]["pilot"]
    for row in contrasts:
        if not math.isfinite(row.sd):
            continue
        n = 2
        while t_half_width(row.sd, n, level) > target and n < 10_000:
            n += 1
        needed = max(needed, n)
    return needed


def next_seed_count(contrasts: list[Contrast], design: dict, current: int) -> int | None:
    """How many seeds the next round should reach, or None when the design says stop: every half-width
    is at most the target, or the cap is reached."""
    rule = design["seeds"]
    if all(row.half_width <= rule["target_half_width"] for row in contrasts):
        return None
    if current >= rule["max_seeds"]:
        return None
    return min(rule["max_seeds"], max(current + rule["add_at_least"], seeds_needed(contrasts, design)))


# ----------------------------------------------------------------------------- shares of the total
@dataclass
class Share:
    part: str
    codebook_size: int
    share: float            # mean(part) / mean(total), paired by seed
    ci_low: float           # percentile bootstrap over seeds
    ci_high: float
    n: int


def shares(frame: pd.DataFrame, design: dict) -> list[Share]:
    """Each part's share of the total effect (``design["shares"]``), with a seed-bootstrap interval. The
    ratio of mean differences, not a mean of ratios: seeds with a near-zero total do not blow it up."""
    by_name = {c["name"]: c for c in design["contrasts"]}
    total = by_name[design["shares"]["total"]]
    generator = np.random.default_rng(BOOTSTRAP_SEED)
    rows = []
    for size in design["codebook_sizes"]:
        t = paired_differences(frame, total["plus"], total["minus"], size)
        for name in design["shares"]["parts"]:
            part = by_name[name]
            p = paired_differences(frame, part["plus"], part["minus"], size)
            seeds = t.index.intersection(p.index)
            n = len(seeds)
            if n < 2 or abs(t.loc[seeds].mean()) < 1e-12:
                rows.append(Share(name, size, math.nan, math.nan, math.nan, n))
                continue
            tv, pv = t.loc[seeds].to_numpy(), p.loc[seeds].to_numpy()
            draws = generator.integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))
            denominators = tv[draws].mean(1)
            ratios = np.where(np.abs(denominators) > 1e-12, pv[draws].mean(1) / np.where(
                np.abs(denominators) > 1e-12, denominators, 1.0), np.nan)
            low, high = np.nanpercentile(ratios, [2.5, 97.5])
            rows.append(Share(name, size, float(pv.mean() / tv.mean()), float(low), float(high), n))
    return rows


# ----------------------------------------------------------------------------- one sentence per contrast
def verdict(row: Contrast, design: dict, unconverged: int) -> str:
    """The contrast's verdict in one sentence; "at this budget" where any trial it rests on is censored or
    did not level off."""
    alpha = design["alpha"]
    budget = " (at this budget: %d trial(s) censored or not levelled off)" % unconverged if unconverged else ""
    if row.n < 2 or not math.isfinite(row.p_holm):
        return f"not testable with n = {row.n}{budget}."
    effect = f"{row.plus} − {row.minus} = {row.mean:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"
    if row.p_holm < alpha:
        more, fewer = (row.plus, row.minus) if row.mean > 0 else (row.minus, row.plus)
        agree = "" if row.ci_low > 0 or row.ci_high < 0 else "; its adjusted interval still touches 0"
        return (f"{row.name}: {more} uses more of its codebook than {fewer}, {effect}, Holm p = "
                f"{row.p_holm:.2g}{agree}{budget}.")
    bound = max(abs(row.ci_low), abs(row.ci_high))
    return (f"{row.name}: no difference detected, {effect}, Holm p = {row.p_holm:.2g}; differences larger "
            f"than {bound:.2f} in either direction are excluded{budget}.")
