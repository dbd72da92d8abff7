"""The rejected tiled IBQ: :class:`quantizers.ibq.IndexBackpropagationQuantizer` with its N x K terms computed
by the cache-sized tiles of ``ibq_tiles.py`` (the index search fused into the first logits pass) instead of
row chunks. Same values; 8 N x K x d GEMMs a step instead of 6; measured no faster (../README.md).
Only the soft terms differ: the output and the losses are the quantizer's own :meth:`assemble`.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ibq_tiles import backward_tiles, forward_tiles
from quantizers.base import QuantizerOutput
from quantizers.ibq import CHUNK_ELEMENTS, IndexBackpropagationQuantizer


class _TiledSoftTerms(torch.autograd.Function):
    """quantizers.ibq._SoftTerms' outputs plus the indices (the first argmax of ``l``, found in the same pass,
    not differentiable), tile by tile; backward forms the same logit gradient G from the forward's row
    statistics, then ``dz = G C`` and ``dC += G^T z``."""

    @staticmethod
    def forward(ctx, flat: Tensor, codebook: Tensor, temperature: float, with_entropy: bool):
        stats = forward_tiles(flat, codebook, temperature, with_entropy, CHUNK_ELEMENTS)
        if with_entropy:
            sample_entropy, probs_sum = stats["entropy"].sum(), stats["probs_sum"]
        else:
            sample_entropy, probs_sum = flat.new_zeros(()), flat.new_zeros(codebook.shape[0])
        ctx.save_for_backward(flat, codebook)
        ctx.stats, ctx.temperature, ctx.with_entropy = stats, temperature, with_entropy
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(stats["index"])
        return flat.new_zeros(flat.shape), sample_entropy, probs_sum, stats["index"]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_path: Tensor | None, grad_entropy: Tensor | None, grad_probs_sum: Tensor | None,
                 _grad_index=None):
        flat, codebook = ctx.saved_tensors
        with_entropy = ctx.with_entropy and (grad_entropy is not None or grad_probs_sum is not None)
        need_z, need_codebook = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if (grad_path is None and not with_entropy) or not (need_z or need_codebook):
            return None, None, None, None
        entropy_scale = None if not with_entropy else 0.0 if grad_entropy is None else -float(grad_entropy)
        grad_z, grad_codebook = backward_tiles(flat, codebook, ctx.temperature, ctx.stats, grad_path,
                                               entropy_scale, grad_probs_sum, need_z, need_codebook,
                                               CHUNK_ELEMENTS)
        return grad_z, grad_codebook, None, None


class TiledIBQ(IndexBackpropagationQuantizer):
    """IBQ with tiled soft terms and the search fused into them (unregistered: a measured, rejected attempt)."""

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_input(z)
        flat = z.reshape(-1, self.dim)
        codebook = self.embedding
        with_index = torch.is_grad_enabled() and (flat.requires_grad or codebook.requires_grad)
        with_entropy = self.entropy_weight > 0
        if not (with_index or with_entropy):   # no N x K pass at all: the quantizer's own search
            return super().forward(z)
        if with_index:
            index_path, sample_entropy, probs_sum, indices = _TiledSoftTerms.apply(
                flat, codebook, self.entropy_temperature, with_entropy)
        else:
            index_path = None
            stats = forward_tiles(flat, codebook, self.entropy_temperature, True, CHUNK_ELEMENTS)
            sample_entropy, probs_sum, indices = stats["entropy"].sum(), stats["probs_sum"], stats["index"]
        if not with_entropy:
            return self.assemble(z, indices, index_path, None, None)
        return self.assemble(z, indices, index_path, sample_entropy / flat.shape[0], probs_sum / flat.shape[0])
