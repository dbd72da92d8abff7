"""IBQ's N x K terms in cache-sized (rows x codes) tiles, flash-attention style (used by ``ibq_tiled.py`` beside it; a rejected attempt, see ../README.md).

Nothing N x K and no (rows, K) chunk exists: every tile of logits ``l = z C^T`` (at most :data:`TILE_ROWS` x
:data:`TILE_CODES`, 2 MiB of fp32) is formed, used and overwritten while it is in L2. A softmax over a row
of K logits is kept as two per-row numbers, ``M`` (the row's max) and ``S`` (``sum_k exp(x_k - M)``, later
``L = log S``), merged tile by tile (online softmax); a tile's own softmax comes from PyTorch's fused
softmax kernel (``torch.exp`` is several times slower, and far slower on underflowing inputs), and its sum
is read back as ``1 / max_k softmax_k``. Probabilities are then ``tile softmax * exp((m_t - M) + (L_t - L))``
and ``log p = (x - m_t) + ((m_t - M) - L)``: exact maxima are subtracted before anything is rounded at the
logits' magnitude, so ``log p`` near the max is as exact as ``log_softmax``'s.

GEMMs of N x K x d each per training step with the entropy on (the old row-chunk version: 6, the search
included; here 8, all in cache):

- forward pass 1: ``l`` (the index search, fused: strict improvement of a tile's max, then the first
  argmax in the tile, so the first index among exact ties as before), softmax(l)'s statistics with the
  rescaled running sum ``s C`` (a second GEMM), and softmax(l / T)'s statistics with the entropy;
- forward pass 2 (entropy only): ``l`` again, for the column sums of ``p = softmax(l / T)``, which need
  each row's final statistics;
- backward pass A (only when the column sums get a gradient ``u``): ``l`` again, for ``<p, u>`` per row;
- backward pass B: ``l``, ``g C^T``, then the logit gradient ``G`` tile and ``dz += G C``, ``dC += G^T z``.

Passes A and 2 exist because the row constants of softmax's backward (``<s, g C^T> = g . sC`` and
``<p, u - a log p>``) must be known before any tile of ``G`` is multiplied into ``dC``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from quantizers.search import first_argmin

#: Tile shape: 512 x 1024 fp32 = 2 MiB per buffer (three buffers).
TILE_ROWS = 512
TILE_CODES = 1024

_aten = torch.ops.aten


def tile_shape(num_rows: int, num_codes: int, max_elements: int) -> tuple[int, int]:
    codes = max(1, min(num_codes, TILE_CODES, max_elements))
    return max(1, min(num_rows, TILE_ROWS, max_elements // codes)), codes


def _tile_softmax(x: Tensor, out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The tile's softmax over its codes, its row max and ``log`` of its sum of ``exp(x - max)``."""
    probs = _aten._softmax.out(x, 1, False, out=out)
    return probs, x.amax(dim=1), probs.amax(dim=1).log().neg()   # the max's term is exp(0) / sum


