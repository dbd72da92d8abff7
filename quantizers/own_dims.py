"""Quantizers whose latent dim follows from their codebook size: LFQ and BSQ (K = 2^dim, one sign per
dim) and FSQ (K = the product of its level list). Sweeps and the speed bench ask here what a requested
size means for them."""
from __future__ import annotations

import math

#: Quantizers whose latent dim follows from the codebook size.
OWN_DIM_QUANTIZERS = ("fsq", "lfq", "bsq")


def own_latent_dim(quantizer: str, codebook_size: int) -> tuple[int, int, str]:
    """For FSQ/LFQ: ``(latent_dim, real_codebook_size, note)`` implied by a requested size.

    Raises ValueError with the reason when no such quantizer has that size.
    """
    if quantizer in ("lfq", "bsq"):  # BSQ (Zhao et al. 2024) binarizes like LFQ, on the unit sphere
        name = quantizer.upper()
        bits = int(round(math.log2(codebook_size)))
        if 2 ** bits != codebook_size:
            lower, upper = 2 ** math.floor(math.log2(codebook_size)), 2 ** math.ceil(math.log2(codebook_size))
            raise ValueError(f"{name} has 2^bits codes (one sign per latent dim), so its codebook size must be "
                             f"a power of two; {codebook_size} is not (nearest: {lower} or {upper})")
        return bits, codebook_size, f"{name} latent dim = log2 K = {bits}"
    if quantizer == "fsq":
        from .fsq import PAPER_LEVELS, fsq_levels_for

        levels = list(fsq_levels_for(codebook_size))  # raises ValueError for sizes no level list reaches
        real = math.prod(levels)
        note = f"FSQ levels {levels}: K = {real}, latent dim = {len(levels)}"
        if real != codebook_size:
            note += f" (asked {codebook_size})"
        if codebook_size not in PAPER_LEVELS:
            note += "; levels from vqbench's extension, not the FSQ paper's table"
        return len(levels), real, note
    raise ValueError(f"quantizer {quantizer!r} does not set its own latent dim; "
                     f"only {list(OWN_DIM_QUANTIZERS)} do")
