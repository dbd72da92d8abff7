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

Controls (options, and variants registered below): ``train_projection=False`` freezes W too, so the codes
are a fixed random linear image of C (the reparameterization without its learning: ``simvq-frozen-w``);
``projection_bias=False`` drops W's bias, the one term that shifts every code by the same vector
(``simvq-no-bias``); ``train_codebook=True`` learns C as well (the paper's ablation: ``simvq-train-c``).
With W frozen and C trained, each code again moves only through its own row c_k: disjoint optimization.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import Quantizer, QuantizerOutput, check_float
from .registry import register, register_variant
from .search import nearest_code
# SimVQ keeps VQ-VAE's loss (only the codes change); its initial state is drawn by the function that the
# ``*-simvq-init`` controls use too, so one seed gives them bit-identical codebooks
from .vqvae import simvq_basis_and_projection, simvq_initial_codebook, vqvae_output

__all__ = ["SimVQ", "simvq_basis_and_projection", "simvq_initial_codebook"]


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False; got {value!r}")
    return value


@register("simvq")
class SimVQ(Quantizer):
    """Frozen basis C, learnable linear W, codes W(C) (Zhu et al. 2024, arXiv 2411.02038)."""

    #: set per instance: True unless both W and C are frozen (then the codebook is fixed and random)
    learns_codebook_by_gradient = True
    #: indices are the nearest codes of codebook() (benchmark.evaluation.probes reads it; see probes.searches_codebook)
    searches_codebook = True

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, train_codebook: bool = False,
                 train_projection: bool = True, projection_bias: bool = True):
        super().__init__(dim, codebook_size)
        self.beta = check_float("beta", beta, minimum=0.0)
        self.train_codebook = _check_bool("train_codebook", train_codebook)
        self.train_projection = _check_bool("train_projection", train_projection)
        self.projection_bias = _check_bool("projection_bias", projection_bias)
        basis, projection = simvq_basis_and_projection(self.codebook_size, self.dim, bias=projection_bias)
        if train_codebook:
            self.basis = nn.Parameter(basis)
        else:
            self.register_buffer("basis", basis)
        self.projection = projection  # registered after C, as before the controls existed (same layout)
        # frozen W stays a parameter (requires_grad False) so checkpoints keep one layout across variants
        self.projection.requires_grad_(train_projection)
        self.learns_codebook_by_gradient = train_projection or train_codebook

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
        return (f"{super().extra_repr()}, beta={self.beta}, train_codebook={self.train_codebook}, "
                f"train_projection={self.train_projection}, projection_bias={self.projection_bias}")


register_variant(
    "simvq-frozen-w", "simvq",
    "SimVQ with W frozen too: a fixed random codebook W(C), the reparameterization without its learning "
    "(separates 'codes are a linear image of C' from 'W learns')",
    train_projection=False,
)
register_variant(
    "simvq-train-c", "simvq",
    "SimVQ with C learned as well as W (the paper's ablation): does freezing the basis matter",
    train_codebook=True,
)
register_variant(
    "simvq-no-bias", "simvq",
    "SimVQ whose W has no bias: separates W's shared shift of every code from its linear map",
    projection_bias=False,
)
