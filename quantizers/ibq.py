"""Index Backpropagation Quantization (IBQ): straight-through on the categorical distribution over all
codes, so every code receives a gradient at every step.

Shi, Luo, Ge, Yang, Shan, Wang, "Scalable Image Tokenization with Index Backpropagation Quantization"
(arXiv 2412.02692), the method section (index backpropagation; double quantization loss). With logits
``l = z C^T`` over all K codes,

    soft = softmax(l),   hard = one_hot(argmax l),   ind = hard - sg(soft) + soft,   z_q = ind C,

so the forward value is the selected code and the gradient flows through ``soft`` into z and into *every*
code (the joint optimization of codebook and encoder that avoids VQ's partial updates). The loss is the
paper's double quantization loss plus VQ's terms and, as in every released config, MAGVIT-v2's entropy
penalty:

    L = ||z_q - z||^2                          ("double_quantization": z_q with IBQ's gradient)
      + ||sg(hard C) - z||^2                   ("commitment", weight 1)
      + beta * ||hard C - sg(z)||^2            ("codebook", beta = 0.25)
      + entropy_weight * (sample_minimization_weight * E[H(p)] - batch_maximization_weight * H(E[p]))
        with p = softmax(l / entropy_temperature)                                       ("entropy")

Read in the authors' code (github.com/TencentARC/SEED-Voken, commit b9a17ea):
``src/IBQ/modules/vqvae/quantize.py`` L429-466 (``IndexPropagationQuantize.forward``: logits L433, soft and
hard one-hot L439-448, the three quantization terms L453-454), L343-372 (``compute_entropy_loss``: the
``eps = 1e-5`` inside the batch entropy's log), L386 (codes ``nn.Embedding``'s default N(0, 1) init);
``configs/IBQ/gpu/imagenet_ibqgan_16384.yaml`` L51-64 (``entropy_loss_weight: 0.05``, temperature 0.01,
both entropy weights 1, beta 0.25; the 1024, 8192 and 262144 configs are the same), and
``src/IBQ/modules/losses/vqperceptual.py`` L181-182 (how the entropy weight is applied).

Option names are the official ones where it has them (``beta``, ``entropy_temperature``,
``sample_minimization_weight``, ``batch_maximization_weight``); ``entropy_weight`` is the loss config's
``entropy_loss_weight`` (0 switches the entropy terms off, the code's ``use_entropy_loss=False``).

How it is computed here (same values and gradients, less memory):

- The index is ``argmax_k z.c_k`` (a dot product, not the nearest code), found by the blocked
  :func:`~quantizers.search.nearest_code` with zero code norms: ``argmin_k (0 - 2 z.c_k)``.
- The output is ``C[index] + (soft - sg(soft)) sg(C)``: the second term is exactly zero in value, so the
  output equals the code to the bit, and its gradient is the official one (the official
  ``(hard - sg(soft) + soft) C`` gives C the gradient ``hard^T g`` plus a term whose value is zero).
- Everything N x K (logits, both softmaxes, the entropy terms) is computed in row chunks of at most
  :data:`CHUNK_ELEMENTS` values under activation checkpointing: backward recomputes a chunk instead of
  storing it, so memory is O(chunk x K + K x dim) instead of several N x K matrices. The work stays N x K x
  dim: IBQ is N x K by nature.

Measured here (``vqbench bench``'s worker: CPU, one torch thread on the shared 2-core machine, fp32,
N = 8192 tokens, dim 64, default options, forward + backward of ``quantized.square().mean() + loss``; peak
resident memory above the process's baseline; an official-style version with full N x K tensors beside it):

    K        this module (chunked)      official formulation (N x K tensors)
    2^12     2.7 s,  +0.60 GiB          2.5 s,  +1.19 GiB
    2^14     11 s,   +0.59 GiB          8.1 s,  +4.58 GiB
    2^16     48 s,   +0.64 GiB          not run: +18.1 GiB extrapolated (+0.28 MiB per code, linear in K)

The official formulation passes 24 GiB at about K = 87,000 (between 2^16 and 2^17) for this N. Here memory
stays flat until the K x dim state dominates (parameter, gradient, two Adam moments and a few K-sized
temporaries, about 2 KiB per code at dim 64): 24 GiB at roughly K = 10^7. Time is the real limit: it grows
linearly in K (recomputing each chunk in backward costs 10-40 % over the official version), about 50 s per
step at 2^16 on one core, so IBQ at large K needs an accelerator. Timings vary by up to 2x with the load
other users put on the machine; the memory figures do not.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .base import Quantizer, QuantizerOutput, check_float
from .registry import register
from .search import nearest_code

#: Values per (rows, K) chunk tensor: 2^24 fp32 = 64 MiB, a handful alive at once. Above glibc's largest
#: mmap threshold (32 MiB), so every chunk tensor is returned to the OS when freed; 16 MiB chunks were
#: recycled through the heap and fragmented it (peak resident memory then grew with K again).
CHUNK_ELEMENTS = 1 << 24
#: inside the batch entropy's log, as in the official ``compute_entropy_loss``
BATCH_ENTROPY_EPS = 1e-5


def _chunk_terms(z_rows: Tensor, codebook: Tensor, temperature: float, with_index: bool, with_entropy: bool):
    """For rows ``z_rows`` ``(n, d)``: IBQ's zero-valued soft path ``(soft - sg(soft)) sg(C)`` ``(n, d)``, the
    summed per-row entropy of ``softmax(l / temperature)`` (scalar) and that softmax's column sums ``(K,)``."""
    logits = z_rows @ codebook.t()
    index_path = sample_entropy = probs_sum = None
    if with_index:
        soft_codes = logits.softmax(dim=-1) @ codebook.detach()
        # (soft - sg(soft)) sg(C), written after the product: zero in value, the same gradient, and (unlike
        # subtracting the detached (n, K) softmax) nothing (n, K) outlives the checkpointed chunk
        index_path = soft_codes - soft_codes.detach()
    if with_entropy:
        log_probs = (logits / temperature).log_softmax(dim=-1)
        probs = log_probs.exp()
        sample_entropy = -(probs * log_probs).sum()
        probs_sum = probs.sum(dim=0)
    return index_path, sample_entropy, probs_sum


