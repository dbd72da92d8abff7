"""SimVQ: a frozen latent basis C and one learnable linear layer W; the codebook is W(C).

Zhu, Li, Xin, Xia, Xu, "Addressing Representation Collapse in Vector Quantized Models with One Linear
Layer" (arXiv 2411.02038), the method section. Vanilla VQ updates only the code vectors the
nearest-neighbour search selects (the disjoint codebook optimization the paper's analysis blames for
collapse). SimVQ reparameterizes every code as ``q_k = W(c_k)``: a gradient on any selected code moves
``W`` and so every effective code at once.

- C ``(K, dim)`` ~ N(0, dim^-1/2) and frozen (a buffer), as in the official code
  (github.com/youngsheen/SimVQ, ``taming/modules/vqvae/quantize.py``: ``nn.init.normal_(std=e_dim**-0.5)``,
  ``requires_grad = False``). ``train_codebook=True`` makes C a Parameter: the paper's ablation in which the
  basis is learned too.
- W is ``nn.Linear(dim, dim)`` with a bias and PyTorch's default initialization, exactly the official
  code's ``self.embedding_proj = nn.Linear(self.e_dim, self.e_dim)``.
- Loss: the VQ objective the paper keeps unchanged (its preliminaries restate VQ-VAE's Eq. 3) with the code
  ``q = W(c_k)``: ``||sg(z) - q||^2 + beta * ||z - sg(q)||^2``, beta = 0.25; straight-through to ``z``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Quantizer, QuantizerOutput, check_float
from .registry import register
from .search import nearest_code
from .vq import vqvae_output  # SimVQ keeps VQ-VAE's loss; only the codes change


@register("simvq")
class SimVQ(Quantizer):
    """Frozen basis C, learnable linear W, codes W(C) (Zhu et al. 2024, arXiv 2411.02038)."""

    learns_codebook_by_gradient = True

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, train_codebook: bool = False):
        super().__init__(dim, codebook_size)
        self.beta = check_float("beta", beta, minimum=0.0)
        if not isinstance(train_codebook, bool):
            raise ValueError(f"train_codebook must be True or False; got {train_codebook!r}")
        self.train_codebook = train_codebook
        basis = torch.randn(self.codebook_size, self.dim) * self.dim ** -0.5
        if train_codebook:
            self.basis = nn.Parameter(basis)
        else:
            self.register_buffer("basis", basis)
        self.projection = nn.Linear(self.dim, self.dim)

    def codebook(self) -> Tensor:
        """The effective codes W(C), ``(codebook_size, dim)``; differentiable w.r.t. W (and C if trained)."""
        return self.projection(self.basis)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        return F.embedding(indices, self.codebook())

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_input(z)
        flat = z.reshape(-1, self.dim)
        codebook = self.codebook()  # once per forward: the search and the gather share it
        indices = nearest_code(flat, codebook)
        # The gather's gradient lands on the selected rows of W(C); backpropagating through the linear
        # layer turns it into a gradient on W, which moves every effective code (the paper's point).
        codes = F.embedding(indices, codebook).view_as(z)
        return vqvae_output(z, codes, indices, beta=self.beta, codebook_size=self.codebook_size)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, beta={self.beta}, train_codebook={self.train_codebook}"
