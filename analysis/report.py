"""The Markdown report: what was analysed, the statistics with the numbers behind every verdict, the
figures (and why any was skipped) and the results table."""
from __future__ import annotations

import pandas as pd

from .figures import FigureResult
from .statistics import ALPHA, EXACT_SPEARMAN_MAX_N, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, WILCOXON_MIN_PAIRS, Association
from .tables import format_number, markdown_table, results_markdown


def _status_counts(all_runs: pd.DataFrame, used: pd.Series) -> list[str]:
    counts = all_runs["status"].value_counts()
    lines = [f"- {len(all_runs)} trial runs in the selection; **{int(used.sum())} FINISHED runs used** in the "
             "figures and statistics."]
    others = {status: int(n) for status, n in counts.items() if status != "FINISHED"}
    if others:
        lines.append("- Not used: " + ", ".join(f"{n} {status}" for status, n in sorted(others.items())) + ".")
    incomplete = int(((all_runs["status"] == "FINISHED") & ~used).sum())
    if incomplete:
        lines.append(f"- Skipped: {incomplete} FINISHED runs without a quantizer, codebook size or seed.")
    return lines


def _setup_lines(frame: pd.DataFrame) -> list[str]:
    lines = []
    for column, label in [("dataset", "dataset"), ("steps", "steps"), ("batch_size", "batch size")]:
        values = sorted(str(v) for v in frame[column].dropna().unique())
        if values:
            lines.append(f"{label} {', '.join(values)}")
    seeds = frame.groupby(["quantizer", "codebook_size_requested", "latent_dim"])["seed"].nunique()
    text = [f"- Budget and data: {'; '.join(lines)}." if lines else "- Budget and data: not recorded."]
    if len(seeds):
        text.append(f"- Quantizers: {', '.join(sorted(frame['quantizer'].unique()))}; codebook sizes requested: "
                    f"{', '.join(str(int(k)) for k in sorted(frame['codebook_size_requested'].unique()))}; "
                    f"latent dims: {', '.join(str(int(d)) for d in sorted(frame['latent_dim'].dropna().unique()))}; "
                    f"seeds per (quantizer, K, latent dim): {int(seeds.min())}–{int(seeds.max())}.")
    if frame["rfid"].notna().any():
        counts = sorted(str(int(n)) for n in frame["fid_samples"].dropna().unique())
        text.append(f"- rFID/rKID use {', '.join(counts) or 'an unrecorded number of'} test images per trial: "
                    "FID is biased upward at small sample counts, so compare rFID only within this table.")
    return text


def _trend_section(trends: pd.DataFrame) -> list[str]:
    lines = ["## Does utilization collapse as the codebook grows?", "",
             "Spearman ρ between test-set utilization and log2 K over every finished trial of each quantizer "
             f"(all seeds and latent dims). Verdict \"collapses with size\" only when ρ < 0 and p < {ALPHA}. "
             f"p is exact (all pairings enumerated) up to {EXACT_SPEARMAN_MAX_N} trials, asymptotic above.", ""]
    if trends.empty:
        return lines + ["No quantizer has utilization at two or more codebook sizes.", ""]
    shown = trends.rename(columns={"n": "trials", "n_sizes": "sizes", "mean_at_smallest": "mean at smallest K",
                                   "mean_at_largest": "mean at largest K", "rho": "ρ"})
    return lines + [markdown_table(shown), ""]


def _comparison_section(comparisons: pd.DataFrame, reference: str, reference_present: bool) -> list[str]:
    lines = [f"## {reference} vs each other quantizer (utilization, paired over seeds)", ""]
    if not reference_present:
        return lines + [f"No finished {reference} runs in this selection: no comparison.", ""]
    if comparisons.empty:
        return lines + [f"No other quantizer shares a codebook size with {reference}.", ""]
    lines += [
        f"Difference = {reference} − other, per pair of trials with the same seed (and latent dim when both "
        "quantizers ran it; otherwise each is averaged over its latent dims). n is the number of pairs. "
        f"Test: paired t-test for 2 ≤ n < {WILCOXON_MIN_PAIRS} (the exact Wilcoxon signed-rank test cannot "
        f"reach p < {ALPHA} with fewer than {WILCOXON_MIN_PAIRS} pairs, so the t-test, which assumes normally "
        f"distributed differences, is the only usable one); Wilcoxon signed-rank (no normality assumption) for "
        f"n ≥ {WILCOXON_MIN_PAIRS}; none for n < 2 (\"insufficient seeds\"). CI: 95% percentile bootstrap of "
        f"the mean difference ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}).", "",
    ]
    shown = comparisons.drop(columns=["reference"]).rename(columns={
        "codebook_size_requested": "K", "reference_mean": f"{reference} mean", "other_mean": "other mean",
        "mean_difference": "difference", "ci_low": "CI low", "ci_high": "CI high"})
    return lines + [markdown_table(shown), ""]


def _mechanism_section(association: Association) -> list[str]:
    return [
        "## Does gradient coverage predict utilization? (the paper's mechanism)", "",
        "Spearman ρ across trials between gradient coverage (mean over training of the fraction of codes a "
        "step moves) and final test-set utilization; trials without a coverage curve are left out.", "",
        f"- n = {association.n} trials, ρ = {format_number(association.rho)}, p = {format_number(association.p)}: "
        f"**{association.verdict}**.", "",
    ]


def _figure_section(figures: list[FigureResult]) -> list[str]:
    lines = ["## Figures", ""]
    for result in figures:
        if result.figure is None:
            lines.append(f"- {result.title}: skipped — {result.skipped}.")
        else:
            lines.append(f"- {result.title}: [{result.name}.pdf]({result.name}.pdf)")
            lines.append(f"  ![{result.title}]({result.name}.png)")
    return lines + [""]


def build_report(description: str, tracking_uri: str, all_runs: pd.DataFrame, used: pd.Series,
                 trends: pd.DataFrame, comparisons: pd.DataFrame, association: Association,
                 figures: list[FigureResult], table: pd.DataFrame, reference: str = "simvq") -> str:
    """The whole report as Markdown text."""
    frame = all_runs[used]
    lines = ["# vqbench: representation collapse report", "",
             f"Selection: {description}. Tracking store: `{tracking_uri}`.", ""]
    lines += ["## Runs", "", *_status_counts(all_runs, used), *_setup_lines(frame), ""]
    lines += _trend_section(trends)
    lines += _comparison_section(comparisons, reference, bool((frame["quantizer"] == reference).any()))
    lines += _mechanism_section(association)
    lines += _figure_section(figures)
    lines += ["## Results table", "",
              "Mean ± standard deviation over seeds (– where missing; no ± with one seed). K is the real codebook "
              "size, K requested the size asked for (FSQ rounds to a product of levels).", "",
              results_markdown(table), ""]
    return "\n".join(lines)
