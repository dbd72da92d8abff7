"""Vector quantization with a learned codebook and straight-through gradients.

van den Oord et al., "Neural Discrete Representation Learning" (2017), Eq. (3):
    L = ||sg[z] - e||^2 + beta * ||z - sg[e]||^2,   beta = 0.25,
with the decoder's gradient copied from e to z (straight-through). Only the selected codes e receive a
gradient: the *disjoint codebook optimization* that SimVQ (Zhu et al. 2024, arXiv 2411.02038, Sec. 3) blames for collapse.

``init="simvq"`` starts the codebook exactly where SimVQ's effective codebook W(C) starts (same draws, same
order, so under the same seed the two initial codebooks are bit-identical; both are drawn by
:mod:`quantizers.vqvae`): vq's default U(-1/K, 1/K) codes have norm about sqrt(dim/3)/K (2e-4 at K = 2^14, dim 32), SimVQ's about 0.8. The variant
``vq-simvq-init`` separates SimVQ's reparameterization from its initial code scale.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import Quantizer, QuantizerOutput, check_choice, check_float
from .registry import register, register_variant
from .search import nearest_code
from .vqvae import INITS, initial_codebook, vqvae_output

__all__ = ["VectorQuantizer", "INITS", "initial_codebook", "vqvae_output"]  # the last three: from .vqvae


@register("vq")
class VectorQuantizer(Quantizer):
    """Learned codebook, straight-through estimator, codebook + commitment loss (VQ-VAE Eq. 3)."""

    learns_codebook_by_gradient = True
    #: indices are the nearest codes of codebook() (benchmark.evaluation.probes reads it; see probes.searches_codebook)
    searches_codebook = True

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, init: str = "uniform"):
        super().__init__(dim, codebook_size)
        self.beta = check_float("beta", beta, minimum=0.0)
        self.init = check_choice("init", init, INITS)
        # default U(-1/K, 1/K): taming-transformers' VQGAN, the SimVQ paper's VQ baseline
        self.embedding = nn.Parameter(initial_codebook(init, self.codebook_size, self.dim))

    def codebook(self) -> Tensor:
        return self.embedding

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        return F.embedding(indices, self.embedding)

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_input(z)
        flat = z.reshape(-1, self.dim)
        indices = nearest_code(flat, self.embedding)
        codes = F.embedding(indices, self.embedding).view_as(z)  # gradient reaches selected rows only
        return vqvae_output(z, codes, indices, beta=self.beta, codebook_size=self.codebook_size)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, beta={self.beta}, init={self.init!r}"


register_variant(
    "vq-simvq-init", "vq",
    "VQ with codes at SimVQ's initial scale (W(C) at init): separates the reparameterization from the "
    "initial code scale (U(-1/K, 1/K) is ~4000x smaller at K = 2^14)",
    init="simvq",
)

