"""Vector quantization with a learned codebook and straight-through gradients.

van den Oord et al., "Neural Discrete Representation Learning" (2017), Eq. (3):
    L = ||sg[z] - e||^2 + beta * ||z - sg[e]||^2,   beta = 0.25,
with the decoder's gradient copied from e to z (straight-through). Only the selected codes e receive a
gradient: the *disjoint codebook optimization* that SimVQ (Zhu et al. 2024, arXiv 2411.02038, Sec. 3) blames for collapse.

``init="simvq"`` starts the codebook exactly where SimVQ's effective codebook W(C) starts (same draws, same
order, so under the same seed the two initial codebooks are bit-identical): vq's default U(-1/K, 1/K)
codes have norm about sqrt(dim/3)/K (2e-4 at K = 2^14, dim 32), SimVQ's about 0.8. The variant
``vq-simvq-init`` separates SimVQ's reparameterization from its initial code scale.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Quantizer, QuantizerOutput, check_choice, check_float, straight_through
from .registry import register, register_variant
from .search import nearest_code

#: Codebook initializations shared by ``vq`` and ``ema``.
INITS = ("uniform", "normal", "simvq")


def initial_codebook(init: str, codebook_size: int, dim: int) -> Tensor:
    """A fresh ``(codebook_size, dim)`` codebook (no autograd history), drawn from the global RNG.

    ``uniform``: U(-1/K, 1/K), taming-transformers' VQGAN (the SimVQ paper's VQ baseline).
    ``normal``: N(0, dim^-1/2) (std dim^-1/2), the distribution of SimVQ's frozen basis C.
    ``simvq``: W(C) as a fresh :class:`~quantizers.simvq.SimVQ` computes it at initialization (the same
    function draws C and W for both, in the same order)."""
    check_choice("init", init, INITS)
    if init == "simvq":
        from .simvq import simvq_initial_codebook  # not at the top: simvq imports this module
        return simvq_initial_codebook(codebook_size, dim)
    codebook = torch.empty(codebook_size, dim)
    if init == "uniform":
        codebook.uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
    else:
        codebook.normal_(std=dim ** -0.5)
    return codebook


@register("vq")
class VectorQuantizer(Quantizer):
    """Learned codebook, straight-through estimator, codebook + commitment loss (VQ-VAE Eq. 3)."""

    learns_codebook_by_gradient = True
    #: indices are the nearest codes of codebook() (benchmark.probes reads it; see probes.searches_codebook)
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


def vqvae_output(z: Tensor, codes: Tensor, indices: Tensor, *, beta: float, codebook_size: int) -> QuantizerOutput:
    """The VQ-VAE objective (Eq. 3) for codes ``(batch, tokens, dim)`` selected for ``z``:
    ``||sg(z) - e||^2`` moves the codes, ``beta * ||z - sg(e)||^2`` commits the encoder; straight-through."""
    codebook_loss = F.mse_loss(codes, z.detach())
    commitment_loss = beta * F.mse_loss(z, codes.detach())
    return QuantizerOutput(
        quantized=straight_through(z, codes),
        indices=indices.view(z.shape[:-1]),
        loss=codebook_loss + commitment_loss,
        losses={"codebook": codebook_loss, "commitment": commitment_loss},
        codebook_size=codebook_size,
    )
