"""The six comparison figures (issue 6), built from the runs DataFrame and the curve histories.

Every builder returns a :class:`FigureResult`: the matplotlib figure and the summary it plots, or the
reason it was skipped (a figure with no data is never drawn). Lines are means over seeds with a shaded
Student-t 95% interval; each quantizer keeps one colour in every figure; codebook sizes are on a log2 axis.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from benchmark import keys  # noqa: E402

from .statistics import summarize  # noqa: E402

# One fixed colour per registered quantizer (seaborn's colour-blind palette), in the order legends use.
QUANTIZER_COLORS: dict[str, str] = dict(zip(["vq", "ema", "fsq", "lfq", "simvq"],
                                            sns.color_palette("colorblind", 10).as_hex()[:5]))
_SPARE_COLORS = sns.color_palette("colorblind", 10).as_hex()[5:] + sns.color_palette("dark", 10).as_hex()

LABELS = {
    "codebook_size": "codebook size K (codes, log2 scale)",
    "latent_dim": "latent dim (channels per code, log2 scale)",
    "step": "optimizer step",
    "utilization": "test-set utilization (fraction of K used)",
    "rfid": "rFID (lower is better)",
    "rkid": "rKID (lower is better)",
    "psnr": "PSNR (dB)",
    "ssim": "SSIM (0–1)",
    keys.TRAIN_UTILIZATION: "train utilization (fraction of K)",
    keys.PROBE_GRADIENT_COVERAGE: "gradient coverage (fraction of K)",
    keys.PROBE_CODEBOOK_RANK: "codebook effective rank (dims)",
}
CI_NOTE = "lines: mean over seeds; bands: 95% t-interval"
# Where a quantity can live: the t-interval over 2-3 seeds is wide, and a band past a fraction's [0, 1]
# would show values no run can have, so bands are clipped to these (the summaries keep the raw interval).
BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "utilization": (0.0, 1.0), keys.TRAIN_UTILIZATION: (0.0, 1.0), keys.PROBE_GRADIENT_COVERAGE: (0.0, 1.0),
    "ssim": (None, 1.0), "rfid": (0.0, None), "psnr": (0.0, None), keys.PROBE_CODEBOOK_RANK: (0.0, None),
}


def quantizer_order(names) -> list[str]:
    """Registered quantizers in their fixed order, then any others alphabetically."""
    names = set(names)
    return [q for q in QUANTIZER_COLORS if q in names] + sorted(names - set(QUANTIZER_COLORS))


def quantizer_palette(names) -> dict[str, str]:
    """Colour per quantizer: the fixed one for registered names; others take spare colours in sorted
    order, so the same set of runs always gives the same colours in every figure."""
    extras = sorted(set(names) - set(QUANTIZER_COLORS))
    palette = {q: QUANTIZER_COLORS[q] for q in QUANTIZER_COLORS if q in set(names)}
    palette.update({q: _SPARE_COLORS[i % len(_SPARE_COLORS)] for i, q in enumerate(extras)})
    return palette


@dataclass
class FigureResult:
    name: str                              # file stem, e.g. "fig1_utilization_vs_codebook_size"
    title: str
    figure: Figure | None = None
    data: pd.DataFrame = field(default_factory=pd.DataFrame)   # the summary that was plotted
    skipped: str | None = None             # why the figure was not drawn

    def save(self, out_dir: Path) -> list[Path]:
        """Write <name>.png and <name>.pdf; returns the paths."""
        if self.figure is None:
            raise ValueError(f"figure {self.name} was skipped ({self.skipped}); nothing to save")
        paths = [out_dir / f"{self.name}.png", out_dir / f"{self.name}.pdf"]
        self.figure.savefig(paths[0], dpi=150, bbox_inches="tight")
        self.figure.savefig(paths[1], bbox_inches="tight")
        return paths


# ---------------------------------------------------------------- facets
def latent_facets(frame: pd.DataFrame) -> tuple[list, set[str]]:
    """Latent dims to draw as panels, and the quantizers swept over latent dim.

    Panels are needed only when some quantizer has several latent dims at one codebook size. Quantizers
    that never do (FSQ/LFQ may fix their own dim) are drawn in every panel: their runs don't depend on
    the swept dim. Returns ([None], set()) for a single panel."""
    counts = frame.groupby(["quantizer", "codebook_size_requested"])["latent_dim"].nunique()
    swept = {q for (q, _), n in counts.items() if n > 1}
    if not swept:
        return [None], set()
    dims = sorted(int(d) for d in frame.loc[frame["quantizer"].isin(swept), "latent_dim"].dropna().unique())
    return dims, swept


def _in_panel(frame: pd.DataFrame, dim, swept: set[str]) -> pd.DataFrame:
    if dim is None:
        return frame
    return frame[~frame["quantizer"].isin(swept) | (frame["latent_dim"] == dim)]


def _size_summary(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean/CI of ``metric`` per (quantizer, requested size); x = the real size (FSQ rounds)."""
    data = frame.dropna(subset=[metric])
    summary = summarize(data, ["quantizer", "codebook_size_requested"], metric)
    real = data.groupby(["quantizer", "codebook_size_requested"])["codebook_size"].median().rename("x")
    return summary.join(real, on=["quantizer", "codebook_size_requested"])


