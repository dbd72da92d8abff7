"""The fault drill's kill rounds: SIGKILLs of a sweep's driver or of a running trial's worker at random
moments, and resuming a sweep until it ends."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import time

from sweeps.drill_runner import Drill


def resume_until_done(runner: Drill, name: str, tries: int = 3, **options) -> tuple[int, int]:
    """Resume ``name`` until it exits 0 (at most ``tries`` times); (exit code, resumes)."""
    code, extra = 1, 0
    while extra < tries:
        extra += 1
        code = runner.start_sweep(name, **options).wait()
        if code == 0:
            break
    return code, extra


def kill_rounds(runner: Drill, rng: random.Random, kills: int, window, worker_share: float, prefix: str,
                **options) -> tuple[list[str], list[str], float]:
    """``kills`` SIGKILLs, each of the driver or (share ``worker_share``) of a running trial's worker;
    returns (sweep names, what each kill hit, seconds spent)."""
    spent, events, rounds = 0.0, [], [f"{prefix}-1"]
    low, high = window
    while len(events) < kills:
        started = time.monotonic()
        driver = runner.start_sweep(rounds[-1], **options)
        while len(events) < kills:  # several kills may land on one driver: worker kills leave it running
            moment = rng.uniform(low, high)
            aim_worker = rng.random() < worker_share
            try:
                code = driver.wait(timeout=moment)
                print(f"  {rounds[-1]} ended (exit {code}) before a kill at {moment:.1f} s", flush=True)
                if code == 0:
                    rounds.append(f"{prefix}-{len(rounds) + 1}")
                break
            except subprocess.TimeoutExpired:
                pass
            workers = runner.trial_workers(driver) if aim_worker else []
            waited = time.monotonic() + 90
            while aim_worker and not workers and driver.poll() is None and time.monotonic() < waited:
                time.sleep(0.5)  # a kill aimed at a worker waits for a trial to be running
                workers = runner.trial_workers(driver)
            if driver.poll() is not None:
                print(f"  {rounds[-1]} ended (exit {driver.returncode}) before a kill", flush=True)
                if driver.returncode == 0:
                    rounds.append(f"{prefix}-{len(rounds) + 1}")
                break
            if workers:
                victim = rng.choice(workers)
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                events.append("worker")
                print(f"  kill {len(events):2d}/{kills}: a trial worker (pid {victim}) of {rounds[-1]}, {moment:4.1f} s "
                      f"after the last event; trials finished: {runner.finished_trials(rounds[-1])}", flush=True)
                continue
            driver.send_signal(signal.SIGKILL)
            driver.wait()
            events.append("driver")
            print(f"  kill {len(events):2d}/{kills}: the driver of {rounds[-1]}, {moment:4.1f} s after the last event; "
                  f"trials finished: {runner.finished_trials(rounds[-1])}", flush=True)
            break
        else:
            code = driver.wait()  # the last kill hit a worker: let the sweep end
            print(f"    {rounds[-1]} then exited {code}", flush=True)
        spent += time.monotonic() - started
        runner.kill_driver(driver)  # reap what the driver left behind, outside the timing
    return rounds, events, spent
