"""A sweep's estimated wall time and what it rests on (computed by :mod:`sweeps.calibration`): the fixed
costs a sweep pays besides its trials, and the schedule of trials over parallel slots."""
from __future__ import annotations

from dataclasses import dataclass

#: Seconds a trial spends outside its steps and evaluations: set-up, probes, MLflow writes, bookkeeping,
#: worker scheduling (measured: results/throughput/profile_quick.md, about 1.3 s + scheduling).
PER_TRIAL_OVERHEAD_S = 1.5
#: Ray's start on a local machine (profile_quick.md: 17 core-s of Ray start, worker start-up and scheduling
#: over 2 cores).
RAY_STARTUP_S = 9.0
#: A fresh worker's first trial: imports, the dataset load, first calls of the kernels (paid once per slot:
#: the sweep reuses its workers; results/step_speed/README.md measured ~30 s of it at a busy factor of ~3.7).
WORKER_STARTUP_S = 8.0


@dataclass
class Estimate:
    """The estimated wall time of a sweep and what it was computed from."""

    trials: int
    slots: int
    trial_s: list[float]                        # per trial, in the trials' order
    step_s: dict[tuple, float]                  # cost key -> seconds per training step (timed or derived)
    eval_s: dict[tuple, tuple[float, float]]    # (backbone, size) key -> (partial, full) evaluation seconds
    calibration_s: float
    measured: int                               # configurations timed
    approximated: int                           # configurations derived from others (budget reached)
    upper_bound: bool                           # some trial stops when converged: steps are the cap
    busy_factor: float = 1.0                    # wall / CPU time of the timed steps: > 1 when the CPUs are shared
    ray_startup_s: float = RAY_STARTUP_S
    worker_startup_s: float = WORKER_STARTUP_S
    per_trial_overhead_s: float = PER_TRIAL_OVERHEAD_S

    @property
    def wall_s(self) -> float:
        """The whole sweep's estimated wall time."""
        return self.wall_of(self.trial_s)

    def wall_of(self, trial_s: list[float]) -> float:
        """Wall time of ``trial_s`` run as one sweep on this estimate's slots: Ray's start, one start-up per
        worker used, and the trials scheduled in order (each on the slot that frees first)."""
        workers = min(self.slots, len(trial_s))
        return (self.ray_startup_s + self.worker_startup_s * workers) * self.busy_factor + schedule(trial_s, self.slots)

    def line(self) -> str:
        minutes = self.wall_s / 60
        bound = "at most " if self.upper_bound else "~"
        return (f"estimated wall time {bound}{minutes:.1f} min on this machine ({self.trials} trials on "
                f"{self.slots} parallel slot{'s' if self.slots != 1 else ''}; {self.calibration()})")

    def calibration(self) -> str:
        """What the estimate rests on: the calibration's time, the step and evaluation times, the fixed costs
        and the caveats (the part of :meth:`line` after the total)."""
        steps = sorted(self.step_s.items(), key=lambda item: item[1])
        fastest, slowest = steps[0], steps[-1]
        text = (f"calibrated in {self.calibration_s:.0f} s: "
                f"{fastest[1]:.3f} s/step ({_label(fastest[0])}) to {slowest[1]:.3f} s/step ({_label(slowest[0])}), "
                f"evaluation {max(full for _, full in self.eval_s.values()):.1f} s at most per full pass; "
                f"+{self.per_trial_overhead_s * self.busy_factor:.1f} s per trial, "
                f"+{self.worker_startup_s * self.busy_factor:.0f} s per worker, "
                f"+{self.ray_startup_s * self.busy_factor:.0f} s Ray start")
        if self.busy_factor > 1.2:
            text += (f"; the CPUs were busy with other work during the calibration (it got 1/{self.busy_factor:.1f} "
                     f"of its cores): times and fixed costs are for that load")
        if self.approximated:
            text += f"; {self.approximated} of {self.measured + self.approximated} configurations derived, not timed"
        if self.upper_bound:
            text += "; stop_when_converged trials counted at their step cap"
        return text

    def __str__(self) -> str:
        return self.line()


def _label(key: tuple) -> str:
    return f"{key[0]} K={key[1]}"


def schedule(durations: list[float], slots: int) -> float:
    """Wall time of ``durations`` run in order, each on the slot that frees first."""
    free = [0.0] * slots
    for seconds in durations:
        index = free.index(min(free))
        free[index] += seconds
    return max(free)