# ---------------------------------------------------------------- drawing
def _log2_axis(axis) -> None:
    axis.set_major_locator(LogLocator(base=2, numticks=20))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"$2^{{{int(round(math.log2(v)))}}}$" if v > 0 else ""))
    axis.set_minor_formatter(NullFormatter())


def _grid(panels: list[dict], n_rows: int, n_cols: int, title: str, palette: dict[str, str],
          log2_x: bool, sharey: bool | str = False) -> Figure:
    """Draw panels ({row, col, data, x_label, y_label, panel_title, bounds}) where data has quantizer, x,
    mean, ci_low, ci_high. One line per quantizer per panel (label = quantizer name)."""
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.8 * n_cols + 1.4, 3.0 * n_rows), squeeze=False,
                             sharey=sharey)
    used = set()
    for panel in panels:
        ax = axes[panel["row"]][panel["col"]]
        data = panel["data"]
        for quantizer in quantizer_order(data["quantizer"].unique()):
            line = data[data["quantizer"] == quantizer].sort_values("x")
            color = palette[quantizer]
            ax.plot(line["x"].to_numpy(float), line["mean"].to_numpy(float), color=color, label=quantizer,
                    marker="o" if len(line) <= 20 else None, markersize=3.5)   # dots hide a long curve
            band = line.dropna(subset=["ci_low", "ci_high"])
            if len(band):
                low, high = panel.get("bounds", (None, None))
                ax.fill_between(band["x"].to_numpy(float), band["ci_low"].clip(lower=low).to_numpy(float),
                                band["ci_high"].clip(upper=high).to_numpy(float), color=color, alpha=0.18,
                                linewidth=0)
            used.add(quantizer)
        if log2_x:
            ax.set_xscale("log", base=2)
            _log2_axis(ax.xaxis)
        ax.set_xlabel(panel["x_label"])
        ax.set_ylabel(panel["y_label"])
        if panel.get("panel_title"):
            ax.set_title(panel["panel_title"], fontsize=9)
    drawn = {(p["row"], p["col"]) for p in panels}
    for r in range(n_rows):
        for c in range(n_cols):
            if (r, c) not in drawn:
                axes[r][c].set_visible(False)
    handles = [Line2D([], [], color=palette[q], marker="o", label=q) for q in quantizer_order(used)]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), title="quantizer", frameon=False)
    fig.suptitle(f"{title}\n({CI_NOTE})", fontsize=10)
    fig.tight_layout()
    return fig


# Several metrics (rows) x latent-dim panels (columns); with one latent dim the metrics sit side by side.
def _place(metric_index: int, dim_index: int, dims: list) -> dict:
    return {"row": 0, "col": metric_index} if len(dims) == 1 else {"row": metric_index, "col": dim_index}


def _shape(metrics: list, dims: list) -> tuple[int, int]:
    return (1, len(metrics)) if len(dims) == 1 else (len(metrics), len(dims))


def _share(dims: list) -> bool | str:
    return False if len(dims) == 1 else "row"   # a row holds one metric when there are latent-dim panels


def _skip(name: str, title: str, reason: str) -> FigureResult:
    return FigureResult(name, title, skipped=reason)


