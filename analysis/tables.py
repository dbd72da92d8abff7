"""The results table: one row per (quantizer, requested codebook size, latent dim), mean and standard
deviation over seeds of every final metric that has data; the ceiling table (utilization and perplexity
beside what a uniform quantizer would read with the same test tokens); and a plain Markdown renderer."""
from __future__ import annotations

import math

import pandas as pd

# Metrics the table shows, in order, when any run has them (columns of analysis.runs.runs_frame, plus
# the late-training mean of each probe).
TABLE_METRICS = ["utilization", "utilization_ceiling", "utilization_relative", "tokens", "perplexity",
                 "perplexity_relative", "unused_code_distance", "dead_code_distance", "distribution_gap",
                 "distribution_gap_weighted", "dead_code_revival", "codes_born", "codes_died", "mse",
                 "psnr", "ssim", "rfid", "rkid", "wall_time_s", "samples_per_s"]
GROUP = ["quantizer", "codebook_size_requested", "latent_dim"]
#: Below this many test tokens per code, utilization is capped by the token count, not by collapse: a
#: perfectly uniform quantizer reads only 1 - (1 - 1/K)^N (N = 10·K gives 0.99995, N = K gives 0.63).
TOKENS_PER_CODE = 10


def _converged(part: pd.DataFrame) -> str:
    known = part["converged"].dropna() if "converged" in part else pd.Series(dtype=float)
    return f"{int((known >= 0.5).sum())}/{len(known)}" if len(known) else "not recorded"


def results_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Aggregate FINISHED trial rows. Columns: quantizer, codebook_size_requested, codebook_size (the real
    size; FSQ may differ), latent_dim, n_seeds, then <metric>_mean and <metric>_std per metric with data
    (std is NaN with one seed)."""
    metrics = [m for m in TABLE_METRICS if m in frame and frame[m].notna().any()]
    rows = []
    for group, part in frame.groupby(GROUP, sort=True):
        row = dict(zip(GROUP, group))
        real_sizes = sorted(int(s) for s in part["codebook_size"].dropna().unique())
        row["codebook_size"] = real_sizes[0] if len(real_sizes) == 1 else "/".join(map(str, real_sizes))
        row["n_seeds"] = int(part["seed"].nunique())
        row["n_runs"] = len(part)
        row["converged"] = _converged(part)
        for metric in metrics:
            values = part[metric].dropna().astype(float)
            row[f"{metric}_mean"] = float(values.mean()) if len(values) else math.nan
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        rows.append(row)
    columns = ["quantizer", "codebook_size_requested", "codebook_size", "latent_dim", "n_seeds", "n_runs",
               "converged", *[f"{m}_{s}" for m in metrics for s in ("mean", "std")]]
    return pd.DataFrame(rows, columns=columns)


CEILING_COLUMNS = ["quantizer", "K requested", "K", "tokens", "utilization", "ceiling", "relative", "capped",
                   "perplexity", "perplexity ceiling", "perplexity relative", "converged"]


def ceiling_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (quantizer, requested K), means over runs: utilization, its uniform ceiling 1 − (1 − 1/K)^N,
    utilization / ceiling, the test tokens N, "capped" where N < TOKENS_PER_CODE · K, and perplexity
    against its ceiling likewise; converged k/n."""
    def mean(part, column):
        return float(part[column].mean()) if column in part and part[column].notna().any() else math.nan

    rows = []
    for (quantizer, size), part in frame.groupby(["quantizer", "codebook_size_requested"], sort=True):
        real, tokens = float(part["codebook_size"].median()), mean(part, "tokens")
        rows.append([quantizer, int(size), int(real), tokens, mean(part, "utilization"),
                     mean(part, "utilization_ceiling"), mean(part, "utilization_relative"),
                     "capped" if math.isfinite(tokens) and tokens < TOKENS_PER_CODE * real else "",
                     mean(part, "perplexity"), mean(part, "perplexity_ceiling"), mean(part, "perplexity_relative"),
                     _converged(part)])
    return pd.DataFrame(rows, columns=CEILING_COLUMNS)


def format_number(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "–"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(frame: pd.DataFrame, digits: int = 4) -> str:
    """GitHub-flavoured Markdown for a DataFrame (no dependency on tabulate); NaN shows as –."""
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(format_number(v, digits).replace("|", "\\|") for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def results_markdown(table: pd.DataFrame) -> str:
    """The results table for people: each metric as "mean ± std" in one column."""
    metrics = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]
    shown = table[["quantizer", "codebook_size_requested", "codebook_size", "latent_dim", "n_seeds", "n_runs",
                   "converged"]].copy()
    shown.columns = ["quantizer", "K requested", "K", "latent dim", "seeds", "runs", "converged"]
    for metric in metrics:
        shown[metric] = [
            format_number(mean) if math.isnan(std) else f"{format_number(mean)} ± {format_number(std, 2)}"
            for mean, std in zip(table[f"{metric}_mean"], table[f"{metric}_std"])
        ]
    return markdown_table(shown)
