"""What every vqbench figure shares: one colour per quantizer, the figure result type, latent-dim
facets, and the line-grid drawer (means over seeds with a shaded Student-t 95% interval; unconverged
points hollow; an optional dashed ceiling per panel)."""
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

# One fixed colour per main quantizer (seaborn's colour-blind palette), in the order legends use.
QUANTIZER_COLORS: dict[str, str] = dict(zip(["vq", "ema", "fsq", "lfq", "simvq"],
                                            sns.color_palette("colorblind", 10).as_hex()[:5]))
_SPARE_COLORS = sns.color_palette("colorblind", 10).as_hex()[5:] + sns.color_palette("dark", 10).as_hex()
CI_NOTE = "lines: mean over seeds; bands: 95% t-interval"
UNCONVERGED_NOTE = "hollow: not converged (≥ 1 seed)"
CEILING_LABEL = "uniform ceiling 1−(1−1/K)^N"


def quantizer_order(names) -> list[str]:
    """Main quantizers in their fixed order, then any others alphabetically."""
    names = set(names)
    return [q for q in QUANTIZER_COLORS if q in names] + sorted(names - set(QUANTIZER_COLORS))


def quantizer_palette(names) -> dict[str, str]:
    """Colour per quantizer: the fixed one for main names; others take spare colours in sorted order, so
    the same set of runs always gives the same colours in every figure."""
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


def skip(name: str, title: str, reason: str) -> FigureResult:
    return FigureResult(name, title, skipped=reason)


def close(results: list[FigureResult]) -> None:
    for result in results:
        if result.figure is not None:
            plt.close(result.figure)


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


def in_panel(frame: pd.DataFrame, dim, swept: set[str]) -> pd.DataFrame:
    if dim is None:
        return frame
    return frame[~frame["quantizer"].isin(swept) | (frame["latent_dim"] == dim)]


def place(metric_index: int, dim_index: int, dims: list) -> dict:
    """Several metrics (rows) x latent-dim panels (columns); with one latent dim, metrics side by side."""
    return {"row": 0, "col": metric_index} if len(dims) == 1 else {"row": metric_index, "col": dim_index}


def shape(metrics: list, dims: list) -> tuple[int, int]:
    return (1, len(metrics)) if len(dims) == 1 else (len(metrics), len(dims))


def share(dims: list) -> bool | str:
    return False if len(dims) == 1 else "row"   # a row holds one metric when there are latent-dim panels


# ---------------------------------------------------------------- drawing
def log2_axis(axis) -> None:
    axis.set_major_locator(LogLocator(base=2, numticks=20))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"$2^{{{int(round(math.log2(v)))}}}$" if v > 0 else ""))
    axis.set_minor_formatter(NullFormatter())


def _draw_line(ax, line: pd.DataFrame, color: str, label: str, bounds) -> bool:
    """One quantizer's mean line with its band; unconverged points hollow. True if any was hollow."""
    x, y = line["x"].to_numpy(float), line["mean"].to_numpy(float)
    hollow = line["unconverged"].fillna(False).astype(bool).to_numpy() if "unconverged" in line else [False] * len(x)
    filled = [i for i, h in enumerate(hollow) if not h]
    dots = len(line) <= 20   # dots hide a long curve
    ax.plot(x, y, color=color, label=label, marker="o" if dots else None, markersize=3.5, markevery=filled)
    if dots and any(hollow):
        ax.plot(x[hollow], y[hollow], linestyle="none", marker="o", markersize=4.5, markerfacecolor="white",
                markeredgecolor=color, label=f"_unconverged {label}")
    band = line.dropna(subset=["ci_low", "ci_high"])
    if len(band):
        low, high = bounds
        ax.fill_between(band["x"].to_numpy(float), band["ci_low"].clip(lower=low).to_numpy(float),
                        band["ci_high"].clip(upper=high).to_numpy(float), color=color, alpha=0.18, linewidth=0)
    return bool(dots and any(hollow))


def grid(panels: list[dict], n_rows: int, n_cols: int, title: str, palette: dict[str, str],
         log2_x: bool, sharey: bool | str = False) -> Figure:
    """Draw panels ({row, col, data, x_label, y_label, panel_title, bounds, ceiling}) where data has
    quantizer, x, mean, ci_low, ci_high (and optionally unconverged); ``ceiling`` (x, ceiling) is drawn
    dashed. One line per quantizer per panel (label = quantizer name)."""
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.8 * n_cols + 1.4, 3.0 * n_rows), squeeze=False,
                             sharey=sharey)
    used, any_hollow, any_ceiling = set(), False, False
    for panel in panels:
        ax = axes[panel["row"]][panel["col"]]
        data = panel["data"]
        ceiling = panel.get("ceiling")
        if ceiling is not None and len(ceiling):
            ceiling = ceiling.sort_values("x")
            ax.plot(ceiling["x"].to_numpy(float), ceiling["ceiling"].to_numpy(float), color="0.35",
                    linestyle="--", linewidth=1.0, label=CEILING_LABEL, zorder=4)   # on top: it may sit on a line
            any_ceiling = True
        for quantizer in quantizer_order(data["quantizer"].unique()):
            line = data[data["quantizer"] == quantizer].sort_values("x")
            any_hollow |= _draw_line(ax, line, palette[quantizer], quantizer, panel.get("bounds", (None, None)))
            used.add(quantizer)
        if log2_x:
            ax.set_xscale("log", base=2)
            log2_axis(ax.xaxis)
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
    if any_ceiling:
        handles.append(Line2D([], [], color="0.35", linestyle="--", label=CEILING_LABEL))
    if any_hollow:
        handles.append(Line2D([], [], color="0.35", marker="o", markerfacecolor="white", linestyle="none",
                              label=UNCONVERGED_NOTE))
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), title="quantizer", frameon=False)
    fig.suptitle(f"{title}\n({CI_NOTE})", fontsize=10)
    fig.tight_layout()
    return fig