def _metrics_vs_size(frame: pd.DataFrame, palette, name: str, title: str, metrics: list[str]) -> FigureResult:
    present = [m for m in metrics if m in frame and frame[m].notna().any()]
    if not present:
        return _skip(name, title, f"no finished run has {' or '.join(metrics)}")
    dims, swept = latent_facets(frame)
    panels, summaries = [], []
    for r, metric in enumerate(present):
        for c, dim in enumerate(dims):
            summary = _size_summary(_in_panel(frame, dim, swept), metric)
            if summary.empty:
                continue
            summaries.append(summary.assign(metric=metric, latent_dim=dim))
            panels.append({**_place(r, c, dims), "data": summary, "x_label": LABELS["codebook_size"],
                           "y_label": LABELS.get(metric, metric), "bounds": BOUNDS.get(metric, (None, None)),
                           "panel_title": None if dim is None else f"latent dim {dim}"})
    figure = _grid(panels, *_shape(present, dims), title, palette, log2_x=True, sharey=_share(dims))
    return FigureResult(name, title, figure, pd.concat(summaries, ignore_index=True))


def utilization_vs_size(frame, palette) -> FigureResult:
    """Figure 1: the paper's Fig. 1 question — does utilization fall as K grows?"""
    return _metrics_vs_size(frame, palette, "fig1_utilization_vs_codebook_size",
                            "Codebook utilization vs codebook size", ["utilization"])


def fid_vs_size(frame, palette) -> FigureResult:
    """Figure 2: rFID and rKID (reconstructions vs originals) vs K."""
    return _metrics_vs_size(frame, palette, "fig2_rfid_vs_codebook_size",
                            "Reconstruction FID / KID vs codebook size", ["rfid", "rkid"])


def quality_vs_size(frame, palette) -> FigureResult:
    """Figure 4: PSNR and SSIM vs K."""
    return _metrics_vs_size(frame, palette, "fig4_psnr_ssim_vs_codebook_size",
                            "Reconstruction PSNR / SSIM vs codebook size", ["psnr", "ssim"])


def utilization_vs_latent_dim(frame, palette) -> FigureResult:
    """Figure 3: utilization vs latent dim, one panel per requested codebook size."""
    name, title = "fig3_utilization_vs_latent_dim", "Codebook utilization vs latent dim"
    data = frame.dropna(subset=["utilization", "latent_dim"])
    _, swept = latent_facets(data)
    if not swept:
        return _skip(name, title, "no quantizer was run at more than one latent dim for a codebook size")
    data = data[data["quantizer"].isin(swept)]
    sizes = sorted(int(k) for k in data["codebook_size_requested"].unique())
    n_cols = min(len(sizes), 4)
    panels, summaries = [], []
    for i, size in enumerate(sizes):
        at_size = data[data["codebook_size_requested"] == size]
        summary = summarize(at_size, ["quantizer", "latent_dim"], "utilization")
        summary["x"] = summary["latent_dim"].astype(float)
        summaries.append(summary.assign(codebook_size_requested=size))
        panels.append({"row": i // n_cols, "col": i % n_cols, "data": summary, "x_label": LABELS["latent_dim"],
                       "y_label": LABELS["utilization"], "panel_title": f"K = {size}", "bounds": BOUNDS["utilization"]})
    figure = _grid(panels, math.ceil(len(sizes) / n_cols), n_cols, title, palette, log2_x=True, sharey=True)
    return FigureResult(name, title, figure, pd.concat(summaries, ignore_index=True))


def _curve_summary(curves: pd.DataFrame, key: str) -> pd.DataFrame:
    summary = summarize(curves[curves["key"] == key], ["quantizer", "step"], "value")
    summary["x"] = summary["step"].astype(float)
    return summary


