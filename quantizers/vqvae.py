"""What the learned-codebook quantizers share: VQ-VAE's objective and the codebook initializations.

Its own module so that no quantizer imports another that imports it back: ``vq``, ``simvq``, ``ema``,
``restart``, ``rotation`` and ``dense_pull`` all import from here, and this module imports only
:mod:`quantizers.base`.

- :func:`vqvae_output`: van den Oord et al., "Neural Discrete Representation Learning" (2017), Eq. (3),
  ``L = ||sg[z] - e||^2 + beta * ||z - sg[e]||^2`` with straight-through (Sec. 3.1).
- :func:`initial_codebook`: ``uniform`` U(-1/K, 1/K) (taming-transformers' VQGAN, the SimVQ paper's VQ
  baseline), ``normal`` N(0, dim^-1/2), ``simvq`` SimVQ's effective codebook W(C) at initialization.
- :func:`simvq_basis_and_projection` / :func:`simvq_initial_codebook`: SimVQ's initial state, drawn here
  once for both :class:`~quantizers.simvq.SimVQ` and the ``*-simvq-init`` controls, so the same seed gives
  bit-identical codes (same draws, same order). SimVQ: Zhu, Li, Xin, Xia, Xu, arXiv 2411.02038; official
  code github.com/youngsheen/SimVQ, ``taming/modules/vqvae/quantize.py`` (``nn.init.normal_(std=e_dim**-0.5)``
  for C, ``nn.Linear(e_dim, e_dim)`` for W).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import QuantizerOutput, check_choice, straight_through

#: Codebook initializations shared by ``vq``, ``ema``, ``restart``, ``rotation`` and ``vq-dense-pull``.
INITS = ("uniform", "normal", "simvq")


def simvq_basis_and_projection(codebook_size: int, dim: int, bias: bool = True) -> tuple[Tensor, nn.Linear]:
    """SimVQ's initial state from the global RNG: C ``(K, dim)`` ~ N(0, dim^-1/2) (std dim^-1/2), then a
    fresh ``nn.Linear(dim, dim)`` W with PyTorch's default initialization, in that order."""
    basis = torch.randn(codebook_size, dim) * dim ** -0.5
    return basis, nn.Linear(dim, dim, bias=bias)


def simvq_initial_codebook(codebook_size: int, dim: int) -> Tensor:
    """What a fresh ``SimVQ(dim, codebook_size)``'s ``codebook()`` is, as a plain tensor: W(C), detached.
    Under the same RNG state the two are bit-identical (``init="simvq"`` uses this)."""
    basis, projection = simvq_basis_and_projection(codebook_size, dim)
    with torch.no_grad():
        return projection(basis)


def initial_codebook(init: str, codebook_size: int, dim: int) -> Tensor:
    """A fresh ``(codebook_size, dim)`` codebook (no autograd history), drawn from the global RNG.

    ``uniform``: U(-1/K, 1/K), taming-transformers' VQGAN (the SimVQ paper's VQ baseline).
    ``normal``: N(0, dim^-1/2) (std dim^-1/2), the distribution of SimVQ's frozen basis C.
    ``simvq``: W(C) as a fresh :class:`~quantizers.simvq.SimVQ` computes it at initialization (the same
    function draws C and W for both, in the same order)."""
    check_choice("init", init, INITS)
    if init == "simvq":
        return simvq_initial_codebook(codebook_size, dim)
    codebook = torch.empty(codebook_size, dim)
    if init == "uniform":
        codebook.uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
    else:
        codebook.normal_(std=dim ** -0.5)
    return codebook


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
