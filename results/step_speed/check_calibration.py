"""Accuracy of sweeps.calibration.estimate_sweep: estimate a small sweep, then run it, in one process.

    .venv/bin/python results/step_speed/check_calibration.py [--steps 40] [--cpus 2]

The grid is the quick preset's budget (photos, 32 px, width 16, batch 64) with vq and simvq at K = 2^8
and 2^10, one seed, ``--steps`` steps: 4 trials on a private local Ray with ``--cpus`` CPUs.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from mlflow.tracking import MlflowClient

    from sweeps.calibration import estimate_sweep
    from sweeps.grid import SweepGrid, base_config, expand_grid
    from sweeps.launch import SweepSettings, start_sweep
    from sweeps.presets import QUICK_BUDGET

    budget = {**QUICK_BUDGET, "steps": args.steps, "warmup_steps": min(16, args.steps // 4),
              "dead_code_window": max(1, args.steps // 8)}
    grid = SweepGrid(["vq", "simvq"], [2 ** 8, 2 ** 10], [32], [0], base=base_config(budget))
    trials = expand_grid(grid).trials
    started = time.perf_counter()
    estimate = estimate_sweep(trials, cpus=args.cpus)
    print(f"calibration took {time.perf_counter() - started:.1f} s")
    print(estimate.line())
    with tempfile.TemporaryDirectory() as workdir:
        uri = f"sqlite:///{Path(workdir) / 'check.db'}"
        MlflowClient(uri).search_experiments()
        started = time.perf_counter()
        outcome = start_sweep(grid, name="calibration-check", experiment="calibration-check",
                    settings=SweepSettings(storage_path=str(Path(workdir) / "runs"), address="local",
                                           num_cpus=args.cpus, tracking_uri=uri, log_system_metrics=False,
                                           verbose=0))
        actual = time.perf_counter() - started
    print(f"estimated {estimate.wall_s:.1f} s, actual {actual:.1f} s, estimate/actual {estimate.wall_s / actual:.2f}")
    from benchmark.tracking import keys

    print("| trial | estimated s | actual wall s | actual train s | actual eval s | actual s/step |")
    print("|---|---:|---:|---:|---:|---:|")
    for estimated, result in zip(estimate.trial_s, outcome.outcomes):
        m = result.metrics or {}
        steps = result.trial.config.steps
        print(f"| {result.trial.run_name} | {estimated:.1f} | {m.get(keys.COST_WALL_TIME, float('nan')):.1f} | "
              f"{m.get(keys.COST_TRAIN_TIME, float('nan')):.1f} | {m.get(keys.COST_EVAL_TIME, float('nan')):.1f} | "
              f"{m.get(keys.COST_TRAIN_TIME, float('nan')) / steps:.3f} |")
    print("estimated s/step: " + ", ".join(f"{k[0]} K={k[1]} {v:.3f}" for k, v in estimate.step_s.items())
          + "; eval (partial, full): " + ", ".join(f"K={k[-3]} ({p:.1f}, {f:.1f})" for k, (p, f) in estimate.eval_s.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
