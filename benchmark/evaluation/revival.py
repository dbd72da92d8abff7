"""Dead-code revival: of the codes dead at a reference step, the fraction used again since (see
``benchmark.evaluation.probes`` for what it tests and its value by construction); the births and deaths of
used codes between checkpoints (:func:`code_turnover`); and the revival a process with no codebook mechanism
would show (:func:`growth_only_revival`), the null every revival is read against."""
from __future__ import annotations

import torch
from torch import Tensor

from quantizers.base import check_int


class DeadCodeRevival:
    """Of the codes that were dead at a reference step, the fraction used again since.

    Definition, with W = ``window`` steps and t the step passed to :meth:`value`: reference steps are the
    multiples of W; the reference is r = (⌊t / W⌋ − 1)·W, the latest multiple of W at least one window
    before t. A code is *dead at r* when no update with a step in (r − W, r] selected it; it is *revived*
    when an update with a step in (r, latest step] selected it. ``value(t)`` = #revived / #dead at r, in
    [0, 1]; the observation window (r, t] lasts between W and 2W − 1 steps.

    ``value`` is None when undefined: before the first reference whose whole dead window was observed (the
    first value is at t = 2W when updates start at step 1), or when no code was dead at r. Use the
    trainer's ``dead_code_window`` as W so "dead" means what ``train/dead_code_fraction`` means.

    Memory O(K): each code's last-used step plus the dead sets of the two most recent references (a
    reference's dead set is frozen when the first update past it arrives). Several updates with the same
    step (gradient accumulation) pool into that step; steps must not decrease.
    """

    def __init__(self, codebook_size: int, window: int):
        self.codebook_size = check_int("codebook_size", codebook_size, minimum=1)
        self.window = check_int("window", window, minimum=1)
        self._last_used = torch.full((self.codebook_size,), -1, dtype=torch.long)  # -1: never used
        self._dead_at: dict[int, Tensor] = {}   # reference step -> bool (K,) dead over (r - W, r]
        self._first_step: int | None = None
        self._latest_step: int | None = None

    def _dead_now(self, reference: int) -> Tensor:
        return self._last_used <= reference - self.window

    def update(self, indices: Tensor, step: int) -> None:
        """Record the code indices (any shape) selected at ``step``."""
        step = check_int("step", step, minimum=0)
        if self._latest_step is not None and step < self._latest_step:
            raise ValueError(f"step must not decrease; got {step} after {self._latest_step}")
        flat = indices.detach().reshape(-1).cpu()
        if flat.dtype.is_floating_point or flat.dtype == torch.bool:
            raise ValueError(f"indices must be an integer tensor; got {flat.dtype}")
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.codebook_size):
            raise ValueError(f"indices must lie in [0, codebook_size={self.codebook_size}); got values in "
                             f"[{int(flat.min())}, {int(flat.max())}]")
        if self._first_step is None:
            self._first_step = step
        elif step > self._latest_step:
            # freeze the dead sets of the references this update passes (state = as of each reference)
            last_reference = (step - 1) // self.window * self.window
            for reference in (last_reference - self.window, last_reference):
                if reference >= self._latest_step and reference not in self._dead_at:
                    self._dead_at[reference] = self._dead_now(reference)
            for reference in [r for r in self._dead_at if r < last_reference - self.window]:
                del self._dead_at[reference]
        self._last_used[flat.long()] = step
        self._latest_step = step

    def value(self, step: int) -> float | None:
        """Fraction of the codes dead at the reference r = (⌊step / W⌋ − 1)·W that were used after r (None
        when undefined, see the class docstring). ``step`` must not precede the latest update."""
        step = check_int("step", step, minimum=0)
        if self._latest_step is None:
            return None
        if step < self._latest_step:
            raise ValueError(f"value(step) needs step >= the latest update's step {self._latest_step}; got {step}")
        reference = (step // self.window - 1) * self.window
        if reference - self.window < self._first_step - 1:  # the dead window (r - W, r] was not all observed
            return None
        if reference >= self._latest_step:                  # no update past r yet: the state is r's
            dead = self._dead_now(reference)
        else:
            dead = self._dead_at[reference]
        dead_count = int(dead.sum())
        if dead_count == 0:
            return None
        revived = dead & (self._last_used > reference)
        return int(revived.sum()) / dead_count

    def dead_codes(self, step: int) -> Tensor:
        """Bool ``(K,)``: the codes no update with a step in (step − W, step] selected (every code not yet
        used counts as dead, as in ``train/dead_code_fraction``). The trainer passes this to
        :func:`benchmark.evaluation.probes.collapse_probes` so the dead-code distance means the same codes for
        every method."""
        step = check_int("step", step, minimum=0)
        return self._last_used <= step - self.window


# ----------------------------------------------------------------------------- turnover and its null
def code_turnover(previous_counts: Tensor | None, counts: Tensor) -> dict[str, float]:
    """Births and deaths of used codes between two evaluation checkpoints, as fractions of K:
    ``eval/codes_born`` (used now, unused at the previous checkpoint) and ``eval/codes_died`` (used then,
    unused now). ``counts``: code counts ``(K,)`` of this checkpoint's evaluation; ``previous_counts`` those
    of the previous checkpoint on the same test sample (None at the first checkpoint: returns {}).
    utilization_now = utilization_before + born − died, exactly."""
    from benchmark.tracking import keys

    if previous_counts is None:
        return {}
    if previous_counts.shape != counts.shape or counts.dim() != 1:
        raise ValueError(f"counts must be two (K,) tensors of one size; got {tuple(previous_counts.shape)} "
                         f"and {tuple(counts.shape)}")
    before, now = previous_counts > 0, counts > 0
    size = counts.numel()
    return {keys.EVAL_CODES_BORN: float((now & ~before).sum()) / size,
            keys.EVAL_CODES_DIED: float((before & ~now).sum()) / size}


def growth_only_revival(utilization: float, kept: float) -> float:
    """Revival expected with no codebook mechanism: u(1 − g) / (1 − g·u).

    The null process: between two windows a fraction ``kept`` = g of the used codes stays used; the other
    u(1 − g)·K places are filled by codes drawn at random from the 1 − g·u codes not kept (dead codes and
    dropped used codes alike), so a dead code comes back with probability u(1 − g)/(1 − g·u). No code is
    favoured for having been updated: dead codes come back exactly as often as chance refills allow. g = 1:
    no refills, 0; g = 0: u. ``utilization`` = u, the used fraction (taken constant over the two windows)."""
    u, g = float(utilization), float(kept)
    if not (0 <= u <= 1 and 0 <= g <= 1):
        raise ValueError(f"utilization and kept must lie in [0, 1]; got {u}, {g}")
    return 0.0 if g * u >= 1 else u * (1 - g) / (1 - g * u)


def null_keep_rate(observed_kept: float, utilization: float) -> float:
    """The null process's g from an *observed* keep rate (fraction of used codes used in both windows).

    Under the null a dropped code can be drawn again by a refill, so the observed keep rate is
    g + (1 − g)·p with p = :func:`growth_only_revival` (u, g), higher than g; plugging the observed rate
    into the formula would understate the null and flatter revival. Solved for g by bisection (the map is
    increasing in g)."""
    target, u = float(observed_kept), float(utilization)
    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        if middle + (1 - middle) * growth_only_revival(u, middle) < target:
            low = middle
        else:
            high = middle
    return (low + high) / 2
