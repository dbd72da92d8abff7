"""Figures over training: curves at the largest K (fig. 5), codebook effective rank (fig. 6), the phase
diagram of utilization over (K × samples seen) (fig. 7) and the probes against final utilization (fig. 8).

``probe/codes_with_gradient`` is drawn nowhere: by construction it is VQ's batch utilization and SimVQ's
constant 1.0, so a picture of it would show a construction, not a finding.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

from benchmark.tracking import keys

from .mechanism import PROBES
from .plotting import (FigureResult, grid, in_panel, latent_facets, place, quantizer_order, shape, share, skip)
from .statistics import summarize

CURVE_LABELS = {
    keys.TRAIN_UTILIZATION: "train utilization (fraction of K)",
    keys.PROBE_UNUSED_CODE_DISTANCE: "unused-code distance (÷ used codes' error)",
    keys.PROBE_DISTRIBUTION_GAP: "codes–latents distribution gap (W2)",
    keys.PROBE_CODEBOOK_RANK: "codebook effective rank (dims)",
}
CURVE_BOUNDS = {keys.TRAIN_UTILIZATION: (0.0, 1.0), keys.PROBE_UNUSED_CODE_DISTANCE: (0.0, None),
                keys.PROBE_DISTRIBUTION_GAP: (0.0, None), keys.PROBE_CODEBOOK_RANK: (0.0, None)}
DYNAMICS_KEYS = [keys.TRAIN_UTILIZATION, keys.PROBE_UNUSED_CODE_DISTANCE, keys.PROBE_DISTRIBUTION_GAP]


def _curve_summary(curves: pd.DataFrame, key: str) -> pd.DataFrame:
    summary = summarize(curves[curves["key"] == key], ["quantizer", "step"], "value")
    summary["x"] = summary["step"].astype(float)
    return summary


def _with_run_info(histories: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    info = frame[["run_id", "quantizer", "codebook_size_requested", "latent_dim", "seed"]]
    return histories.merge(info, on="run_id", how="inner")


def collapse_dynamics(frame, histories, palette) -> FigureResult:
    """Figure 5: train utilization and the distance/gap probes over training at the largest requested K."""
    name = "fig5_collapse_dynamics"
    if frame.empty:
        return skip(name, "Collapse dynamics", "no finished runs")
    largest = int(frame["codebook_size_requested"].max())
    title = f"Collapse dynamics at the largest codebook size (K = {largest})"
    curves = _with_run_info(histories, frame)
    curves = curves[(curves["codebook_size_requested"] == largest) & curves["key"].isin(DYNAMICS_KEYS)]
    present = [k for k in DYNAMICS_KEYS if (curves["key"] == k).any()]
    if not present:
        return skip(name, title, f"no {' or '.join(DYNAMICS_KEYS)} curves at K = {largest}")
    dims, swept = latent_facets(frame[frame["codebook_size_requested"] == largest])
    panels, summaries = [], []
    for r, key in enumerate(present):
        for c, dim in enumerate(dims):
            summary = _curve_summary(in_panel(curves, dim, swept), key)
            if summary.empty:
                continue
            summaries.append(summary.assign(key=key, latent_dim=dim))
            panels.append({**place(r, c, dims), "data": summary, "x_label": "optimizer step",
                           "y_label": CURVE_LABELS[key], "bounds": CURVE_BOUNDS[key],
                           "panel_title": None if dim is None else f"latent dim {dim}"})
    figure = grid(panels, *shape(present, dims), title, palette, log2_x=False, sharey=share(dims))
    return FigureResult(name, title, figure, pd.concat(summaries, ignore_index=True))


def effective_rank(frame, histories, palette) -> FigureResult:
    """Figure 6: effective rank of the (effective) codebook over training, one panel per requested K."""
    name, title, key = "fig6_codebook_effective_rank", "Codebook effective rank over training", keys.PROBE_CODEBOOK_RANK
    curves = _with_run_info(histories, frame)
    curves = curves[curves["key"] == key]
    if curves.empty:
        return skip(name, title, f"no {key} curves")
    dims, swept = latent_facets(frame)
    sizes = sorted(int(k) for k in curves["codebook_size_requested"].unique())
    panels, summaries = [], []
    for r, dim in enumerate(dims):
        for c, size in enumerate(sizes):
            summary = _curve_summary(in_panel(curves[curves["codebook_size_requested"] == size], dim, swept), key)
            if summary.empty:
                continue
            summaries.append(summary.assign(codebook_size_requested=size, latent_dim=dim))
            label = f"K = {size}" + ("" if dim is None else f", latent dim {dim}")
            panels.append({"row": r, "col": c, "data": summary, "x_label": "optimizer step",
                           "y_label": CURVE_LABELS[key], "panel_title": label, "bounds": CURVE_BOUNDS[key]})
    figure = grid(panels, len(dims), len(sizes), title, palette, log2_x=False, sharey=True)
    return FigureResult(name, title, figure, pd.concat(summaries, ignore_index=True))


def _samples_label(value: float) -> str:
    return f"{value / 1e6:.3g}M" if value >= 1e6 else f"{value / 1e3:.3g}k" if value >= 1e3 else f"{value:.0f}"


def phase_diagram(frame, checkpoints: pd.DataFrame, metric: str = "utilization_relative") -> FigureResult:
    """Figure 7: utilization (``metric``, else raw) over (K × samples seen), one heatmap per quantizer:
    K on y (largest on top), samples seen at each evaluation checkpoint on x, the mean over seeds and
    latent dims in each cell; × marks a final checkpoint where a run had not converged."""
    name = "fig7_phase_diagram"
    value = next((m for m in (metric, "utilization") if m in checkpoints and checkpoints[m].notna().any()), None)
    title = "Phase diagram: utilization over codebook size × samples seen"
    if value is None:
        return skip(name, title, "no eval/utilization history at evaluation checkpoints")
    cells = (checkpoints.dropna(subset=[value]).groupby(["quantizer", "codebook_size_requested", "samples_seen"])
             [value].mean().rename("value").reset_index())
    stuck = set()
    if "converged" in frame:
        stuck = set(zip(*[frame.loc[frame["converged"] < 0.5, c] for c in ("quantizer", "codebook_size_requested")]))
    quantizers = quantizer_order(cells["quantizer"].unique())
    n_cols = min(len(quantizers), 4)
    n_rows = math.ceil(len(quantizers) / n_cols)
    sns.set_theme(style="white", context="paper")
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.4 * n_cols + 1.2, 2.6 * n_rows + 0.6), squeeze=False,
                             layout="constrained")
    vmax = max(1.0, float(cells["value"].max()))
    image = None
    for i, quantizer in enumerate(quantizers):
        ax = axes[i // n_cols][i % n_cols]
        table = cells[cells["quantizer"] == quantizer].pivot(index="codebook_size_requested", columns="samples_seen",
                                                             values="value").sort_index(ascending=False)
        sns.heatmap(table, ax=ax, vmin=0.0, vmax=vmax, cmap="viridis", cbar=False, annot=table.size <= 48,
                    fmt=".2f", annot_kws={"size": 6}, linewidths=0.5, linecolor="white")
        image = ax.collections[0]
        ax.set_yticklabels([f"$2^{{{int(round(math.log2(k)))}}}$" for k in table.index], rotation=0)
        ax.set_xticklabels([_samples_label(s) for s in table.columns], rotation=45)
        for row, size in enumerate(table.index):
            if (quantizer, size) in stuck:
                ax.plot(len(table.columns) - 0.15, row + 0.2, marker="x", color="red", markersize=6, label="_stuck")
        ax.set_title(quantizer, fontsize=9)
        ax.set_xlabel("training images seen")
        ax.set_ylabel("codebook size K")
    for j in range(len(quantizers), n_rows * n_cols):
        axes[j // n_cols][j % n_cols].set_visible(False)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8,
                 label="utilization / uniform ceiling" if value == "utilization_relative" else "utilization")
    fig.suptitle(f"{title}\n({value}, mean over seeds; ×: not converged at the final checkpoint)", fontsize=10)
    return FigureResult(name, title, fig, cells.assign(metric=value))


def probes_vs_utilization(frame, palette, utilization: str = "utilization_relative") -> FigureResult:
    """Figure 8: each non-tautological probe (late-training mean) against final utilization, one panel
    per probe, one colour per quantizer, hollow where the run had not converged."""
    name, title = "fig8_probes_vs_utilization", "Collapse probes vs final utilization (one point per trial)"
    columns = [column for column, _ in PROBES.values() if column in frame and frame[column].notna().any()]
    if not columns or utilization not in frame:
        return skip(name, title, "no run logged unused_code_distance, distribution_gap or dead_code_revival")
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, len(columns), figsize=(3.6 * len(columns) + 1.4, 3.2), squeeze=False)
    used, any_hollow = set(), False
    for ax, column in zip(axes[0], columns):
        data = frame.dropna(subset=[column, utilization])
        for quantizer in quantizer_order(data["quantizer"].unique()):
            part = data[data["quantizer"] == quantizer]
            hollow = (part["converged"] < 0.5) if "converged" in part else pd.Series(False, index=part.index)
            color = palette[quantizer]
            ax.scatter(part.loc[~hollow, column], part.loc[~hollow, utilization], color=color, s=16, label=quantizer)
            if hollow.any():
                ax.scatter(part.loc[hollow, column], part.loc[hollow, utilization], facecolors="white",
                           edgecolors=color, s=20, label=f"_unconverged {quantizer}")
                any_hollow = True
            used.add(quantizer)
        ax.set_xlabel(f"{column} (mean over last quarter)")
        ax.set_ylabel("final utilization / ceiling" if utilization == "utilization_relative" else "final utilization")
    handles = [Line2D([], [], color=palette[q], marker="o", linestyle="none", label=q) for q in quantizer_order(used)]
    if any_hollow:
        handles.append(Line2D([], [], color="0.35", marker="o", markerfacecolor="white", linestyle="none",
                              label="hollow: not converged"))
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), title="quantizer", frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    shown = frame[["run_id", "quantizer", "codebook_size_requested", "seed", *columns, utilization]]
    return FigureResult(name, title, fig, shown.reset_index(drop=True))