class _Online:
    """Per-row running softmax statistics ``M``, ``S`` and accumulators that scale with ``exp(-M)``."""

    def __init__(self):
        self.max = self.sum = None

    def merge(self, tile_max: Tensor, tile_log_sum: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Fold in a tile; returns the old statistics' scale, the tile's weight and ``M_old - M_new``."""
        if self.max is None:
            self.max, self.sum = tile_max, tile_log_sum.exp()
            return None, self.sum, None
        new_max = torch.maximum(self.max, tile_max)
        shift = self.max - new_max
        old_scale, tile_weight = shift.exp(), ((tile_max - new_max) + tile_log_sum).exp()
        self.max, self.sum = new_max, self.sum * old_scale + tile_weight
        return old_scale, tile_weight, shift


def _blocks(num_rows, num_codes, max_elements):
    rows, codes = tile_shape(num_rows, num_codes, max_elements)
    return rows, codes, [(c, min(c + codes, num_codes)) for c in range(0, num_codes, codes)]


@torch.no_grad()
def forward_tiles(flat: Tensor, codebook: Tensor, temperature: float, with_entropy: bool,
                  max_elements: int) -> dict:
    """``index`` (first argmax of ``z C^T``) and, with_entropy, per row softmax(l / T)'s ``max_p``,
    ``log_sum_p`` and ``entropy``, and its column sums ``probs_sum``."""
    num_rows, num_codes = flat.shape[0], codebook.shape[0]
    rows, codes, code_blocks = _blocks(num_rows, num_codes, max_elements)
    logits_buf, probs_buf = flat.new_empty(rows * codes), flat.new_empty(rows * codes)
    best = flat.new_full((num_rows,), float("-inf"))
    index = torch.zeros(num_rows, dtype=torch.long, device=flat.device)
    stats = {"index": index, "max_p": [], "log_sum_p": [], "entropy": []}
    for r0 in range(0, num_rows, rows):
        z_rows = flat[r0:r0 + rows]
        n = z_rows.shape[0]
        ent, ent_acc = _Online(), None
        for c0, c1 in code_blocks:
            logits = torch.mm(z_rows, codebook[c0:c1].t(), out=logits_buf[:n * (c1 - c0)].view(n, c1 - c0))
            tile_max = logits.amax(dim=1)
            improved = (tile_max > best[r0:r0 + n]).nonzero().squeeze(1)
            if improved.numel():
                best[r0 + improved] = tile_max[improved]
                index[r0 + improved] = first_argmin(logits.index_select(0, improved).neg_()) + c0
            if not with_entropy:
                continue
            x = logits.div_(temperature)                              # as the official logits / temperature
            probs, x_max, log_sum = _tile_softmax(x, probs_buf[:x.numel()].view_as(x))
            # sum_k p_tile (x - x_max): this tile's share of sum_k exp(x - M) (x - M), up to its weight
            tile_dot = x.sub_(x_max[:, None]).mul_(probs).sum(dim=1)
            old_sum = ent.sum
            old, weight, shift = ent.merge(x_max, log_sum)
            if old is None:
                ent_acc = weight * tile_dot
            else:  # E' = a (E + (M - M') S) + w (dot + (m_t - M'))
                ent_acc = old * (ent_acc + shift * old_sum) + weight * (tile_dot + (x_max - ent.max))
        if with_entropy:
            log_sum = ent.sum.log()
            stats["max_p"].append(ent.max), stats["log_sum_p"].append(log_sum)
            stats["entropy"].append(log_sum - ent_acc / ent.sum)  # H = L - sum_k p_k (x_k - M), both >= 0
    if with_entropy:
        stats.update({key: torch.cat(stats[key]) for key in ("max_p", "log_sum_p", "entropy")})
        stats["probs_sum"] = _row_pass(flat, codebook, temperature, stats, None, None, max_elements)[0]
    return stats


def _row_pass(flat, codebook, temperature, stats, grad_path, upstream, max_elements):
    """One more pass over the tiles. With ``upstream`` None and no ``grad_path``: the column sums of
    ``p = softmax(l / T)`` ``(K,)``. Else per row: ``<p, upstream>`` (None without upstream), and with
    ``grad_path`` softmax(l)'s max, log-sum and ``<s, g C^T>`` (the same products as the backward's tiles)."""
    num_rows, num_codes = flat.shape[0], codebook.shape[0]
    rows, codes, code_blocks = _blocks(num_rows, num_codes, max_elements)
    bufs = [flat.new_empty(rows * codes) for _ in range(2 if grad_path is None else 3)]
    column_sums = grad_path is None and upstream is None
    result = flat.new_zeros(num_codes if column_sums else num_rows)
    soft_stats = [[], [], []]
    for r0 in range(0, num_rows, rows):
        z_rows = flat[r0:r0 + rows]
        n = z_rows.shape[0]
        sl = slice(r0, r0 + n)
        soft, soft_acc = _Online(), None
        for c0, c1 in code_blocks:
            shape = (n, c1 - c0)
            logits = torch.mm(z_rows, codebook[c0:c1].t(), out=bufs[0][:n * (c1 - c0)].view(shape))
            if grad_path is not None:
                probs, tile_max, log_sum = _tile_softmax(logits, bufs[1][:logits.numel()].view(shape))
                upstream_logits = torch.mm(grad_path[sl], codebook[c0:c1].t(), out=bufs[2][:logits.numel()].view(shape))
                tile_dot = upstream_logits.mul_(probs).sum(dim=1)
                old, weight, _ = soft.merge(tile_max, log_sum)
                soft_acc = weight * tile_dot if old is None else old * soft_acc + weight * tile_dot
            if column_sums or upstream is not None:
                x = logits.div_(temperature)
                probs, x_max, log_sum = _tile_softmax(x, bufs[1][:x.numel()].view(shape))
                weight = ((x_max - stats["max_p"][sl]) + (log_sum - stats["log_sum_p"][sl])).exp()
                if column_sums:
                    result[c0:c1].addmv_(probs.t(), weight)
                else:
                    result[sl].addcmul_(torch.mv(probs, upstream[c0:c1]), weight)
        if grad_path is not None:
            soft_stats[0].append(soft.max), soft_stats[1].append(soft.sum.log())
            soft_stats[2].append(soft_acc / soft.sum)
    if grad_path is None:
        return result, None
    return (result if upstream is not None else None), [torch.cat(parts) for parts in soft_stats]


@torch.no_grad()
def backward_tiles(flat, codebook, temperature, stats, grad_path, entropy_scale, grad_probs_sum, need_z,
                   need_codebook, max_elements):
    """``dz`` and ``dC`` of the soft path (upstream ``grad_path`` or None) and the entropy terms
    (``entropy_scale`` = minus the entropy sum's gradient, ``grad_probs_sum`` ``u`` or None; both None when off):

        G = s (g C^T - g.sC)  +  p (u - a log p - <p, u - a log p>) / T,   dz = G C,   dC = G^T z."""
    num_rows, num_codes = flat.shape[0], codebook.shape[0]
    rows, codes, code_blocks = _blocks(num_rows, num_codes, max_elements)
    with_entropy = entropy_scale is not None
    upstream = grad_probs_sum if with_entropy else None
    pu, soft_stats = _row_pass(flat, codebook, temperature, stats, grad_path, upstream, max_elements) \
        if (grad_path is not None or upstream is not None) else (None, None)
    if with_entropy:  # <p, u + e log p> = <p, u> - e H, e = entropy_scale
        row_const = -entropy_scale * stats["entropy"] + (0.0 if pu is None else pu)
        if grad_probs_sum is None:
            grad_probs_sum = flat.new_zeros(num_codes)
    if grad_path is not None:
        max_s, log_sum_s, alpha = soft_stats                          # alpha = <s, g C^T>
    bufs = [flat.new_empty(rows * codes) for _ in range(3)]
    grad_z = torch.zeros_like(flat) if need_z else None
    grad_codebook = torch.zeros_like(codebook) if need_codebook else None
    for r0 in range(0, num_rows, rows):
        z_rows = flat[r0:r0 + rows]
        n = z_rows.shape[0]
        sl = slice(r0, r0 + n)
        for c0, c1 in code_blocks:
            shape = (n, c1 - c0)
            logits = torch.mm(z_rows, codebook[c0:c1].t(), out=bufs[0][:n * (c1 - c0)].view(shape))
            grad = None
            if grad_path is not None:
                grad = torch.mm(grad_path[sl], codebook[c0:c1].t(), out=bufs[1][:logits.numel()].view(shape))
                probs, tile_max, log_sum = _tile_softmax(logits, bufs[2][:logits.numel()].view(shape))
                weight = ((tile_max - max_s[sl]) + (log_sum - log_sum_s[sl])).exp()
                grad.sub_(alpha[sl, None]).mul_(probs).mul_(weight[:, None])
            if with_entropy:
                x = logits.div_(temperature)
                probs, x_max, log_sum = _tile_softmax(x, bufs[2][:x.numel()].view(shape))
                weight = ((x_max - stats["max_p"][sl]) + (log_sum - stats["log_sum_p"][sl])).exp()
                # u + e log p - <p, u + e log p>, log p = (x - m_t) + ((m_t - M) - L)
                v = torch.add(grad_probs_sum[c0:c1], x.sub_(x_max[:, None]), alpha=entropy_scale, out=x)
                shift = (x_max - stats["max_p"][sl]) - stats["log_sum_p"][sl]        # small: no cancellation
                v.add_((entropy_scale * shift - row_const[sl])[:, None]).mul_(probs)
                if grad is None:
                    grad = v.mul_((weight / temperature)[:, None])
                else:
                    grad.addcmul_(v, (weight / temperature)[:, None])
            if need_z:
                grad_z[sl].addmm_(grad, codebook[c0:c1])
            if need_codebook:
                grad_codebook[c0:c1].addmm_(grad.t(), z_rows)
    return grad_z, grad_codebook
