"""Code usage, what "collapse" means operationally: a codebook of K codes collapses when few of them are
ever selected. :func:`utilization` is the fraction of the K codes used at least once, :func:`perplexity`
is ``exp`` of the entropy of the usage distribution (K for uniform use, 1 when one code takes every
token). :class:`CodeUsageWindow` tracks both over a sliding window of training steps, plus dead codes.
"""
from __future__ import annotations

import math
from collections import deque

import torch
from torch import Tensor

from quantizers.base import check_int


# ----------------------------------------------------------------------------- code usage
def code_counts(indices: Tensor, codebook_size: int) -> Tensor:
    """How often each of the ``codebook_size`` codes occurs in ``indices`` (any shape): int64 ``(K,)``.

    Raises ValueError for non-integer indices or indices outside ``[0, codebook_size)``.
    """
    codebook_size = check_int("codebook_size", codebook_size, minimum=1)
    if not isinstance(indices, Tensor) or indices.dtype.is_floating_point or indices.dtype == torch.bool \
            or indices.is_complex():
        kind = indices.dtype if isinstance(indices, Tensor) else type(indices).__name__
        raise ValueError(f"indices must be an integer tensor; got {kind}")
    flat = indices.reshape(-1).long()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= codebook_size):
        raise ValueError(
            f"indices must lie in [0, codebook_size={codebook_size}); "
            f"got values in [{int(flat.min())}, {int(flat.max())}]"
        )
    return torch.bincount(flat, minlength=codebook_size)


def _check_counts(counts: Tensor) -> Tensor:
    if not isinstance(counts, Tensor) or counts.dim() != 1 or counts.numel() == 0:
        shape = tuple(counts.shape) if isinstance(counts, Tensor) else type(counts).__name__
        raise ValueError(f"counts must be a non-empty 1-D tensor (one count per code); got {shape}")
    if (counts < 0).any():
        raise ValueError("counts must be non-negative")
    return counts


def utilization(counts: Tensor) -> float:
    """Fraction of the K codes used at least once: ``#{k : counts[k] > 0} / K``, in [0, 1]."""
    counts = _check_counts(counts)
    return float((counts > 0).sum()) / counts.numel()


def perplexity(counts: Tensor) -> float:
    """``exp(H(p))`` with ``p = counts / sum(counts)`` and H the entropy in nats: the effective number of
    codes in use, in [1, K]. Raises ValueError when every count is zero (no usage to measure)."""
    counts = _check_counts(counts).double()
    total = counts.sum()
    if total <= 0:
        raise ValueError("perplexity needs at least one used code; counts sum to zero")
    p = counts[counts > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


class CodeUsageWindow:
    """Code usage over the most recent training steps.

    ``update(indices, step)`` records the codes one step selected. Then, relative to the latest step
    ``t`` seen, :meth:`utilization` and :meth:`perplexity` describe the usage pooled over steps
    ``(t - window, t]`` and :meth:`dead_fraction` is the fraction of codes used in none of the steps
    ``(t - dead_window, t]``. Before ``dead_window`` steps have passed, a code not yet used counts as dead.
    Several updates with the same step (gradient accumulation) pool into that step.

    Memory stays proportional to the tokens per step, not to K × window: each step keeps only its
    distinct codes and their counts; the pooled window counts and each code's last-used step are dense.
    """

    def __init__(self, codebook_size: int, window: int, dead_window: int):
        self.codebook_size = check_int("codebook_size", codebook_size, minimum=1)
        self.window = check_int("window", window, minimum=1)
        self.dead_window = check_int("dead_window", dead_window, minimum=1)
        self._window_counts = torch.zeros(self.codebook_size, dtype=torch.long)
        self._recent: deque[tuple[int, Tensor, Tensor]] = deque()  # (step, codes, counts) per update
        self._last_used = torch.full((self.codebook_size,), -1, dtype=torch.long)  # -1: never used
        self._latest_step: int | None = None

    def update(self, indices: Tensor, step: int) -> None:
        """Record the code indices selected at ``step`` (steps must not decrease)."""
        step = check_int("step", step, minimum=0)
        if self._latest_step is not None and step < self._latest_step:
            raise ValueError(f"step must not decrease; got {step} after {self._latest_step}")
        counts = code_counts(indices.detach().cpu(), self.codebook_size)
        codes = counts.nonzero().squeeze(1)
        used = counts[codes]
        self._latest_step = step
        self._recent.append((step, codes, used))
        self._window_counts.index_add_(0, codes, used)
        self._last_used[codes] = step
        self._forget_before(step - self.window + 1)

    def _forget_before(self, first_kept_step: int) -> None:
        while self._recent and self._recent[0][0] < first_kept_step:
            _, codes, used = self._recent.popleft()
            self._window_counts.index_add_(0, codes, -used)

    def _require_updates(self) -> None:
        if self._latest_step is None:
            raise ValueError("CodeUsageWindow has no usage yet; call update(indices, step) first")

    def counts(self) -> Tensor:
        """Pooled counts ``(K,)`` over the last ``window`` steps (a copy)."""
        self._require_updates()
        return self._window_counts.clone()

    def utilization(self) -> float:
        """Fraction of the K codes used at least once within the last ``window`` steps."""
        self._require_updates()
        return utilization(self._window_counts)

    def perplexity(self) -> float:
        """``exp(entropy)`` of the usage pooled over the last ``window`` steps."""
        self._require_updates()
        return perplexity(self._window_counts)

    def dead_fraction(self) -> float:
        """Fraction of the K codes not used within the last ``dead_window`` steps."""
        self._require_updates()
        first_live_step = self._latest_step - self.dead_window + 1
        dead = (self._last_used < first_live_step) | (self._last_used < 0)
        return float(dead.sum()) / self.codebook_size


def utilization_ceiling(codebook_size: int, tokens: int) -> float:
    """Expected utilization of N tokens drawn uniformly over K codes: ``1 - (1 - 1/K)^N``."""
    if tokens <= 0:
        return 0.0
    return float(-math.expm1(tokens * math.log1p(-1.0 / codebook_size)))
