"""Vector quantization whose codebook follows exponential moving averages (EMA-VQ).

van den Oord et al., "Neural Discrete Representation Learning" (2017), Appendix A.1, as used by
Razavi et al., "Generating Diverse High-Fidelity Images with VQ-VAE-2" (2019). For each code k, with
n_k the number of tokens assigned to it in the batch and s_k the sum of those tokens:

    N_k <- gamma * N_k + (1 - gamma) * n_k          (A.1, Eq. 6)
    m_k <- gamma * m_k + (1 - gamma) * s_k          (A.1, Eq. 7)
    e_k  = m_k / N~_k                               (A.1, Eq. 8)

with decay gamma = 0.99 and N~_k the Laplace-smoothed count (N_k + eps) / (n + K eps) * n, n = sum_k N_k,
eps = 1e-5 (the smoothing of DeepMind's Sonnet ``VectorQuantizerEMA``). The codebook is a buffer updated
in training mode only; it takes no optimizer gradient. The loss is the commitment term alone,
beta * ||z - sg(e)||^2 with beta = 0.25.

The averages start at N_k = 1 and m_k = e_k (the initial codebook), so that e_k = m_k / N_k holds before
the first update and a code no token selects stays where it is (up to the smoothing's global factor).
Sonnet starts N_k at 0 instead, which multiplies every unused code by about 1/eps at the first update.

``init`` is shared with ``vq`` (:func:`quantizers.vqvae.initial_codebook`); ``ema-simvq-init`` starts the codes
at SimVQ's W(C), so EMA's update can be compared with SimVQ's at the same initial code scale.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Quantizer, QuantizerOutput, check_choice, check_float, straight_through
from .registry import register, register_variant
from .search import nearest_code
from .vqvae import INITS, initial_codebook


@register("ema")
class EMAVectorQuantizer(Quantizer):
    """Codebook updated by EMA of assignment counts and sums (VQ-VAE App. A.1); commitment loss only."""

    learns_codebook_by_gradient = False
    learns_codebook_by_averages = True
    #: indices are the nearest codes of codebook() (benchmark.evaluation.probes reads it; see probes.searches_codebook)
    searches_codebook = True

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, decay: float = 0.99,
                 eps: float = 1e-5, init: str = "uniform"):
        super().__init__(dim, codebook_size)
        self.beta = check_float("beta", beta, minimum=0.0)
        self.decay = check_float("decay", decay, minimum=0.0, maximum=1.0, inclusive=False)
        self.eps = check_float("eps", eps, minimum=0.0, inclusive=False)
        self.init = check_choice("init", init, INITS)
        # the same start as `vq` (by default taming-transformers' U(-1/K, 1/K)), so the two differ only in
        # the update
        embedding = initial_codebook(init, self.codebook_size, self.dim)
        self.register_buffer("embedding", embedding)
        self.register_buffer("cluster_size", torch.ones(self.codebook_size))  # N_k
        self.register_buffer("embedding_sum", embedding.clone())              # m_k

    def codebook(self) -> Tensor:
        return self.embedding

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Codes for ``indices`` from the current codebook. In training mode, forward returns the codes
        from before its own EMA update, so call this before the next training forward or in eval mode."""
        return F.embedding(indices, self.embedding)

    @torch.no_grad()
    def update_codebook(self, flat: Tensor, indices: Tensor) -> None:
        """One EMA step from tokens ``flat`` ``(N, dim)`` assigned to ``indices`` ``(N,)`` (App. A.1)."""
        counts = torch.bincount(indices, minlength=self.codebook_size).to(self.cluster_size.dtype)
        sums = torch.zeros_like(self.embedding_sum).index_add_(0, indices, flat.to(self.embedding_sum.dtype))
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        self.embedding_sum.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        torch.div(self.embedding_sum, smoothed.unsqueeze(1), out=self.embedding)

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_input(z)
        flat = z.reshape(-1, self.dim)
        indices = nearest_code(flat, self.embedding)
        codes = F.embedding(indices, self.embedding).view_as(z)  # a copy: the update below cannot change it
        # the buffer carries no gradient, so sg(e) is implicit
        commitment_loss = self.beta * F.mse_loss(z, codes)
        if self.training:
            self.update_codebook(flat.detach(), indices)
        return QuantizerOutput(
            quantized=straight_through(z, codes),
            indices=indices.view(z.shape[:-1]),
            loss=commitment_loss,
            losses={"commitment": commitment_loss},
            codebook_size=self.codebook_size,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, beta={self.beta}, decay={self.decay}, eps={self.eps}, init={self.init!r}"


register_variant(
    "ema-simvq-init", "ema",
    "EMA-VQ with codes at SimVQ's initial scale (W(C) at init): separates the EMA update from the "
    "initial code scale",
    init="simvq",
)
