"""What a sweep prints while it runs: one line per trial that ends, and a progress bar with an ETA.

    [ 3/20] simvq K=4096 d=32 seed=0   utilization 0.222   PSNR 24.13 dB   38 s   ETA 4 min
    [ 9/20] simvq K=256 d=32 seed=1   utilization 0.176   SI-SNR -37.02 dB   43 s   ETA 1 min
    [ 4/20] vq K=16 d=4 seed=0   FAILED (not retried: the same error would recur): ValueError: beta must be >= 0

Ray Tune calls :class:`TrialConsole` on the driver (a ``tune.Callback``). Every line carries the count
and the ETA, so a log file shows progress too; on a terminal a bar below the lines moves as well.
"""
from __future__ import annotations

import sys
import time

from ray import tune

from benchmark.tracking import keys

from .report import root_cause
from .trainable import REUSED, STATUS, STATUS_FAILED, STATUS_NAN


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


#: The reconstruction quality a trial line shows, by what the trial logged: images log PSNR, audio SI-SNR.
QUALITY_SHOWN = ((keys.EVAL_PSNR, "PSNR"), (keys.EVAL_SI_SNR, "SI-SNR"))


def quality_text(result: dict) -> str:
    for key, label in QUALITY_SHOWN:
        if result.get(key) is not None:
            return f"{label} {result[key]:.2f} dB"
    return "quality -"


def trial_line(number: int, total: int, run_name: str, result: dict, eta: str | None) -> str:
    """The line of a trial that finished (or diverged)."""
    width = len(str(total))
    head = f"[{number:>{width}}/{total}] {run_name}"
    if result.get(STATUS) == STATUS_NAN:
        body = f"NAN: {result.get('error', 'the loss became non-finite')}"
    elif result.get(STATUS) == STATUS_FAILED:
        body = f"FAILED (not retried: the same error would recur): {result.get('error', 'unknown error')}"
    else:
        utilization, seconds = result.get(keys.EVAL_UTILIZATION), result.get(keys.COST_WALL_TIME)
        body = "   ".join([
            f"utilization {utilization:.3f}" if utilization is not None else "utilization -",
            quality_text(result),
            duration(seconds) if seconds is not None else "-",
        ])
        if result.get(REUSED):
            body += "   (finished earlier; not rerun)"
    return f"{head}   {body}" + (f"   ETA {eta}" if eta else "")


class TrialConsole(tune.Callback):
    """Prints a line per ended trial and keeps a progress bar (on a terminal) over all trials."""

    def __init__(self, total: int, done_before: int = 0):
        self.total = total
        self.done = done_before
        self.done_before = done_before
        self.started = time.monotonic()
        self.bar = None

    def __getstate__(self):  # Tune pickles its callbacks with the experiment; a bar does not pickle
        return {**self.__dict__, "bar": None}

    def setup(self, **info):
        from tqdm.auto import tqdm

        self.started = time.monotonic()
        self.bar = tqdm(total=self.total, initial=self.done, desc="trials", unit="trial", file=sys.stderr,
                        disable=not sys.stderr.isatty(), dynamic_ncols=True)

    def eta(self) -> str | None:
        finished_now = self.done - self.done_before
        remaining = self.total - self.done
        if not finished_now or not remaining:
            return None
        return duration((time.monotonic() - self.started) / finished_now * remaining)

    def _print(self, line: str) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        self._print(trial_line(self.done, self.total, trial.config.get("trial", str(trial)),
                               trial.last_result or {}, self.eta()))

    def on_trial_recover(self, iteration, trials, trial, **info):
        print(f"        {trial.config.get('trial', trial)}: attempt {trial.num_failures} failed "
              f"({root_cause(trial.get_pickled_error())}); retrying", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.done += 1
        width = len(str(self.total))
        eta = self.eta()
        self._print(f"[{self.done:>{width}}/{self.total}] {trial.config.get('trial', trial)}   FAILED after "
                    f"{trial.num_failures} attempt(s): {root_cause(trial.get_pickled_error())}"
                    + (f"   ETA {eta}" if eta else ""))

    def on_experiment_end(self, trials, **info):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
