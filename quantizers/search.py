"""Exact nearest-code search without the N x K distance matrix and without an autograd graph.

argmin_k ||z - c_k||^2 = argmin_k (||c_k||^2 - 2 z.c_k), since ||z||^2 does not depend on k. The scores are
computed block by block (``rows x codes``, at most ``max_elements`` values, small enough to stay in cache)
with one fused ``addmm`` each, and reduced on the fly into a running best per row, so memory stays
bounded whatever K is.

Why the reduction is two-step on CPU: PyTorch's ``amin`` (values only) is vectorized and about 20x cheaper
per element than ``argmin``, which costs nearly as much as the matrix product itself. So each block takes
``amin``, and the index is found only on the rows whose best value that block improves (about ln(#blocks)
blocks per row instead of all of them), by :func:`first_argmin`: ``amin`` over groups of
:data:`ARGMIN_GROUP` codes, ``argmin`` over the group minima (64x fewer values), then ``argmin`` inside the one
group that holds the first minimum -- the same index as ``argmin`` over the row, ties and NaN included,
at about a third of its cost (``results/step_speed``). Strict improvement keeps the first index among exact
ties in the computed scores, like ``argmin`` over the whole row (equal codes may still score an ulp apart,
since the matrix product can round columns differently). On CUDA, where argmin is cheap and data-dependent row
selection would synchronise, each block takes ``min`` with indices and merges with ``torch.where``.
"""
from __future__ import annotations

import torch
from torch import Tensor

#: Upper bound on the scores held at once: 2^24 fp32 values = 64 MiB.
DEFAULT_MAX_ELEMENTS = 1 << 24
#: Preferred block: 1024 rows x 1024 codes (4 MiB of fp32 scores), measured fastest on a 2-core CPU for
#: dim 64 at K = 65,536; ``max_elements`` can only make it smaller.
BLOCK_ROWS = 1024
BLOCK_CODES = 1024
#: Codes per group in :func:`first_argmin` (fastest of 32-256 at 1,024 codes per block, 1 thread).
ARGMIN_GROUP = 64


def _check_search_args(z: Tensor, codebook: Tensor, max_elements: int) -> None:
    if z.dim() != 2 or codebook.dim() != 2 or z.shape[1] != codebook.shape[1]:
        raise ValueError(f"nearest_code needs z (N, d) and codebook (K, d) with the same d; got "
                         f"{tuple(z.shape)} and {tuple(codebook.shape)}")
    if codebook.shape[0] < 1:
        raise ValueError("nearest_code needs a codebook with at least one code; got K = 0")
    if isinstance(max_elements, bool) or not isinstance(max_elements, int) or max_elements < 1:
        raise ValueError(f"max_elements must be a positive integer; got {max_elements!r}")


def block_shape(num_rows: int, num_codes: int, max_elements: int) -> tuple[int, int]:
    """``(rows, codes)`` of one score block: the preferred cache-sized block, shrunk to fit
    ``max_elements`` and the problem."""
    codes = max(1, min(num_codes, BLOCK_CODES, max_elements))
    rows = max(1, min(num_rows, BLOCK_ROWS, max_elements // codes))
    return rows, codes


@torch.no_grad()
def nearest_code(z: Tensor, codebook: Tensor, *, max_elements: int = DEFAULT_MAX_ELEMENTS,
                 codebook_sq_norms: Tensor | None = None) -> Tensor:
    """Index of the nearest code (squared Euclidean) for each row of ``z`` ``(N, d)`` in ``codebook``
    ``(K, d)``: int64 ``(N,)``, the first index among exactly tied scores. Never more than
    ``max_elements`` scores exist at once; no autograd graph is recorded. ``codebook_sq_norms`` ``(K,)`` may be passed when the
    caller already has ``||c_k||^2``."""
    _check_search_args(z, codebook, max_elements)
    z = z.detach()
    codebook = codebook.detach().to(z.dtype)
    if codebook_sq_norms is None:
        codebook_sq_norms = codebook.pow(2).sum(dim=1)
    codebook_sq_norms = codebook_sq_norms.detach().to(z.dtype)
    num_rows, num_codes = z.shape[0], codebook.shape[0]
    rows, codes = block_shape(num_rows, num_codes, max_elements)

    best_score = torch.full((num_rows,), float("inf"), dtype=z.dtype, device=z.device)
    best_index = torch.zeros(num_rows, dtype=torch.long, device=z.device)
    # one scores buffer reused by every block (addmm writes into it), so the search allocates O(block)
    buffer = torch.empty(rows * codes, dtype=z.dtype, device=z.device)
    code_blocks = [(start, codebook[start:start + codes].t(), codebook_sq_norms[start:start + codes])
                   for start in range(0, num_codes, codes)]
    merge = _merge_gpu if z.is_cuda else _merge_cpu
    for row_start in range(0, num_rows, rows):
        z_block = z[row_start:row_start + rows]
        block_best = best_score[row_start:row_start + rows]
        block_index = best_index[row_start:row_start + rows]
        for code_start, codes_t, sq_norms in code_blocks:
            scores = buffer[: z_block.shape[0] * codes_t.shape[1]].view(z_block.shape[0], codes_t.shape[1])
            torch.addmm(sq_norms, z_block, codes_t, beta=1.0, alpha=-2.0, out=scores)  # ||c||^2 - 2 z.c
            merge(scores, code_start, block_best, block_index)
    return best_index


def _merge_cpu(scores: Tensor, code_start: int, best: Tensor, index: Tensor) -> None:
    """Fold one block into the running (best, index) of its rows, in place; argmin only where improved."""
    block_min = scores.amin(dim=1)
    improved = (block_min < best).nonzero().squeeze(1)
    if improved.numel() == 0:
        return
    best[improved] = block_min[improved]
    rows = scores if improved.numel() == scores.shape[0] else scores.index_select(0, improved)
    index[improved] = first_argmin(rows) + code_start


def first_argmin(scores: Tensor) -> Tensor:
    """``scores.argmin(dim=1)`` for a 2-D CPU tensor, exactly (the first index of the row's minimum; NaN
    counts as the minimum, as in ``argmin``), through group minima: the first group whose minimum is the
    row's minimum holds the row's first minimum, and ``argmin`` runs on the group minima and in that group
    only. Falls back to ``argmin`` when the columns do not split into groups."""
    num_rows, num_codes = scores.shape
    if num_codes < 2 * ARGMIN_GROUP or num_codes % ARGMIN_GROUP or not scores.is_contiguous():
        return scores.argmin(dim=1)
    grouped = scores.view(num_rows, num_codes // ARGMIN_GROUP, ARGMIN_GROUP)
    group = grouped.amin(dim=2).argmin(dim=1)
    inside = grouped[torch.arange(num_rows, device=scores.device), group].argmin(dim=1)
    return group * ARGMIN_GROUP + inside


def _merge_gpu(scores: Tensor, code_start: int, best: Tensor, index: Tensor) -> None:
    block_min, block_arg = scores.min(dim=1)
    improved = block_min < best
    best.copy_(torch.where(improved, block_min, best))
    index.copy_(torch.where(improved, block_arg + code_start, index))
