"""Vector quantization with a learned codebook and straight-through gradients.

van den Oord et al., "Neural Discrete Representation Learning" (2017), Eq. (3):
    L = ||sg[z] - e||^2 + beta * ||z - sg[e]||^2,   beta = 0.25,
with the decoder's gradient copied from e to z (straight-through). Only the selected codes e receive a
gradient: the *disjoint codebook optimization* that SimVQ (Zhu et al. 2024, arXiv 2411.02038, Sec. 3) blames for collapse.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Quantizer, QuantizerOutput, check_choice, check_float, straight_through
from .registry import register
from .search import nearest_code


@register("vq")
class VectorQuantizer(Quantizer):
    """Learned codebook, straight-through estimator, codebook + commitment loss (VQ-VAE Eq. 3)."""

    learns_codebook_by_gradient = True

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, init: str = "uniform"):
        super().__init__(dim, codebook_size)
        self.beta = check_float("beta", beta, minimum=0.0)
        self.init = check_choice("init", init, ["uniform", "normal"])
        self.embedding = nn.Parameter(torch.empty(self.codebook_size, self.dim))
        if init == "uniform":
            # taming-transformers' VQGAN (the SimVQ paper's VQ baseline): U(-1/K, 1/K)
            nn.init.uniform_(self.embedding, -1.0 / self.codebook_size, 1.0 / self.codebook_size)
        else:
            nn.init.normal_(self.embedding, std=self.dim ** -0.5)

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
