"""Measure what Ray Tune and MLflow cost: the same trials in a plain loop and in a sweep.

    python -m sweeps.overhead [--steps 20] [--trials 4] [--workdir DIR]

Prints wall time for (a) a plain loop calling ``train()`` without tracking, (b) the same loop with MLflow
tracking, (c) a sweep on a local Ray with one CPU (trials one after another, so it compares with the
loops directly) and (d) a sweep with every CPU. Ray's start-up is counted in (c) and (d): a user pays it.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

TINY_BUDGET = {"image_size": 16, "width": 8, "num_res_blocks": 0, "num_downsamples": 2, "batch_size": 8,
               "warmup_steps": 2, "eval_samples": 32, "fid_samples": 0, "log_every": 4, "probe_every": 4,
               "dead_code_window": 8}


def measure(steps: int, trials: int, workdir: Path) -> dict[str, float]:
    import torch

    from benchmark.tracking.runs import RunTracking
    from benchmark.training.trainer import train

    from .grid import SweepGrid, base_config, expand_grid
    from .launch import SweepSettings, start_sweep

    if trials < 2 or trials % 2:
        raise ValueError(f"trials must be an even number >= 2 (vq and simvq per size); got {trials}")
    sizes = [16 * 2 ** i for i in range(trials // 2)]
    grid = SweepGrid(["vq", "simvq"], sizes, [4], [0], base=base_config({**TINY_BUDGET, "steps": steps}))
    configs = [t.config for t in expand_grid(grid).trials]
    torch.set_num_threads(1)
    train(configs[0], progress=False)  # warm the dataset cache and imports so the loops start even
    times: dict[str, float] = {}

    started = time.perf_counter()
    for config in configs:
        train(config, progress=False)
    times["loop, no tracking"] = time.perf_counter() - started

    uri = f"sqlite:///{workdir / 'loop.db'}"
    tracking = RunTracking(tracking_uri=uri, experiment="overhead", log_system_metrics=False)
    train(configs[0], tracking=tracking, progress=False)  # create the store's tables outside the timing
    started = time.perf_counter()
    for config in configs:
        train(config, tracking=tracking, progress=False)
    times["loop, MLflow"] = time.perf_counter() - started

    for label, cpus in (("sweep, Ray 1 CPU", 1), (f"sweep, Ray {os.cpu_count()} CPUs", os.cpu_count() or 1)):
        uri = f"sqlite:///{workdir / f'sweep{cpus}.db'}"
        from mlflow.tracking import MlflowClient

        MlflowClient(uri).search_experiments()  # tables created outside the timing, as for the loop
        started = time.perf_counter()
        start_sweep(grid, name=f"overhead-{cpus}", experiment="overhead",
                    settings=SweepSettings(storage_path=str(workdir / "runs"), num_cpus=cpus, tracking_uri=uri,
                                           log_system_metrics=False, verbose=0))
        times[label] = time.perf_counter() - started
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--trials", type=int, default=4, help="an even number: vq and simvq per size")
    parser.add_argument("--workdir", help="where stores and Tune results go (default: a temporary dir)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(args.workdir or temporary).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        times = measure(args.steps, args.trials, workdir)
    for label, seconds in times.items():
        print(f"{label:24s} {seconds:7.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
