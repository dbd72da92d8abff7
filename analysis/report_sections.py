"""The report's statistical sections, one function per analysis, each returning Markdown lines: the
family its Holm adjustment runs over, the table with every number behind a verdict, and a plain sentence."""
from __future__ import annotations

import pandas as pd

from .comparisons import attribution
from .mechanism import best_probe
from .tables import markdown_table

_DIFFERENCE_NAMES = {"codebook_size_requested": "K", "latent_dim": "latent dim", "a_mean": "a mean",
                     "b_mean": "b mean", "ci_low": "CI low", "ci_high": "CI high", "ci_adj_low": "adj. CI low",
                     "ci_adj_high": "adj. CI high", "p_holm": "p (Holm)"}


def trend_section(trends: pd.DataFrame) -> list[str]:
    lines = ["## Does utilization collapse as the codebook grows?", "",
             f"Holm family: the {int(trends['p'].notna().sum())} Spearman tests below (one per quantizer). "
             "drop = mean utilization at the smallest K − at the largest K, paired by seed, with its t-interval "
             "(drop n = seeds with both sizes). codes = the mean count of used codes (utilization × K) at the "
             "smallest and the largest K; codes slope = the log-log slope of that count against K over every run "
             "(descriptive, no test: 1 = the count keeps pace with K, 0 = the same number of codes whatever K), "
             "since a fraction can fall while the count still grows.", ""]
    if trends.empty:
        return lines + ["No quantizer has utilization at two or more codebook sizes.", ""]
    shown = trends.rename(columns={"n": "points", "n_sizes": "sizes", "mean_at_smallest": "at smallest K",
                                   "mean_at_largest": "at largest K", "codes_at_smallest": "codes at smallest K",
                                   "codes_at_largest": "codes at largest K", "codes_slope": "codes slope",
                                   "drop_ci_low": "drop CI low",
                                   "drop_ci_high": "drop CI high", "drop_n": "drop n", "min_effect": "min effect",
                                   "rho": "ρ", "p_holm": "p (Holm)"})
    return lines + [markdown_table(shown), ""]


def comparison_section(comparisons: pd.DataFrame, reference_present: bool, reference: str = "simvq") -> list[str]:
    lines = [f"## {reference} vs each other quantizer (paired by seed)", ""]
    if not reference_present:
        return lines + [f"No finished {reference} runs in this selection: no comparison.", ""]
    if comparisons.empty:
        return lines + [f"No other quantizer shares a codebook size with {reference}.", ""]
    lines += [f"Holm family \"comparison\": the {int(comparisons['p'].notna().sum())} paired t-tests of this table "
              "(simvq − vq is tested here and only here; the controls have their own family below). CI: per test; "
              "adj. CI: Bonferroni-adjusted at α/m for this family. difference = a − b over pairs of trials with the same K, latent dim "
              "and seed; where two quantizers share no latent dim (FSQ, LFQ fix their own), each is averaged "
              "over its latent dims per seed. \"unconverged\" counts the trials in the pairs flagged not converged.",
              ""]
    shown = comparisons.drop(columns=["a", "b"]).rename(columns=_DIFFERENCE_NAMES)
    return lines + [markdown_table(shown), ""]


def control_section(controls: pd.DataFrame, frame: pd.DataFrame | None = None, metric: str | None = None) -> list[str]:
    lines = ["## Why SimVQ differs: the controls", ""]
    if controls.empty:
        return lines + ["No control quantizer (vq-simvq-init, simvq-frozen-w, simvq-train-c, simvq-no-bias) ran "
                        "beside simvq and vq: the report cannot say whether init scale or the learned linear layer "
                        "explains SimVQ's advantage.", ""]
    tested = int(controls.loc[controls["family"] == "controls", "p"].notna().sum()) if "family" in controls else 0
    lines += [f"Holm family \"controls\": the {tested} paired t-tests of this table other than total. total = simvq − "
              "vq is *not* tested again here: its row repeats the comparison family's test (Holm p and adjusted "
              "interval from there). init scale = vq-simvq-init − vq (VQ started at SimVQ's code scale); "
              "reparameterization at equal scale = simvq − vq-simvq-init; learning W = simvq − simvq-frozen-w; "
              "training C too = simvq-train-c − simvq; bias of W = simvq-no-bias − simvq. A part's **share** of "
              "the advantage is mean(part) / mean(total) over the same seeds with Fieller's 95% interval; a part "
              "\"explains\" the advantage when that interval lies above 0.5 (most of it), \"contributes\" when "
              "it lies above 0; its own significance is not enough.", ""]
    lines += [f"- {sentence}" for sentence in attribution(controls, frame, metric)] + [""]
    shown = controls.rename(columns=_DIFFERENCE_NAMES)
    return lines + [markdown_table(shown), ""]


def movement_section(movement: pd.DataFrame, metric: str) -> list[str]:
    lines = ["## Utilization over samples seen (the budget axis)", ""]
    if movement.empty:
        return lines + ["No evaluation checkpoints were logged.", ""]
    lines += [f"{metric} at the first and the final evaluation checkpoint (mean over runs); slope: each run's "
              "slope of the convergence rule (relative change of utilization per doubling of samples), mean with "
              "its t-interval over runs; movement: \"converged\" when every run is converged by the slope rule, "
              "\"still rising/falling\" when every run is, \"unclear\" otherwise (with the runs' statuses). The "
              "phase diagram (figure 7) shows every checkpoint.", ""]
    counts = movement["movement"].value_counts()
    lines.append("- " + ", ".join(f"{n} (quantizer, K) {word}" for word, n in counts.items()) + ".")
    shown = movement.rename(columns={"codebook_size_requested": "K", "first_samples": "first samples",
                                     "first_value": "first", "final_samples": "final samples",
                                     "final_value": "final", "slope_ci_low": "CI low", "slope_ci_high": "CI high"})
    return lines + ["", markdown_table(shown), ""]


def mechanism_section(associations: pd.DataFrame) -> list[str]:
    lines = ["## Does a collapse probe predict utilization? (the paper's mechanism)", "",
             "Rank association between each probe's mean over the last quarter of training and final "
             "utilization **within cells** (per quantizer within its K cells; pooled within (quantizer, K) "
             "cells: ranks centred in each cell, p by permuting within cells, `min p` the smallest p the "
             "design can reach). The row \"between methods\" is the plain Spearman ρ across all trials: it "
             "mixes differences between methods with a mechanism and carries no verdict. Only probes not computed "
             "from utilization count: unused-code distance and distribution gap (theory: ρ < 0) and dead-code "
             "revival (theory: ρ > 0); `codes_with_gradient` is excluded. ρ's CI: Fisher z with the "
             "Bonett–Wright standard error (n ≥ 4).", ""]
    if associations.empty:
        return lines + ["No trial logged a probe with final utilization: no mechanism verdict.", ""]
    lines += [f"Holm family \"mechanism\": the {int(associations['p_holm'].notna().sum())} within-cell tests "
              "below (between-methods rows outside it).", "",
              f"- {best_probe(associations)}", ""]
    shown = associations.rename(columns={"rho": "ρ", "rho_ci_low": "ρ CI low", "rho_ci_high": "ρ CI high",
                                         "p_holm": "p (Holm)", "expected_sign": "theory sign"})
    return lines + [markdown_table(shown), ""]
