"""The comparison figures, built from the runs DataFrame and the curve histories.

Every builder returns a :class:`FigureResult`: the matplotlib figure and the summary it plots, or the
reason it was skipped (a figure with no data is never drawn). Lines are means over seeds with a shaded
Student-t 95% interval; each quantizer keeps one colour in every figure; codebook sizes are on a log2 axis;
points where a seed had not converged are drawn hollow. Figures over training (curves, the phase diagram,
probes vs utilization) are in :mod:`analysis.figures_training`.
"""
from __future__ import annotations

import math

import pandas as pd

from . import figures_training as training
from .plotting import (CI_NOTE, QUANTIZER_COLORS, FigureResult, close, grid, in_panel, latent_facets, place,
                       quantizer_order, quantizer_palette, shape, share, skip)
from .statistics import summarize

LABELS = {
    "codebook_size": "codebook size K (codes, log2 scale)",
    "latent_dim": "latent dim (channels per code, log2 scale)",
    "step": "optimizer step",
    "utilization": "test-set utilization (fraction of K used)",
    "utilization_relative": "utilization / uniform ceiling",
    "rfid": "rFID (lower is better)",
    "rkid": "rKID (lower is better)",
    "psnr": "PSNR (dB)",
    "ssim": "SSIM (0–1)",
}
# Where a quantity can live: the t-interval over 2-3 seeds is wide, and a band past a fraction's [0, 1]
# would show values no run can have, so bands are clipped to these (the summaries keep the raw interval).
BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "utilization": (0.0, 1.0), "utilization_relative": (0.0, None), "ssim": (None, 1.0), "rfid": (0.0, None),
    "rkid": (None, None), "psnr": (0.0, None),
}


def _size_summary(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean/CI of ``metric`` per (quantizer, requested size); x = the real size (FSQ rounds); unconverged =
    some run there was flagged not converged."""
    data = frame.dropna(subset=[metric])
    by = ["quantizer", "codebook_size_requested"]
    summary = summarize(data, by, metric)
    real = data.groupby(by)["codebook_size"].median().rename("x")
    summary = summary.join(real, on=by)
    if "converged" in data:
        stuck = (data["converged"] < 0.5).groupby([data[c] for c in by]).any().rename("unconverged")
        summary = summary.join(stuck, on=by)
    return summary


def _ceiling(frame: pd.DataFrame) -> pd.DataFrame | None:
    """The uniform ceiling per real K (mean over runs: every run at one K sees the same test tokens)."""
    if "utilization_ceiling" not in frame or frame["utilization_ceiling"].isna().all():
        return None
    ceiling = frame.dropna(subset=["utilization_ceiling"]).groupby("codebook_size")["utilization_ceiling"].mean()
    return pd.DataFrame({"x": ceiling.index.astype(float), "ceiling": ceiling.to_numpy(float)})


def _metrics_vs_size(frame: pd.DataFrame, palette, name: str, title: str, metrics: list[str],
                     with_ceiling: bool = False) -> FigureResult:
    present = [m for m in metrics if m in frame and frame[m].notna().any()]
    if not present:
        return skip(name, title, f"no finished run has {' or '.join(metrics)}")
    dims, swept = latent_facets(frame)
    panels, summaries = [], []
    for r, metric in enumerate(present):
        for c, dim in enumerate(dims):
            part = in_panel(frame, dim, swept)
            summary = _size_summary(part, metric)
            if summary.empty:
                continue
            summaries.append(summary.assign(metric=metric, latent_dim=dim))
            panels.append({**place(r, c, dims), "data": summary, "x_label": LABELS["codebook_size"],
                           "y_label": LABELS.get(metric, metric), "bounds": BOUNDS.get(metric, (None, None)),
                           "panel_title": None if dim is None else f"latent dim {dim}",
                           "ceiling": _ceiling(part) if with_ceiling else None})
    figure = grid(panels, *shape(present, dims), title, palette, log2_x=True, sharey=share(dims))
    return FigureResult(name, title, figure, pd.concat(summaries, ignore_index=True))


def utilization_vs_size(frame, palette) -> FigureResult:
    """Figure 1: the paper's Fig. 1 question — does utilization fall as K grows? The dashed line is what a
    perfectly uniform quantizer would read with the same test tokens: below it, the token count caps."""
    return _metrics_vs_size(frame, palette, "fig1_utilization_vs_codebook_size",
                            "Codebook utilization vs codebook size", ["utilization"], with_ceiling=True)


def fid_vs_size(frame, palette, min_images: int | None = None) -> FigureResult:
    """Figure 2: rFID and rKID (reconstructions vs originals) vs K; the title says when the image count is
    below ``min_images`` (rFID there is biased upward)."""
    title = "Reconstruction FID / KID vs codebook size"
    counts = frame["rfid_samples"].dropna() if "rfid_samples" in frame else pd.Series(dtype=float)
    if min_images and len(counts) and counts.min() < min_images:
        title += f" — {int(counts.min())} images < {min_images}: biased, no signal between methods"
    return _metrics_vs_size(frame, palette, "fig2_rfid_vs_codebook_size", title, ["rfid", "rkid"])


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
        return skip(name, title, "no quantizer was run at more than one latent dim for a codebook size")
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
    figure = grid(panels, math.ceil(len(sizes) / n_cols), n_cols, title, palette, log2_x=True, sharey=True)
    return FigureResult(name, title, figure, pd.concat(summaries, ignore_index=True))


FIGURE_NAMES = ["fig1_utilization_vs_codebook_size", "fig2_rfid_vs_codebook_size", "fig3_utilization_vs_latent_dim",
                "fig4_psnr_ssim_vs_codebook_size", "fig5_collapse_dynamics", "fig6_codebook_effective_rank",
                "fig7_phase_diagram", "fig8_probes_vs_utilization"]


def make_figures(frame: pd.DataFrame, histories: pd.DataFrame, checkpoints: pd.DataFrame | None = None,
                 utilization: str = "utilization", min_fid_images: int | None = None) -> list[FigureResult]:
    """Every figure from FINISHED trial rows (with probe columns where logged), their curves and their
    checkpoint rows (:func:`analysis.checkpoints.checkpoint_frame`); skipped ones carry the reason."""
    palette = quantizer_palette(frame["quantizer"].unique())
    checkpoints = checkpoints if checkpoints is not None else pd.DataFrame()
    return [
        utilization_vs_size(frame, palette),
        fid_vs_size(frame, palette, min_fid_images),
        utilization_vs_latent_dim(frame, palette),
        quality_vs_size(frame, palette),
        training.collapse_dynamics(frame, histories, palette),
        training.effective_rank(frame, histories, palette),
        training.phase_diagram(frame, checkpoints, utilization),
        training.probes_vs_utilization(frame, palette, utilization),
    ]


__all__ = ["FigureResult", "FIGURE_NAMES", "QUANTIZER_COLORS", "CI_NOTE", "make_figures", "quantizer_palette",
           "quantizer_order", "latent_facets", "close", "utilization_vs_size", "fid_vs_size", "quality_vs_size",
           "utilization_vs_latent_dim"]
