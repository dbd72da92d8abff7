"""What every quantizer shares: the result type, input checks, and the base class.

A quantizer maps encoder latents ``z`` of shape ``(batch, tokens, dim)`` to quantized latents of the
same shape (straight-through, so gradients reach ``z``), integer code indices ``(batch, tokens)``, and
its auxiliary losses. Every quantizer returns the same :class:`QuantizerOutput`, so the trainer, the
probes and the sweeps never special-case one method.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import Tensor, nn


@dataclass
class QuantizerOutput:
    """The one result type of every quantizer.

    quantized: ``(batch, tokens, dim)``, the codes with straight-through gradients to the input.
    indices: ``(batch, tokens)`` int64 code indices in ``[0, codebook_size)``.
    loss: scalar, the weighted sum of ``losses`` (what the trainer adds to the reconstruction loss).
    losses: each named, *weighted* auxiliary loss term (e.g. ``commitment``, ``codebook``, ``entropy``).
    codebook_size: the number of codes K this quantizer can emit.
    """

    quantized: Tensor
    indices: Tensor
    loss: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)
    codebook_size: int = 0


class Quantizer(nn.Module):
    """Base class. Subclasses implement :meth:`forward`, :meth:`indices_to_codes` and, where the method
    has one, :meth:`codebook` (the effective ``(K, dim)`` code vectors)."""

    #: True when codes move through the optimizer's gradients (VQ, SimVQ); False for EMA updates or
    #: fixed grids (FSQ, LFQ). The gradient-coverage probe reads it.
    learns_codebook_by_gradient: bool = False
    #: True when the forward pass itself moves the codes toward the tokens assigned to them (EMA-VQ).
    #: The codes such a step pulls toward data are exactly the codes assigned in the batch.
    learns_codebook_by_averages: bool = False
    #: True when the quantizer wants :meth:`initialize_from_data` called before training (VQGAN-LC).
    needs_data_init: bool = False

    def __init__(self, dim: int, codebook_size: int):
        super().__init__()
        self.dim = check_int("dim", dim, minimum=1)
        self.codebook_size = check_int("codebook_size", codebook_size, minimum=2)

    def initialize_from_data(self, images: Tensor, *, data_key: str, token_grid: int,
                             feature_extractor: Callable[[], nn.Module] | None = None,
                             cache_dir: Path | None = None) -> None:
        """Data-dependent initialization, called once by the trainer before the optimizer is built.

        images: the training images, uint8 ``(N, C, H, W)`` on the CPU.
        data_key: a key that identifies the data set (for caching).
        token_grid: the side of the encoder's token grid.
        feature_extractor: a zero-argument callable returning torch-fidelity's
            ``FeatureExtractorInceptionV3`` (the trainer injects its own; quantizers never import
            ``benchmark``), for quantizers that cluster pretrained features (VQGAN-LC).
        cache_dir: the folder under which a quantizer may cache what it computed (a ``pathlib.Path``).

        Default: nothing (most quantizers initialize from their seed)."""

    def training_stats(self) -> dict[str, float]:
        """What the last training forward did besides its losses, for the trainer to log as ``train/<name>``
        (e.g. the fraction of codes a dead-code restart moved). Default: nothing."""
        return {}

    def codebook(self) -> Tensor | None:
        """The effective code vectors ``(codebook_size, dim)``, or None where none exists."""
        return None

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Map indices ``(...)`` to the code vectors ``(..., dim)`` that :meth:`forward` emits."""
        raise NotImplementedError

    def check_indices(self, indices: Tensor) -> None:
        """Raise ValueError unless ``indices`` is an integer tensor with values in [0, codebook_size)."""
        if not isinstance(indices, Tensor) or indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise ValueError(f"indices must be an integer tensor; got {getattr(indices, 'dtype', type(indices))}")
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.codebook_size):
            raise ValueError(f"indices must lie in [0, {self.codebook_size}); got range "
                             f"[{int(indices.min())}, {int(indices.max())}]")

    def check_input(self, z: Tensor) -> None:
        """Raise ValueError for a wrong rank, a wrong last dim, or non-finite values."""
        if not isinstance(z, Tensor) or z.dim() != 3:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"z must have shape (batch, tokens, dim={self.dim}); got {shape}")
        if z.shape[-1] != self.dim:
            raise ValueError(f"z's last dimension must equal dim={self.dim}; got {z.shape[-1]}")
        if not torch.isfinite(z).all():
            raise ValueError("z contains NaN or infinite values; the encoder output is not finite")

    def extra_repr(self) -> str:
        return f"dim={self.dim}, codebook_size={self.codebook_size}"


def straight_through(z: Tensor, q: Tensor) -> Tensor:
    """Forward value exactly ``q``, gradient of the identity to ``z`` (van den Oord et al. 2017, Sec. 3.1).

    Written as ``sg(q) + (z - sg(z))`` rather than ``z + sg(q - z)``: the latter can differ from ``q``
    in the last bit, and then ``indices_to_codes`` would not reproduce the forward output exactly."""
    return q.detach() + (z - z.detach())


# ----------------------------------------------------------------------------- validation helpers
def check_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        isinstance(value, float) and value.is_integer()
    ):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}; got {value}")
    return value


def check_float(name: str, value, *, minimum: float | None = None, maximum: float | None = None,
                inclusive: bool = True) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number; got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    low_bad = minimum is not None and (value < minimum if inclusive else value <= minimum)
    high_bad = maximum is not None and (value > maximum if inclusive else value >= maximum)
    if low_bad or high_bad:
        bracket = ("[", "]") if inclusive else ("(", ")")
        lo = "-inf" if minimum is None else minimum
        hi = "inf" if maximum is None else maximum
        raise ValueError(f"{name} must be in {bracket[0]}{lo}, {hi}{bracket[1]}; got {value}")
    return value


def check_choice(name: str, value, choices: Iterable):
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {value!r}")
    return value
