"""Report sections for the probes that could come out against the paper: revival against its null, the
turnover of used codes, where unused codes sit, and lagged prediction."""
from __future__ import annotations

import pandas as pd

from .distances import distance_summary
from .revival_null import revival_summary
from .tables import markdown_table

_NAMES = {"codebook_size_requested": "K", "rho": "ρ", "rho_ci_low": "ρ CI low", "rho_ci_high": "ρ CI high",
          "p_holm": "p (Holm)", "expected_sign": "theory sign", "min_p": "min p", "excess_ci_low": "excess CI low",
          "excess_ci_high": "excess CI high", "ci_adj_low": "adj. CI low", "ci_adj_high": "adj. CI high",
          "ci_low": "CI low", "ci_high": "CI high"}


def revival_section(revival: pd.DataFrame) -> list[str]:
    lines = ["## Dead-code revival against a null", "",
             "A process with no codebook mechanism revives dead codes too: if a fraction g of the used codes "
             "stays used and the vacancies are refilled at random, a dead code returns with probability "
             "u(1 − g)/(1 − g·u) (u: utilization; g from the births and deaths of used codes over the last "
             "checkpoint interval, corrected for re-drawn codes). Where the turnover was not logged, the frozen-W "
             "arm (`simvq-frozen-w`, no codebook gradient) at the same K is the reference. excess = revival − "
             "null, mean over seeds with its t-interval; \"above\"/\"below\" only when that interval lies beyond ± "
             "a quarter of the null rate (at least 0.005); the theory predicts VQ below the null.", "",
             f"- {revival_summary(revival)}", ""]
    return lines + ([markdown_table(revival.rename(columns=_NAMES)), ""] if len(revival) else [])


def turnover_section(frame: pd.DataFrame | None) -> list[str]:
    if frame is None or "codes_born" not in frame or frame["codes_born"].isna().all():
        return ["## Births and deaths of used codes", "",
                "Not logged (`eval/codes_born`, `eval/codes_died`): runs before the turnover keys.", ""]
    table = (frame.dropna(subset=["codes_born"]).groupby(["quantizer", "codebook_size_requested"], sort=True)
             [["codes_born", "codes_died"]].mean().reset_index())
    return ["## Births and deaths of used codes", "",
            "Fractions of K over the last checkpoint interval (mean over seeds): born = used now and unused at "
            "the previous checkpoint, died = the reverse.", "", markdown_table(table.rename(columns=_NAMES)), ""]


def distance_section(distances: pd.DataFrame) -> list[str]:
    lines = ["## Where unused codes sit (VQ − SimVQ)", "",
             "Holm family \"geometry\". The theory says VQ's unselected codes are stranded far from the data "
             "(VQ − SimVQ > 0). `unused_code_distance` counts codes undrawn in one batch (mostly dead codes for "
             "VQ, mostly live but undrawn codes for SimVQ: not the same thing for the two); "
             "`dead_code_distance` counts codes dead for the dead-code window, one definition for every method.", "",
             f"- {distance_summary(distances)}", ""]
    return lines + ([markdown_table(distances.drop(columns=["a", "b", "contrast"]).rename(columns=_NAMES)), ""]
                    if len(distances) else [])


def lagged_section(lagged: pd.DataFrame) -> list[str]:
    lines = ["## Does a probe predict later utilization? (lagged, within cells)", ""]
    if lagged.empty:
        return lines + ["No probe was logged at the evaluation checkpoints: no lagged test.", ""]
    lines += [f"Holm family \"lagged\": the {int(lagged['p'].notna().sum())} within-cell tests below. A probe at "
              "checkpoint t against the change of utilization from t to the next checkpoint, within (quantizer, "
              "K, checkpoint) cells; the distribution gap at the first checkpoint against final utilization, "
              "within (quantizer, K) cells. min p: the smallest p the design can reach.", ""]
    return lines + [markdown_table(lagged.rename(columns=_NAMES)), ""]
