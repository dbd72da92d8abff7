"""Nearest-code search without the full N x K distance matrix.

argmin_k ||z - c_k||^2 = argmin_k (||c_k||^2 - 2 z.c_k), since ||z||^2 does not depend on k. Rows of z
are processed in chunks so that at most ``max_elements`` distances exist at once, whatever K is, and
no autograd graph is built through the search.
"""
from __future__ import annotations

import torch
from torch import Tensor

#: Distances held at once: 2^24 fp32 values = 64 MiB.
DEFAULT_MAX_ELEMENTS = 1 << 24


@torch.no_grad()
def nearest_code(z: Tensor, codebook: Tensor, *, max_elements: int = DEFAULT_MAX_ELEMENTS,
                 codebook_sq_norms: Tensor | None = None) -> Tensor:
    """Index of the nearest code (squared Euclidean) for each row of ``z`` ``(N, d)`` in
    ``codebook`` ``(K, d)``. Returns int64 ``(N,)``."""
    if z.dim() != 2 or codebook.dim() != 2 or z.shape[1] != codebook.shape[1]:
        raise ValueError(f"nearest_code needs z (N, d) and codebook (K, d); got {tuple(z.shape)} and "
                         f"{tuple(codebook.shape)}")
    z = z.detach()
    codebook = codebook.detach().to(z.dtype)
    if codebook_sq_norms is None:
        codebook_sq_norms = codebook.pow(2).sum(dim=1)
    num_codes = codebook.shape[0]
    rows_per_chunk = max(1, max_elements // num_codes)
    indices = torch.empty(z.shape[0], dtype=torch.long, device=z.device)
    codebook_t = codebook.t()
    for start in range(0, z.shape[0], rows_per_chunk):
        chunk = z[start:start + rows_per_chunk]
        # ||c||^2 - 2 z.c  in one fused call
        scores = torch.addmm(codebook_sq_norms, chunk, codebook_t, beta=1.0, alpha=-2.0)
        indices[start:start + rows_per_chunk] = scores.argmin(dim=1)
    return indices
