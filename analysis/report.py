"""The Markdown report: what was analysed and how it was pooled, the rules every verdict follows (α, Holm
families, minimum effect, convergence, token cap, rFID sample size), then each analysis with the numbers
behind its verdict (:mod:`analysis.report_sections`), the figures and the results table."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from benchmark.evaluation.fid import MIN_UNBIASED_IMAGES

from . import report_probes as probe_sections
from . import report_sections as sections
from .checkpoints import RULE as CONVERGENCE_RULE
from .figures import FigureResult
from .pooling import BUDGET_FIELDS, Pooling
from .statistics import ALPHA, EXACT_SPEARMAN_MAX_N
from .tables import TOKENS_PER_CODE, ceiling_table, markdown_table, results_markdown
from .trends import MIN_DROP_ABSOLUTE, MIN_DROP_FRACTION


@dataclass
class Findings:
    """Every statistic the report shows (tables from analysis.trends/comparisons/mechanism/checkpoints)."""

    metric: str                 # the utilization column verdicts use
    trends: pd.DataFrame
    comparisons: pd.DataFrame
    controls: pd.DataFrame
    associations: pd.DataFrame
    movement: pd.DataFrame
    pooling: Pooling
    lagged: pd.DataFrame = field(default_factory=pd.DataFrame)
    revival: pd.DataFrame = field(default_factory=pd.DataFrame)
    distances: pd.DataFrame = field(default_factory=pd.DataFrame)
    frame: pd.DataFrame | None = None     # the runs, for the shares of SimVQ's advantage


def _status_counts(all_runs: pd.DataFrame, used: pd.Series, analysed: int) -> list[str]:
    counts = all_runs["status"].value_counts()
    lines = [f"- {len(all_runs)} trial runs in the selection; **{analysed} FINISHED runs used** in the "
             "figures and statistics."]
    others = {status: int(n) for status, n in counts.items() if status != "FINISHED"}
    if others:
        lines.append("- Not used: " + ", ".join(f"{n} {status}" for status, n in sorted(others.items())) + ".")
    incomplete = int(((all_runs["status"] == "FINISHED") & ~used).sum())
    if incomplete:
        lines.append(f"- Skipped: {incomplete} FINISHED runs without a quantizer, codebook size or seed.")
    return lines


def _setup_lines(frame: pd.DataFrame, pooling: Pooling) -> list[str]:
    budget = [f"{c} {', '.join(sorted(str(v) for v in frame[c].dropna().unique()))}"
              for c in BUDGET_FIELDS if c in frame and frame[c].notna().any() and "digest" not in c]
    text = [f"- {pooling.sentence()}",
            f"- One budget for every run (checked: {', '.join(BUDGET_FIELDS)}): {'; '.join(budget) or 'not recorded'}."]
    seeds = frame.groupby(["quantizer", "codebook_size_requested", "latent_dim"])["seed"].nunique()
    if len(seeds):
        text.append(f"- Quantizers: {', '.join(sorted(frame['quantizer'].unique()))}; codebook sizes requested: "
                    f"{', '.join(str(int(k)) for k in sorted(frame['codebook_size_requested'].unique()))}; "
                    f"latent dims: {', '.join(str(int(d)) for d in sorted(frame['latent_dim'].dropna().unique()))}; "
                    f"seeds per (quantizer, K, latent dim): {int(seeds.min())}–{int(seeds.max())}.")
    return text


def _rules(findings: Findings) -> list[str]:
    def tests(table, column="p_holm"):
        return int(table[column].notna().sum()) if column in table else 0

    controls = findings.controls
    families = [("trend", tests(findings.trends, "p"), "the Spearman tests of the size-trend table, one per quantizer"),
                ("comparison", tests(findings.comparisons), "the paired t-tests of the simvq-vs-others table; "
                 "simvq − vq is tested here only"),
                ("controls", tests(controls[controls["family"] == "controls"]) if "family" in controls else 0,
                 "the paired t-tests of the control table except total, which repeats the comparison family's test"),
                ("geometry", tests(findings.distances), "vq − simvq of the unused-code distances"),
                ("mechanism", tests(findings.associations), "the within-cell probe–utilization associations "
                 "(between-methods rows are descriptive, outside the family)"),
                ("lagged", tests(findings.lagged), "probe at t → later utilization change; early gap → final")]
    listed = "; ".join(f"**{name}** ({count} tests: {what})" for name, count, what in families)
    metric = ("utilization / uniform ceiling (`utilization_relative`), so a fall the token count forces on "
              "a perfect quantizer is not counted as collapse" if findings.metric == "utilization_relative"
              else "raw `utilization` (no ceiling was logged; sizes with tokens < 10·K are flagged)")
    return ["## How to read the verdicts", "",
            f"- α = {ALPHA}. Every p-value comes with an effect size and its 95% CI. Verdicts use **Holm-adjusted** "
            f"p-values (Holm 1979), adjusted within each family, one family per question, declared in code "
            f"(`analysis.comparisons.FAMILIES`) before any data is read: {listed}. Beside each Holm verdict: the "
            "per-test 95% t-interval and a **Bonferroni-adjusted** interval (confidence 1 − α/m, m the family's "
            "size; simultaneous coverage ≥ 95%). The adjusted interval excludes 0 only where Holm also rejects; "
            "Holm, the more powerful step-down test, can reject where it still touches 0.",
            "- Differences are **paired by seed only** (same K, latent dim and seed); n is the number of seeds. "
            "Their CI is the Student-t interval of the same mean and standard error the paired t-test uses, so "
            "it excludes 0 exactly when the unadjusted p < 0.05, at any n. n < 2: \"insufficient seeds\", no p.",
            f"- Utilization in every verdict: {metric}.",
            f"- Size trend: Spearman ρ with log2 K (exact p up to {EXACT_SPEARMAN_MAX_N} points, asymptotic above), "
            "each point one (seed, K) averaged over latent dims. **Minimum effect**: the drop from the smallest "
            f"to the largest K must reach min({MIN_DROP_ABSOLUTE}, {MIN_DROP_FRACTION} × the utilization at the "
            "smallest K) to be called \"collapses with size\" (and Holm p < α); \"no meaningful trend\" when the "
            "drop's CI lies inside ± that minimum; \"add seeds\" otherwise, with the smallest p the design can "
            "reach given its ties (e.g. 4 sizes × 1 seed: 2/4! = 0.083).",
            f"- **Convergence** (the slope rule): {CONVERGENCE_RULE}. Runs logged before the rule are re-judged "
            "from their checkpoint history. Every verdict that rests on a trial not converged (trend, pairwise, "
            "controls, probes, \"no meaningful trend\" too) ends **\"at this budget\"**; where a trial at the "
            "largest K has not converged, a fall with size reads \"not converged at this budget\", not "
            "\"collapses\"; figures draw unconverged points hollow (×: in the phase diagram).",
            f"- **Token cap**: where the test tokens N < {TOKENS_PER_CODE}·K, utilization is capped by N "
            "(a uniform quantizer reads 1 − (1 − 1/K)^N); such sizes are marked \"capped\".",
            "- `probe/codes_with_gradient` is never evidence: by construction it is VQ's batch utilization and "
            "SimVQ's constant 1.0.", ""]


def _rfid_lines(frame: pd.DataFrame) -> list[str]:
    if "rfid" not in frame or frame["rfid"].isna().all():
        counts = ", ".join(sorted(str(int(n)) for n in frame["fid_samples"].dropna().unique())) or "not recorded"
        return [f"- rFID/rKID were **not computed** (fid_samples = {counts}): this report makes no rFID claim."]
    column = "rfid_samples" if "rfid_samples" in frame and frame["rfid_samples"].notna().any() else "fid_samples"
    images = int(frame[column].dropna().min()) if frame[column].notna().any() else 0
    if images < MIN_UNBIASED_IMAGES:
        return [f"- rFID/rKID on **{images or 'an unrecorded number of'} images** (< {MIN_UNBIASED_IMAGES}, "
                "`benchmark.evaluation.fid.MIN_UNBIASED_IMAGES`): biased upward and dominated by small-sample error, so at "
                "this count rFID **carries no signal** between methods; no verdict uses it."]
    return [f"- rFID/rKID on {images} images (≥ {MIN_UNBIASED_IMAGES}); compare only at equal image counts."]


def _window_lines(frame: pd.DataFrame) -> list[str]:
    """The revival probe is defined from step 2·dead_code_window: a window above steps/8 leaves the last
    quarter of training (what the probe summaries average) with few or no revival values."""
    if not {"dead_code_window", "steps"} <= set(frame) or frame[["dead_code_window", "steps"]].isna().any().any():
        return []
    wide = frame[frame["dead_code_window"].astype(float) > frame["steps"].astype(float) / 8]
    if wide.empty:
        return []
    return [f"- dead_code_window {int(wide['dead_code_window'].iloc[0])} > steps/8 ({int(wide['steps'].iloc[0])}/8) in "
            f"{len(wide)} runs: dead-code revival is defined only from step 2·dead_code_window, so those runs' "
            "revival rests on few or no values."]


def _validity(frame: pd.DataFrame) -> list[str]:
    return ["## Measurement validity", "", *_window_lines(frame),
            f"Utilization and perplexity beside their uniform ceilings (means over runs; \"capped\": tokens < "
            f"{TOKENS_PER_CODE}·K, where the token count, not collapse, limits utilization).", "",
            markdown_table(ceiling_table(frame)), "", *_rfid_lines(frame), ""]


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
                 frame: pd.DataFrame, findings: Findings, figures: list[FigureResult], table: pd.DataFrame) -> str:
    """The whole report as Markdown text; ``frame`` holds the runs analysed (after pooling)."""
    lines = ["# vqbench: representation collapse report", "",
             f"Selection: {description}. Tracking store: `{tracking_uri}`.", ""]
    lines += ["## Runs", "", *_status_counts(all_runs, used, len(frame)), *_setup_lines(frame, findings.pooling), ""]
    lines += _rules(findings)
    lines += _validity(frame)
    lines += sections.trend_section(findings.trends)
    lines += sections.comparison_section(findings.comparisons, bool((frame["quantizer"] == "simvq").any()))
    lines += sections.control_section(findings.controls, findings.frame, findings.metric)
    lines += sections.movement_section(findings.movement, findings.metric)
    lines += sections.mechanism_section(findings.associations)
    lines += probe_sections.revival_section(findings.revival)
    lines += probe_sections.turnover_section(findings.frame)
    lines += probe_sections.distance_section(findings.distances)
    lines += probe_sections.lagged_section(findings.lagged)
    lines += _figure_section(figures)
    lines += ["## Results table", "",
              "Mean ± standard deviation over seeds (– where missing; no ± with one seed). K is the real codebook "
              "size, K requested the size asked for (FSQ rounds to a product of levels).", "",
              results_markdown(table), ""]
    return "\n".join(lines)
