"""Finite scalar quantization (FSQ).

Mentzer et al., "Finite Scalar Quantization: VQ-VAE Made Simple" (2023, arXiv 2309.15505), Sec. 3:
project the latent to ``d = len(levels)`` channels, bound channel ``i`` to ``L_i`` values with

    f(z) = tanh(z + shift) * half_l - offset,   half_l = (L - 1)(1 - eps) / 2,
    offset = 0.5 if L is even else 0,            shift = tan(offset / half_l),   eps = 1e-3

(the paper's appendix A.1 code), round with a straight-through gradient, and divide by ``L // 2`` so the
codes lie in [-1, 1]. The implicit codebook is the grid ``prod_i {L_i values}``: there is nothing to
learn and nothing to collapse, so FSQ has no auxiliary loss. ``shift`` uses ``tan`` as the paper's code
does (``atanh`` would centre ``f(0)`` exactly; the two differ by O((offset/half_l)^3), and ``tan`` stays
defined for L = 2, where ``offset / half_l > 1``).

Level lists come from the paper's Table 1 ("recommended sets of FSQ levels") where it lists the size;
:func:`fsq_levels_for` documents the rule used elsewhere.
"""
from __future__ import annotations

import functools
import itertools
import math

import torch
from torch import Tensor, nn

from .base import Quantizer, QuantizerOutput, check_int, straight_through
from .registry import register

#: FSQ paper, Table 1: target codebook size -> recommended levels (used verbatim).
PAPER_LEVELS: dict[int, tuple[int, ...]] = {
    2**8: (8, 6, 5),
    2**10: (8, 5, 5, 5),
    2**12: (7, 5, 5, 5, 5),
    2**14: (8, 8, 8, 6, 5),
    2**16: (8, 8, 8, 5, 5, 5),
}
#: Every level in the paper's recommendations lies in 5..8; the rule for unlisted sizes keeps to them.
EXTENSION_LEVELS = (8, 7, 6, 5)
#: The paper's own lists miss their target by up to 6.8% (7*5^4 = 4375 for 4096); we accept up to 10%.
SIZE_TOLERANCE = 0.10
#: Bound margin from the paper's code, so the rounded values never reach the next level.
BOUND_EPS = 1e-3


def fsq_levels_for(codebook_size: int) -> list[int]:
    """Levels for a requested codebook size.

    Sizes in the FSQ paper's Table 1 (2^8, 2^10, 2^12, 2^14, 2^16) get the paper's list verbatim.
    Any other size gets our extension, not the paper's: among non-increasing lists whose levels are all
    in 5..8 (the range of every list the paper recommends), the one whose product is nearest to the
    request in log ratio, ties broken by fewer channels, then larger leading levels. The result must
    lie within ``SIZE_TOLERANCE`` (10%) of the request; otherwise ``ValueError`` names the sizes that
    are accepted (5-8, 23-71, 114-565 and every size >= 569; so 4 and 16 are rejected).
    Examples: 2^9 -> [8, 8, 8]; 2^13 -> [8, 8, 5, 5, 5] (8,000); 2^15 -> [8, 8, 8, 8, 8];
    2^18 -> [8, 8, 8, 8, 8, 8] (exactly 262,144). Applied to the paper's sizes this rule would not
    always reproduce its table (2^12 -> [8, 8, 8, 8]), which is why listed sizes use the table.
    """
    requested = check_int("codebook_size", codebook_size, minimum=2)
    if requested in PAPER_LEVELS:
        return list(PAPER_LEVELS[requested])
    best = _nearest_level_list(requested)
    if best is None or abs(math.prod(best) / requested - 1) > SIZE_TOLERANCE:
        raise ValueError(
            f"codebook_size={requested} has no FSQ level list within {SIZE_TOLERANCE:.0%}: "
            f"accepted sizes are {_accepted_sizes_text()}, or pass levels=[...] explicitly"
        )
    return list(best)


@functools.lru_cache(maxsize=None)
def _nearest_level_list(requested: int) -> tuple[int, ...] | None:
    best, best_key = None, None
    # Beyond this many channels even all-5 lists overshoot the tolerance.
    max_channels = max(1, math.ceil(math.log(requested * (1 + SIZE_TOLERANCE)) / math.log(min(EXTENSION_LEVELS))))
    for channels in range(1, max_channels + 1):
        # combinations_with_replacement of a descending tuple yields non-increasing lists.
        for levels in itertools.combinations_with_replacement(EXTENSION_LEVELS, channels):
            key = (abs(math.log(math.prod(levels) / requested)), channels, tuple(-v for v in levels))
            if best_key is None or key < best_key:
                best, best_key = levels, key
    return best


