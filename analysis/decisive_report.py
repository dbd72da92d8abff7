"""The decisive experiment's report: the design it was registered with, the learning-rate pick, the
pre-registered contrasts with adjusted intervals and one verdict each, each part's share, censoring, the
converged end points and the budget-matched curves. Reads only MLflow (:mod:`analysis.decisive_runs`)."""
from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from .decisive import confirmatory, family_size, next_seed_count, pick_learning_rates, shares, verdict
from .decisive_runs import confirmatory_frame, load_design, trial_frame, utilization_curves
from .tables import markdown_table as frame_table

REPORT = "report.md"


def markdown_table(headers: list[str], rows: list[list]) -> str:
    return frame_table(pd.DataFrame(rows, columns=headers))


def _fmt(value: float, digits: int = 3, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def learning_rate_table(frame: pd.DataFrame, design: dict, picks: dict[str, float]) -> str:
    rule = design["learning_rate"]
    rows = []
    chosen = frame[frame.validation]
    for arm in design["arms"]:
        for _, row in chosen[chosen.quantizer == arm].sort_values(["optimizer", "lr"]).iterrows():
            paper = row.optimizer == rule.get("paper_optimizer")
            rows.append([arm, f"{row.lr:g}" + (" (paper's Adam β=(0.5, 0.9))" if paper else ""),
                         _fmt(row.mse, 5), _fmt(row.utilization), "censored" if row.censored else "levelled off",
                         "**picked**" if not paper and row.lr == picks.get(arm) else ""])
    return markdown_table(["arm", "learning rate", "validation MSE", "validation utilization", "end point",
                           ""], rows)


def edge_pick_note(design: dict, picks: dict[str, float]) -> str:
    """A sentence naming the arms whose pick is the grid's smallest or largest rate (their best rate may lie
    outside the grid, so the contrasts compare the grid's best, not necessarily each arm's best)."""
    grid = sorted(design["learning_rate"]["grid"])
    at_edge = [f"{arm} ({picks[arm]:g})" for arm in design["arms"] if arm in picks and picks[arm] in (grid[0], grid[-1])]
    if not at_edge:
        return "Every pick lies inside the grid."
    return (f"Picked at the edge of the grid ({grid[0]:g} … {grid[-1]:g}): {', '.join(at_edge)}. Those arms' best "
            "rate may lie outside the grid, so their contrasts compare the grid's best rate, not necessarily the "
            "arm's best; the grid is part of the registered design and was not widened after the data.")


def endpoint_table(frame: pd.DataFrame, design: dict) -> str:
    rows = []
    for size in design["codebook_sizes"]:
        for arm in design["arms"]:
            cell = frame[(frame.quantizer == arm) & (frame.codebook_size == size)]
            if cell.empty:
                continue
            rows.append([f"{size:,}", arm, len(cell), f"{cell.utilization.mean():.3f} ± {cell.utilization.std():.3f}",
                         f"{cell.codes_used.mean():,.0f}", f"{cell.stopped_samples.median():,.0f}",
                         int(cell.censored.sum()), int(cell.converged.sum())])
    return markdown_table(["K", "arm", "seeds", "test utilization (mean ± sd)", "codes used",
                           "median samples at end", "censored", "converged (slope rule)"], rows)


def contrast_table(contrasts, design: dict) -> str:
    target = design["seeds"]["target_half_width"]
    rows = [[f"{c.codebook_size:,}", c.name, f"{c.plus} − {c.minus}", c.n, _fmt(c.mean, signed=True),
             f"[{_fmt(c.ci_low, signed=True)}, {_fmt(c.ci_high, signed=True)}]",
             _fmt(c.half_width) + (" ✓" if c.half_width <= target else " (wider than target)"),
             f"{c.p_holm:.2g}" if math.isfinite(c.p_holm) else "—",
             f"{c.censored_plus} / {c.censored_minus}"] for c in contrasts]
    return markdown_table(["K", "contrast", "difference", "seeds", "estimate", "adjusted CI", "half-width",
                           "Holm p", "censored (plus / minus)"], rows)


def share_table(rows) -> str:
    return markdown_table(["K", "part", "share of the total", "95% bootstrap CI", "seeds"],
                          [[f"{r.codebook_size:,}", r.part, _fmt(r.share, 2),
                            f"[{_fmt(r.ci_low, 2)}, {_fmt(r.ci_high, 2)}]", r.n] for r in rows])


def curves_figure(curves: pd.DataFrame, design: dict, path: Path) -> Path:
    """Budget-matched curves: median test utilization over seeds against samples seen, one panel per K."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = design["codebook_sizes"]
    figure, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4), squeeze=False)
    for axis, size in zip(axes[0], sizes):
        for arm in design["arms"]:
            cell = curves[(curves.quantizer == arm) & (curves.codebook_size == size)]
            if cell.empty:
                continue
            median = cell.groupby("samples").utilization.median()
            count = cell.groupby("samples").utilization.size()
            line, = axis.plot(median.index, median.values, marker="o", label=arm)
            axis.fill_between(median.index, cell.groupby("samples").utilization.min(),
                              cell.groupby("samples").utilization.max(), alpha=0.12, color=line.get_color())
            dropped = count[count < count.max()]
            if len(dropped):
                axis.plot(dropped.index, median.loc[dropped.index], "x", color=line.get_color())
        axis.set_xscale("log", base=2)
        axis.set_xlabel("samples seen (images); trials stop where they level off")
        axis.set_ylabel("test utilization (median, range over seeds)")
        axis.set_title(f"K = {size:,}")
        axis.set_ylim(0, 1)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def seed_status(contrasts, design: dict, seeds: pd.Series) -> str:
    """The seeds per arm and size, and whether the half-width target is met, the cap reached, or how many
    seeds the loop asks for next (``seeds``: distinct seeds per (arm, size))."""
    fewest, most = (int(seeds.min()), int(seeds.max())) if len(seeds) else (0, 0)
    target, cap = design["seeds"]["target_half_width"], design["seeds"]["max_seeds"]
    text = f"Seeds per arm and size: {fewest}–{most}; "
    if all(c.half_width <= target for c in contrasts):
        return text + f"every adjusted half-width is within the target {target}."
    text += f"the target half-width {target} was **not** reached for every contrast "
    if fewest >= cap:
        return text + f"(the cap of {cap} seeds was reached)."
    return text + (f"yet: the seed loop asks for {next_seed_count(contrasts, design, fewest)} seeds; rerun the "
                   "same command with the same --name to add them (the experiment resumes).")


def write_report(client, experiment: str, name: str, out_dir: str | Path) -> Path:
    """Write ``report.md``, ``trials.csv`` and the curves figure for decisive experiment ``name``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    design, digest, registered_ms = load_design(client, experiment, name)
    frame = trial_frame(client, experiment, name)
    picks = pick_learning_rates(frame, design)
    trials = confirmatory_frame(frame)
    contrasts = confirmatory(trials, design)
    parts = shares(trials, design)
    curves = utilization_curves(client, trials)
    curves_figure(curves, design, out / "fig_decide_curves.png")
    frame.to_csv(out / "trials.csv", index=False)
    registered = datetime.fromtimestamp(registered_ms / 1000, tz=timezone.utc).isoformat(timespec="seconds")
    unconverged = {(c.name, c.codebook_size): int(trials[(trials.codebook_size == c.codebook_size)
                                                         & trials.quantizer.isin([c.plus, c.minus])].converged.eq(0).sum())
                   for c in contrasts}
    seeds = trials.groupby(["quantizer", "codebook_size"]).seed.nunique()
    lines = [
        f"# The decisive experiment: {name}",
        "",
        f"**Question (pre-registered):** {design['question']}",
        "",
        f"Design `sweeps/designs/decide.toml`, digest `{digest}`, logged to MLflow at {registered} before the "
        f"first trial. Family: {len(design['contrasts'])} contrasts × {len(design['codebook_sizes'])} sizes = "
        f"{family_size(design)} tests; Holm p-values and Bonferroni-adjusted paired t-intervals "
        f"(level 1 − {design['alpha']}/{family_size(design)}), pairing by seed. Endpoint: test-set utilization "
        "at each trial's end point (stopped where its utilization levelled off under the slope rule, or at the "
        "cap: censored).",
        "",
        seed_status(contrasts, design, seeds),
        "",
        "## Verdicts",
        "",
        *[f"- K = {c.codebook_size:,}: {verdict(c, design, unconverged[(c.name, c.codebook_size)])}"
          for c in contrasts],
        "",
        "## Pre-registered contrasts",
        "",
        contrast_table(contrasts, design),
        "",
        "A trial counts as *censored* when it reached the cap without levelling off; its value at the cap is "
        "used (never counted as converged). \"At this budget\" marks a verdict resting on any trial the "
        "slope rule did not call converged.",
        "",
        "## Each part's share of the total (simvq − vq-simvq-init)",
        "",
        share_table(parts),
        "",
        "learning W + per-code updates = the total exactly, seed by seed; *dense gradients alone* is the share "
        "of SimVQ's advantage a per-code soft pull reaches without the shared W.",
        "",
        "## End points",
        "",
        endpoint_table(trials, design),
        "",
        "![budget-matched curves](fig_decide_curves.png)",
        "",
        "## The learning-rate pick (validation split of the training set, by reconstruction MSE)",
        "",
        learning_rate_table(frame, design, picks),
        "",
        edge_pick_note(design, picks),
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