@register("ibq")
class IndexBackpropagationQuantizer(Quantizer):
    """Straight-through on softmax(z C^T) over all codes: every code gets a gradient (IBQ, Shi et al. 2024)."""

    learns_codebook_by_gradient = True
    #: indices maximize z.c, they are not the nearest rows of codebook() (benchmark.probes reads this)
    searches_codebook = False

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, entropy_weight: float = 0.05,
                 entropy_temperature: float = 0.01, sample_minimization_weight: float = 1.0,
                 batch_maximization_weight: float = 1.0):
        super().__init__(dim, codebook_size)
        self.beta = check_float("beta", beta, minimum=0.0)
        self.entropy_weight = check_float("entropy_weight", entropy_weight, minimum=0.0)
        self.entropy_temperature = check_float("entropy_temperature", entropy_temperature, minimum=0.0,
                                               inclusive=False)
        self.sample_minimization_weight = check_float("sample_minimization_weight", sample_minimization_weight,
                                                      minimum=0.0)
        self.batch_maximization_weight = check_float("batch_maximization_weight", batch_maximization_weight,
                                                     minimum=0.0)
        self.embedding = nn.Parameter(torch.randn(self.codebook_size, self.dim))  # nn.Embedding's N(0, 1)

    def codebook(self) -> Tensor:
        return self.embedding

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        return F.embedding(indices, self.embedding)

    def soft_terms(self, flat: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """Chunked over rows of ``flat`` ``(N, dim)``: the soft path ``(N, dim)`` (None without autograd),
        the mean per-token entropy and the mean code distribution ``(K,)`` (None when entropy is off)."""
        codebook = self.embedding
        with_index = torch.is_grad_enabled() and (flat.requires_grad or codebook.requires_grad)
        with_entropy = self.entropy_weight > 0
        if not (with_index or with_entropy):
            return None, None, None
        rows = max(1, CHUNK_ELEMENTS // self.codebook_size)
        # with more than one chunk, backward recomputes each chunk instead of keeping its (rows, K) tensors
        recompute = with_index and rows < flat.shape[0]
        paths, sample_entropy, probs_sum = [], 0.0, 0.0
        for start in range(0, flat.shape[0], rows):
            args = (flat[start:start + rows], codebook, self.entropy_temperature, with_index, with_entropy)
            if recompute:
                path, entropy_sum, column_sum = checkpoint(_chunk_terms, *args, use_reentrant=False)
            else:
                path, entropy_sum, column_sum = _chunk_terms(*args)
            if with_index:
                paths.append(path)
            if with_entropy:
                sample_entropy = sample_entropy + entropy_sum
                probs_sum = probs_sum + column_sum
        index_path = torch.cat(paths) if with_index else None
        if not with_entropy:
            return index_path, None, None
        return index_path, sample_entropy / flat.shape[0], probs_sum / flat.shape[0]

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_input(z)
        flat = z.reshape(-1, self.dim)
        codebook = self.embedding
        indices = nearest_code(flat, codebook, codebook_sq_norms=codebook.new_zeros(self.codebook_size))
        hard = F.embedding(indices, codebook)                      # hard one-hot times C: gradient hard^T g
        index_path, sample_entropy, mean_probs = self.soft_terms(flat)
        quantized = hard if index_path is None else hard + index_path  # value exactly hard
        quantized, hard = quantized.view_as(z), hard.view_as(z)

        losses = {
            "double_quantization": F.mse_loss(quantized, z),
            "commitment": F.mse_loss(z, hard.detach()),
            "codebook": self.beta * F.mse_loss(hard, z.detach()),
        }
        if sample_entropy is not None:
            batch_entropy = -(mean_probs * (mean_probs + BATCH_ENTROPY_EPS).log()).sum()
            losses["entropy"] = self.entropy_weight * (self.sample_minimization_weight * sample_entropy
                                                       - self.batch_maximization_weight * batch_entropy)
        return QuantizerOutput(
            quantized=quantized,
            indices=indices.view(z.shape[:-1]),
            loss=sum(losses.values()),
            losses=losses,
            codebook_size=self.codebook_size,
        )

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, beta={self.beta}, entropy_weight={self.entropy_weight}, "
                f"entropy_temperature={self.entropy_temperature}")
