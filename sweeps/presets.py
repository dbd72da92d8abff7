"""Named sweeps: ``quick`` (a laptop-sized comparison) and ``paper`` (the SimVQ paper's scale).

Each preset is a :class:`SweepGrid`: the axes, and one budget that every trial shares. The budget of
each preset is one dict below, so it can be read and tuned in one place.
"""
from __future__ import annotations

from .grid import SweepGrid, base_config

ALL_QUANTIZERS = ["vq", "ema", "fsq", "lfq", "simvq"]

# ---------------------------------------------------------------------------------------------- quick
#: The quick preset's budget: must finish all trials in <= 10 min on 2 CPU cores, Ray start and
#: evaluation included. Every trial gets exactly this (steps x batch_size samples).
QUICK_BUDGET: dict[str, object] = {
    "dataset": "photos",
    "image_size": 32,
    "width": 16,               # the backbone dominates a CPU step: width 16 is 2.4x cheaper than 32 (measured)
    "num_res_blocks": 1,
    "num_downsamples": 2,      # 32 px -> 8x8 = 64 tokens per image
    "steps": 200,              # VQ's utilization gap shows within ~30 steps at K = 2^14 (measured)
    "batch_size": 64,
    "lr": 1e-3,
    "warmup_steps": 20,
    "eval_samples": 512,
    "fid_samples": 64,         # rFID on 64 images is biased: read it as a relative signal only
    "log_every": 10,
    "probe_every": 25,
    "dead_code_window": 100,
    "device": "auto",
}
#: 2^8 ... 2^14: the range where the SimVQ paper's Table 1 shows VQ's utilization falling.
QUICK_CODEBOOK_SIZES = [2 ** 8, 2 ** 10, 2 ** 12, 2 ** 14]
QUICK_LATENT_DIMS = [32]
QUICK_SEEDS = [0]

# ---------------------------------------------------------------------------------------------- paper
#: The paper preset's budget: a GPU machine or cluster (see Zhu et al. 2024, arXiv 2411.02038, Sec. 5 for their scale;
#: this is smaller data, the same sweep shape).
PAPER_BUDGET: dict[str, object] = {
    "dataset": "photos",
    "image_size": 32,
    "width": 128,
    "num_res_blocks": 2,
    "num_downsamples": 2,
    "steps": 20_000,
    "batch_size": 128,
    "lr": 3e-4,
    "warmup_steps": 500,
    "eval_samples": 5_000,
    "fid_samples": 5_000,
    "log_every": 50,
    "probe_every": 200,
    "dead_code_window": 1_000,
    "device": "auto",
}
PAPER_CODEBOOK_SIZES = [2 ** 10, 2 ** 12, 2 ** 14, 2 ** 16, 2 ** 18]
PAPER_LATENT_DIMS = [8, 16, 32, 64, 128]   # FSQ and LFQ take their own dims (sweeps.grid)
PAPER_SEEDS = [0, 1, 2]


def quick() -> SweepGrid:
    return SweepGrid(list(ALL_QUANTIZERS), list(QUICK_CODEBOOK_SIZES), list(QUICK_LATENT_DIMS),
                     list(QUICK_SEEDS), base=base_config(QUICK_BUDGET))


def paper() -> SweepGrid:
    return SweepGrid(list(ALL_QUANTIZERS), list(PAPER_CODEBOOK_SIZES), list(PAPER_LATENT_DIMS),
                     list(PAPER_SEEDS), base=base_config(PAPER_BUDGET))


PRESETS = {"quick": quick, "paper": paper}


def get_preset(name: str) -> SweepGrid:
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}; got {name!r}")
    return PRESETS[name]()
