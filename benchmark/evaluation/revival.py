"""Dead-code revival: of the codes dead at a reference step, the fraction used again since (see
``benchmark.evaluation.probes`` for what it tests and its value by construction)."""
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