def _with_run_info(histories: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    info = frame[["run_id", "quantizer", "codebook_size_requested", "latent_dim", "seed"]]
    return histories.merge(info, on="run_id", how="inner")


def collapse_dynamics(frame, histories, palette) -> FigureResult:
    """Figure 5: utilization and gradient coverage over training at the largest requested K — the
    paper's mechanism seen as it happens (VQ's coverage stays at the selected fraction, SimVQ's at 1)."""
    name = "fig5_collapse_dynamics"
    if frame.empty:
        return _skip(name, "Collapse dynamics", "no finished runs")
    largest = int(frame["codebook_size_requested"].max())
    title = f"Collapse dynamics at the largest codebook size (K = {largest})"
    curve_keys = [keys.TRAIN_UTILIZATION, keys.PROBE_GRADIENT_COVERAGE]
    curves = _with_run_info(histories, frame)
    curves = curves[(curves["codebook_size_requested"] == largest) & curves["key"].isin(curve_keys)]
    present = [k for k in curve_keys if (curves["key"] == k).any()]
    if not present:
        return _skip(name, title, f"no {' or '.join(curve_keys)} curves at K = {largest}")
    dims, swept = latent_facets(frame[frame["codebook_size_requested"] == largest])
    panels, summaries = [], []
    for r, key in enumerate(present):
        for c, dim in enumerate(dims):
            summary = _curve_summary(_in_panel(curves, dim, swept), key)
            if summary.empty:
                continue
            summaries.append(summary.assign(key=key, latent_dim=dim))
            panels.append({**_place(r, c, dims), "data": summary, "x_label": LABELS["step"], "y_label": LABELS[key],
                           "panel_title": None if dim is None else f"latent dim {dim}", "bounds": BOUNDS[key]})
    figure = _grid(panels, *_shape(present, dims), title, palette, log2_x=False, sharey=_share(dims))
    return FigureResult(name, title, figure, pd.concat(summaries, ignore_index=True))


def effective_rank(frame, histories, palette) -> FigureResult:
    """Figure 6: effective rank of the (effective) codebook over training, one panel per requested K."""
    name, title = "fig6_codebook_effective_rank", "Codebook effective rank over training"
    curves = _with_run_info(histories, frame)
    curves = curves[curves["key"] == keys.PROBE_CODEBOOK_RANK]
    if curves.empty:
        return _skip(name, title, f"no {keys.PROBE_CODEBOOK_RANK} curves")
    dims, swept = latent_facets(frame)
    sizes = sorted(int(k) for k in curves["codebook_size_requested"].unique())
    panels, summaries = [], []
    for r, dim in enumerate(dims):
        for c, size in enumerate(sizes):
            summary = _curve_summary(_in_panel(curves[curves["codebook_size_requested"] == size], dim, swept),
                                     keys.PROBE_CODEBOOK_RANK)
            if summary.empty:
                continue
            summaries.append(summary.assign(codebook_size_requested=size, latent_dim=dim))
            label = f"K = {size}" + ("" if dim is None else f", latent dim {dim}")
            panels.append({"row": r, "col": c, "data": summary, "x_label": LABELS["step"],
                           "y_label": LABELS[keys.PROBE_CODEBOOK_RANK], "panel_title": label,
                           "bounds": BOUNDS[keys.PROBE_CODEBOOK_RANK]})
    figure = _grid(panels, len(dims), len(sizes), title, palette, log2_x=False, sharey=True)
    return FigureResult(name, title, figure, pd.concat(summaries, ignore_index=True))


FIGURE_NAMES = ["fig1_utilization_vs_codebook_size", "fig2_rfid_vs_codebook_size", "fig3_utilization_vs_latent_dim",
                "fig4_psnr_ssim_vs_codebook_size", "fig5_collapse_dynamics", "fig6_codebook_effective_rank"]


def make_figures(frame: pd.DataFrame, histories: pd.DataFrame) -> list[FigureResult]:
    """All six figures from FINISHED trial rows and their curves (skipped ones carry the reason)."""
    palette = quantizer_palette(frame["quantizer"].unique())
    return [
        utilization_vs_size(frame, palette),
        fid_vs_size(frame, palette),
        utilization_vs_latent_dim(frame, palette),
        quality_vs_size(frame, palette),
        collapse_dynamics(frame, histories, palette),
        effective_rank(frame, histories, palette),
    ]


def close(results: list[FigureResult]) -> None:
    for result in results:
        if result.figure is not None:
            plt.close(result.figure)


__all__ = ["FigureResult", "FIGURE_NAMES", "QUANTIZER_COLORS", "make_figures", "quantizer_palette",
           "quantizer_order", "latent_facets", "close"]
