"""VQGAN-FC: factorized, l2-normalized codes (the codebook of ViT-VQGAN).

Yu et al., "Vector-quantized Image Modeling with Improved VQGAN" (ViT-VQGAN, arXiv 2110.04627), Sec. 3.2
"Codebook learning": a linear projection maps the encoder output to a low-dimensional lookup space
(``lookup_dim``; the SimVQ paper's VQGAN-FC row uses 8), both the projected latent and every code are
l2-normalized, the nearest code is searched there (on the unit sphere, Euclidean distance = cosine
distance), and a second linear projection maps the selected code back to ``dim``:

    z_low = normalize(W_in z),   e_k = normalize(E_k),   k = argmin_k ||z_low - e_k||^2,
    quantized = W_out(e_k)   (straight-through from z_low to e_k),
    L = ||sg(z_low) - e_k||^2 + beta * ||z_low - sg(e_k)||^2,   beta = 0.25 (VQ-VAE Eq. 3, in lookup space).

Google did not release ViT-VQGAN's code. Choices the paper leaves open, and where they come from:

- Code init N(0, 1), as the widely used re-implementation does (thuanz123/enhancing-transformers, the one
  the rotation-trick authors build on: ``enhancing/modules/stage1/quantizers.py`` L33; commit e1c185d).
  Only directions matter after the normalization.
- Straight-through from the *normalized* latent ``z_low`` (the paper calls the normalized vector the
  encoded latent, and vector-quantize-pytorch's ``use_cosine_sim`` does the same). enhancing-transformers
  (L61 there) copies the gradient to the unnormalized projection instead; the loss there (L89-90) is the
  same as here, in normalized space with beta on the commitment term.
- ``W_in`` and ``W_out`` are ``nn.Linear`` with bias and PyTorch's default initialization (in ViT-VQGAN
  they belong to the encoder/decoder; here they belong to the quantizer, so every method gets the same
  backbone).

``codebook()`` returns ``W_out(normalize(E))``: the ``(K, dim)`` vectors the decoder actually receives.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Quantizer, QuantizerOutput, check_float, check_int, straight_through
from .registry import register
from .search import nearest_code


@register("fc")
class FactorizedCodesQuantizer(Quantizer):
    """Factorized l2-normalized codes in a low-dim lookup space (ViT-VQGAN Sec. 3.2, "VQGAN-FC")."""

    learns_codebook_by_gradient = True
    #: the search runs in lookup space, so indices are not the nearest rows of codebook() (benchmark.evaluation.probes)
    searches_codebook = False

    def __init__(self, dim: int, codebook_size: int, lookup_dim: int = 8, beta: float = 0.25):
        super().__init__(dim, codebook_size)
        self.lookup_dim = check_int("lookup_dim", lookup_dim, minimum=1)
        self.beta = check_float("beta", beta, minimum=0.0)
        self.embedding = nn.Parameter(torch.randn(self.codebook_size, self.lookup_dim))
        self.project_in = nn.Linear(self.dim, self.lookup_dim)
        self.project_out = nn.Linear(self.lookup_dim, self.dim)

    def normalized_codes(self) -> Tensor:
        """The unit-norm codes in lookup space, ``(codebook_size, lookup_dim)``."""
        return F.normalize(self.embedding, dim=-1)

    def codebook(self) -> Tensor:
        """Effective codes in the latent space: ``W_out(normalize(E))``, ``(codebook_size, dim)``."""
        return self.project_out(self.normalized_codes())

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        self.check_indices(indices)
        # the same ops, on the same shape, as forward: bit-identical to its output
        return self.project_out(F.embedding(indices, self.normalized_codes()))

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_input(z)
        latent = F.normalize(self.project_in(z), dim=-1)                 # z_low on the unit sphere
        codes = self.normalized_codes()
        indices = nearest_code(latent.reshape(-1, self.lookup_dim), codes)
        selected = F.embedding(indices, codes).view_as(latent)           # gradient: selected rows of E
        codebook_loss = F.mse_loss(selected, latent.detach())
        commitment_loss = self.beta * F.mse_loss(latent, selected.detach())
        return QuantizerOutput(
            quantized=self.project_out(straight_through(latent, selected)),
            indices=indices.view(z.shape[:-1]),
            loss=codebook_loss + commitment_loss,
            losses={"codebook": codebook_loss, "commitment": commitment_loss},
            codebook_size=self.codebook_size,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lookup_dim={self.lookup_dim}, beta={self.beta}"
