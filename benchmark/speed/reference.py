"""Adapters that make vector-quantize-pytorch (lucidrains, version 1.32) comparable in ``vqbench bench``.

Each reference class returns a differently shaped tuple; an adapter builds the class at the same
``(dim, codebook_size)`` as our quantizer and turns one call into ``(quantized, aux_loss)`` so the
benchmark times the same forward + backward of ``quantized.square().mean() + aux_loss`` for everyone.

The keyword arguments are chosen to match *our* method, not to make the reference slow: where the
reference offers a cheaper equivalent (plain straight-through instead of the rotation trick) we take
it. They are recorded with every measurement (:data:`REFERENCE_KWARGS`).

The package is an optional extra (``pip install vqbench[bench]``); it is imported only inside
:func:`build_reference`, so vqbench works without it.
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

#: our registry name -> reference implementation id benchmarked beside it
REFERENCE_FOR_METHOD: dict[str, str] = {
    "vq": "ref:VectorQuantize",
    "ema": "ref:VectorQuantize-EMA",
    "simvq": "ref:SimVQ",
    "fsq": "ref:FSQ",
    "lfq": "ref:LFQ",
    # issue 13: where vector-quantize-pytorch 1.32 has the method (it has neither IBQ nor VQGAN-LC)
    "fc": "ref:VectorQuantize-cosine-lowdim",
    "restart": "ref:VectorQuantize-dead-code",
    "rotation": "ref:VectorQuantize-rotation",
    "bsq": "ref:LFQ-spherical",
}

#: The constructor keywords used for each reference (besides dim and the codebook size / levels).
REFERENCE_KWARGS: dict[str, dict] = {
    # learned codebook trained by gradients, no EMA (our "vq"); rotation_trick=False gives the plain
    # straight-through estimator that VQ-VAE and our vq use (the rotation trick is extra work).
    "ref:VectorQuantize": {"learnable_codebook": True, "ema_update": False, "rotation_trick": False},
    # EMA codebook (the library's default update, decay 0.8), straight-through like our "ema".
    "ref:VectorQuantize-EMA": {"ema_update": True, "rotation_trick": False},
    # SimVQ: frozen random codebook C times a learned linear W (Zhu et al. 2024, arXiv 2411.02038).
    "ref:SimVQ": {"rotation_trick": False},
    # FSQ: levels with the same product as K (our quantizers.fsq.fsq_levels_for).
    "ref:FSQ": {},
    # LFQ: codebook_size=K (log2 K binary dims, projections when dim != log2 K), default entropy loss.
    "ref:LFQ": {},
    # VQGAN-FC (our "fc"): project to an 8-d lookup space, l2-normalized (cosine) codes, project back. The
    # library refuses a learnable cosine codebook (VectorQuantize asserts `not (use_cosine_sim and
    # learnable_codebook)`), so its codes follow its default EMA update; search and projections match ours.
    "ref:VectorQuantize-cosine-lowdim": {"codebook_dim": 8, "use_cosine_sim": True, "rotation_trick": False},
    # dead-code restart (our "restart"): our "vq" plus the library's replace/expire_codes_, which ours
    # follows. The library's threshold counts tokens per batch (2, its default); ours is relative to the
    # mean usage N/K (0.25 N/K): the same code path, so the timing compares; the restart counts differ.
    "ref:VectorQuantize-dead-code": {"learnable_codebook": True, "ema_update": False, "rotation_trick": False,
                                     "threshold_ema_dead_code": 2},
    # the rotation trick (our "rotation"): our "vq" with the library's rotate_to instead of straight-through.
    "ref:VectorQuantize-rotation": {"learnable_codebook": True, "ema_update": False, "rotation_trick": True},
    # BSQ (our "bsq"): LFQ on the unit sphere (spherical=True, arXiv 2406.07548). Its entropy term is over
    # all K codes (N x K); ours is the paper's factorized one by default.
    "ref:LFQ-spherical": {"spherical": True},
}

REFERENCE_PACKAGE = "vector_quantize_pytorch"


class ReferenceUnsupported(ValueError):
    """The reference class cannot be configured to match this (dim, codebook_size)."""


def reference_available() -> bool:
    """Whether vector-quantize-pytorch is importable (without importing it)."""
    return importlib.util.find_spec(REFERENCE_PACKAGE) is not None


def reference_version() -> str | None:
    if not reference_available():
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vector-quantize-pytorch")
    except PackageNotFoundError:
        return None


@dataclass
class ReferenceStep:
    """A built reference module, the call that returns ``(quantized, aux_loss)`` for ``z`` of shape
    ``(batch, tokens, dim)``, and the number of codes it can emit (FSQ: the product of its levels)."""

    module: nn.Module
    call: Callable[[Tensor], tuple[Tensor, Tensor]]
    effective_codebook_size: int


def build_reference(implementation: str, dim: int, codebook_size: int) -> ReferenceStep:
    """Build the reference ``implementation`` (a value of :data:`REFERENCE_FOR_METHOD`) at ``dim`` and
    ``codebook_size``. Raises :class:`ReferenceUnsupported` when it cannot match these settings and
    ValueError for an unknown implementation."""
    if implementation not in REFERENCE_KWARGS:
        raise ValueError(f"implementation must be one of {sorted(REFERENCE_KWARGS)}; got {implementation!r}")
    if not reference_available():
        raise ReferenceUnsupported("vector-quantize-pytorch is not installed (pip install 'vqbench[bench]')")
    import vector_quantize_pytorch as vqp

    kwargs = REFERENCE_KWARGS[implementation]
    effective_codebook_size = codebook_size
    if implementation in ("ref:VectorQuantize", "ref:VectorQuantize-EMA", "ref:VectorQuantize-cosine-lowdim",
                          "ref:VectorQuantize-dead-code", "ref:VectorQuantize-rotation"):
        module = vqp.VectorQuantize(dim=dim, codebook_size=codebook_size, **kwargs)

        def call(z: Tensor) -> tuple[Tensor, Tensor]:
            quantized, _indices, loss = module(z)
            return quantized, loss

    elif implementation == "ref:SimVQ":
        module = vqp.SimVQ(dim=dim, codebook_size=codebook_size, **kwargs)

        def call(z: Tensor) -> tuple[Tensor, Tensor]:
            quantized, _indices, loss = module(z)
            return quantized, loss

    elif implementation == "ref:FSQ":
        levels = _fsq_levels(codebook_size)
        effective_codebook_size = math.prod(levels)
        module = vqp.FSQ(levels=levels, dim=dim, **kwargs)

        def call(z: Tensor) -> tuple[Tensor, Tensor]:
            quantized, _indices = module(z)
            return quantized, quantized.new_zeros(())  # FSQ has no auxiliary loss

    else:  # ref:LFQ, ref:LFQ-spherical
        if not math.log2(codebook_size).is_integer():
            raise ReferenceUnsupported(f"LFQ needs a power-of-two codebook_size; got {codebook_size}")
        module = vqp.LFQ(dim=dim, codebook_size=codebook_size, **kwargs)

        def call(z: Tensor) -> tuple[Tensor, Tensor]:
            quantized, _indices, aux_loss = module(z)
            return quantized, aux_loss

    module.train()
    return ReferenceStep(module=module, call=call, effective_codebook_size=effective_codebook_size)


def _fsq_levels(codebook_size: int) -> list[int]:
    """The levels our FSQ uses for ``codebook_size`` (quantizers.fsq.fsq_levels_for), so both quantize
    onto the same grid (its size, the product of the levels, can differ slightly from the request:
    2^10 -> 8*5*5*5 = 1,000). The reference refuses a level of 2 unless ``preserve_symmetry`` is on
    (which changes the method), so such level sets are reported as unsupported rather than altered."""
    try:
        from quantizers.fsq import fsq_levels_for
    except ImportError as error:
        raise ReferenceUnsupported(f"quantizers.fsq.fsq_levels_for is not available ({error})") from None
    try:
        levels = [int(level) for level in fsq_levels_for(codebook_size)]
    except ValueError as error:
        raise ReferenceUnsupported(str(error)) from None
    if any(level == 2 for level in levels):
        raise ReferenceUnsupported(
            f"reference FSQ rejects level 2 without preserve_symmetry; levels for K={codebook_size}: {levels}"
        )
    return levels

