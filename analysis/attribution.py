"""Shares of SimVQ's advantage: one control contrast's paired mean over the total's (simvq − vq), with
Fieller's interval, on the seeds that ran every quantizer involved (same K, latent dim and seed)."""
from __future__ import annotations

import math

import pandas as pd

from .statistics import fieller_ratio, sample_columns


def share_of_total(frame: pd.DataFrame, metric: str, size, dim, a: str, b: str,
                   total: tuple[str, str] = ("simvq", "vq")) -> tuple[float, float, float, int]:
    """(share, Fieller low, Fieller high, n): mean(a − b) / mean(simvq − vq) paired by seed at requested K
    ``size`` and latent dim ``dim`` ("own": each quantizer averaged over its latent dims)."""
    names = {a, b, *total}
    data = frame[(frame["codebook_size_requested"] == size) & frame["quantizer"].isin(names)].dropna(subset=[metric])
    if dim != "own":
        data = data[data["latent_dim"] == dim]
    sample = sample_columns(data)
    if data.empty or not sample:
        return math.nan, math.nan, math.nan, 0
    wide = data.groupby([*sample, "quantizer"])[metric].mean().unstack("quantizer")
    if not names <= set(wide.columns):
        return math.nan, math.nan, math.nan, 0
    wide = wide[list(names)].dropna()
    part, whole = wide[a] - wide[b], wide[total[0]] - wide[total[1]]
    share, low, high = fieller_ratio(part, whole)
    return share, low, high, len(wide)