@functools.lru_cache(maxsize=1)
def _accepted_sizes_text() -> str:
    """Ranges of sizes :func:`fsq_levels_for` accepts. Past a few hundred the 5..8 grids are dense
    enough that every size is within tolerance, so the scan stops once a long run is accepted."""
    def accepted(size: int) -> bool:
        if size in PAPER_LEVELS:
            return True
        levels = _nearest_level_list(size)
        return abs(math.prod(levels) / size - 1) <= SIZE_TOLERANCE

    ranges: list[list[int]] = []
    for size in range(2, 4097):
        if accepted(size):
            if ranges and ranges[-1][1] == size - 1:
                ranges[-1][1] = size
            else:
                ranges.append([size, size])
    parts = [f"{lo}-{hi}" if lo != hi else f"{lo}" for lo, hi in ranges[:-1]]
    parts.append(f"every size >= {ranges[-1][0]}")
    return ", ".join(parts)


def check_levels(levels, requested_size: int) -> list[int]:
    """Validate an explicit ``levels`` list against the requested codebook size."""
    if isinstance(levels, (str, bytes)) or not hasattr(levels, "__iter__"):
        raise ValueError(f"levels must be a list of integers >= 2 (e.g. [8, 5, 5, 5]); got {levels!r}")
    levels = list(levels)
    if not levels:
        raise ValueError("levels must be a non-empty list of integers >= 2 (e.g. [8, 5, 5, 5]); got []")
    checked = [check_int(f"levels[{i}]", value, minimum=2) for i, value in enumerate(levels)]
    size = math.prod(checked)
    if abs(size / requested_size - 1) > SIZE_TOLERANCE:
        raise ValueError(
            f"levels={checked} give {size} codes, not within {SIZE_TOLERANCE:.0%} of "
            f"codebook_size={requested_size}; pass codebook_size={size} or levels=None"
        )
    return checked


@register("fsq")
class FiniteScalarQuantizer(Quantizer):
    """Finite scalar quantization: tanh-bounded channels rounded to fixed levels (Mentzer et al. 2023).

    ``codebook_size`` is the size asked for (kept as ``requested_codebook_size``); the quantizer's
    ``codebook_size`` is ``prod(levels)``, the size it really has. When ``dim != len(levels)`` a linear
    layer projects into the ``len(levels)`` FSQ channels and another projects the codes back (as in the
    paper's and common implementations), so the autoencoder's latent dim is free.
    """

    learns_codebook_by_gradient = False

    def __init__(self, dim: int, codebook_size: int, levels: list[int] | None = None):
        requested = check_int("codebook_size", codebook_size, minimum=2)
        levels = fsq_levels_for(requested) if levels is None else check_levels(levels, requested)
        super().__init__(dim, math.prod(levels))
        self.requested_codebook_size = requested
        self.levels = tuple(levels)
        self.num_channels = len(levels)

        level_counts = torch.tensor(levels, dtype=torch.int64)
        # Index = mixed-radix number with the first channel least significant.
        radix_basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.int64), level_counts[:-1]]), 0)
        self.register_buffer("level_counts", level_counts, persistent=False)
        # A float buffer, so .double() / .to(device) carry the codes' dtype even without projections.
        self.register_buffer("half_width", (level_counts // 2).to(torch.get_default_dtype()), persistent=False)
        self.register_buffer("radix_basis", radix_basis, persistent=False)

        projected = self.dim != self.num_channels
        self.project_in = nn.Linear(self.dim, self.num_channels) if projected else nn.Identity()
        self.project_out = nn.Linear(self.num_channels, self.dim) if projected else nn.Identity()

    def bound(self, z: Tensor) -> Tensor:
        """The paper's bound f(z) (see module docstring), channel-wise, in level units."""
        levels = self.level_counts.to(z.dtype)
        half_l = (levels - 1) * (1 - BOUND_EPS) / 2
        offset = torch.where(self.level_counts % 2 == 0, 0.5, 0.0).to(z.dtype)
        shift = torch.tan(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_input(z)
        bounded = self.bound(self.project_in(z))
        level_values = torch.round(bounded).detach()  # integers in [-(L//2), (L-1)//2]
        rounded = straight_through(bounded, level_values)  # forward value exactly the grid point
        codes = rounded / self.half_width.to(rounded.dtype)
        digits = level_values.long() + self.half_width.long()
        indices = (digits * self.radix_basis).sum(-1)
        return QuantizerOutput(
            quantized=self.project_out(codes),
            indices=indices,
            loss=z.new_zeros(()),
            losses={},
            codebook_size=self.codebook_size,
        )

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        self.check_indices(indices)
        digits = (indices.long().unsqueeze(-1) // self.radix_basis) % self.level_counts
        codes = (digits - self.half_width.long()).to(self.half_width.dtype) / self.half_width
        return self.project_out(codes)

    def codebook(self) -> Tensor:
        """The implicit grid, projected out: ``(prod(levels), dim)``."""
        return self.indices_to_codes(torch.arange(self.codebook_size, device=self.level_counts.device))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, levels={list(self.levels)}, codebook_size={self.codebook_size}, "
                f"requested_codebook_size={self.requested_codebook_size}")
