"""Refuse a codebook that cannot fit in memory before anything is computed.

``vqbench train`` and ``vqbench sweep`` (dry run too) call :func:`check_trials_fit`: for each trial, a
LOWER BOUND on the memory its quantizer needs is compared with the memory available now (psutil's
``available`` RAM; free GPU memory when the trial trains on CUDA). A lower bound never refuses a trial
that could run; it catches the impossible ones (K = 2^30 with d = 32 asks for 512 GiB of codebook
alone) with one line instead of an allocation error deep in torch.

The bound (bytes, fp32):
- the codebook K x d, four times: weights, gradient and the optimizer's two moments (16 K d);
- per-code bookkeeping: usage counts and last-use steps (16 K);
- one block of the token-to-code distance matrix: at least 64 tokens x K (256 K).
Quantizers with no stored codebook (FSQ, BSQ: codes are computed, never stored) are not bounded.
"""
from __future__ import annotations

#: Quantizers whose codebook is implicit (no K x d tensor, no K-sized distance block).
IMPLICIT_CODEBOOK = frozenset({"fsq", "bsq"})
BYTES = 4                       # fp32
CODEBOOK_COPIES = 4             # weights, gradient, Adam's first and second moments
PER_CODE_BOOKKEEPING = 16       # bytes per code: usage counts, last-use step
MIN_DISTANCE_ROWS = 64          # tokens per distance block, at least


def estimate_bytes(quantizer: str, codebook_size: int, latent_dim: int) -> int:
    """A lower bound on the bytes a quantizer of K codes in d dims needs while training (0: not bounded)."""
    if quantizer in IMPLICIT_CODEBOOK:
        return 0
    k, d = int(codebook_size), int(latent_dim)
    return k * d * BYTES * CODEBOOK_COPIES + k * PER_CODE_BOOKKEEPING + MIN_DISTANCE_ROWS * k * BYTES


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def available_bytes(device: str) -> tuple[int, str]:
    """(bytes available, where) for ``device`` ("cpu", "cuda", "cuda:N", "auto")."""
    if device.startswith("cuda") or device == "auto":
        try:
            import torch

            if torch.cuda.is_available():
                index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
                free, _total = torch.cuda.mem_get_info(index)
                return int(free), f"free on cuda:{index}"
        except Exception:  # noqa: BLE001 - no usable GPU: the trial trains on the CPU (or fails there)
            pass
    import psutil

    return int(psutil.virtual_memory().available), "RAM available on this machine"


def check_trials_fit(configs) -> None:
    """ValueError (one line) for the first trial whose lower bound exceeds the memory available now."""
    cache: dict[str, tuple[int, str]] = {}
    worst = None
    for config in configs:
        need = estimate_bytes(config.quantizer, config.codebook_size, config.latent_dim)
        if need and (worst is None or need > worst[0]):
            worst = (need, config)
    if worst is None:
        return
    need, config = worst
    device = getattr(config, "device", "cpu") or "cpu"
    if device not in cache:
        cache[device] = available_bytes(device)
    have, where = cache[device]
    if need > have:
        codebook = config.codebook_size * config.latent_dim * BYTES
        raise ValueError(
            f"{config.quantizer} K={config.codebook_size} d={config.latent_dim} needs at least {gib(need)} "
            f"(codebook {gib(codebook)} x {CODEBOOK_COPIES} for weights, gradient and optimizer state, plus "
            f"distance blocks), but only {gib(have)} is {where}; nothing was run. Fix: a smaller "
            "--codebook-size or --latent-dim, or a machine with more memory")
