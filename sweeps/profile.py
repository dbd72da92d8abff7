"""Where a sweep's time goes, and how far it is from the floor: the same trials in a bare PyTorch loop.

    vqbench profile --preset quick [--out results/throughput]

1. Runs the preset as a real sweep (Ray Tune, MLflow on a temporary SQLite store) while sampling the
   machine's CPU use once a second, and reads every trial's ``cost/*`` split back from MLflow.
2. Trains the same trials again as a *bare loop*: for each trial config, build the model and run its
   ``steps`` optimizer steps (forward, loss, backward, step) on the same batches, nothing else — no
   probes, no evaluation, no tracking, no Ray — on the same cores, one process per core and one torch
   thread each, longest trials first. That is the floor a sweep of these trials can reach.
3. Prints, and writes to ``--out`` as Markdown and JSON: the sweep's wall time split into Ray start-up
   and scheduling, data loading and model building, training steps, probes, evaluation, rFID, MLflow
   writes and idle cores; one median trial's split; and the ratio sweep wall time / bare-loop wall time.

The split is in core-seconds (the sweep's wall time × its cores): each trial's stages come from its own
clock (``benchmark.training.trainer.StageClock``); what no trial accounts for is the sweep's own overhead (Ray start,
worker start-up and imports, Tune's bookkeeping) and the cores left idle, told apart by the CPU samples.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from benchmark.tracking import keys

STAGES = [("setup (data load, model build, quantizer init)", keys.COST_SETUP_TIME),
          ("training steps", keys.COST_TRAIN_TIME), ("probes", keys.COST_PROBE_TIME),
          ("evaluation", keys.COST_EVAL_TIME), ("rFID/rKID", keys.COST_FID_TIME),
          ("MLflow writes and artifacts", keys.COST_TRACKING_TIME)]


class CpuSampler:
    """Mean machine-wide CPU busy fraction over a ``with`` block, sampled once a second (psutil)."""

    def __init__(self, interval: float = 1.0):
        self.interval, self.samples = interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        psutil.cpu_percent(interval=None)
        while not self._stop.wait(self.interval):
            self.samples.append(psutil.cpu_percent(interval=None) / 100.0)

    def __enter__(self) -> "CpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def busy(self) -> float:
        return statistics.fmean(self.samples) if self.samples else float("nan")


# ----------------------------------------------------------------------------- the bare loop
def bare_trial_seconds(config_dict: dict) -> float:
    """Seconds of the bare loop for one trial config (model build + steps), in this process."""
    import torch
    import torch.nn.functional as F

    from benchmark.training.config import TrainConfig
    from benchmark.data.sources import load_dataset
    from benchmark.evaluation.modality import get_modality
    from benchmark.training.setup import (DATA_ORDER_SEED_OFFSET, batch_order, build_model, build_optimizer, data_request,
                                          initialize_from_data)

    torch.set_num_threads(1)
    config = TrainConfig.from_dict(config_dict)
    dataset = load_dataset(config.dataset, data_request(config))
    to_float = get_modality(dataset.modality).to_float
    images = torch.as_tensor(dataset.train)
    started = time.perf_counter()
    model = build_model(config, dataset.channels)
    initialize_from_data(model.quantizer, config, dataset, images)  # part of the method, cached after the sweep
    optimizer = build_optimizer(config, [p for p in model.parameters() if p.requires_grad])
    batches = batch_order(len(images), config.batch_size, config.seed + DATA_ORDER_SEED_OFFSET)
    device = torch.device("cpu")
    for _ in range(config.steps):
        batch = to_float(images[next(batches)], device)
        output = model(batch)
        loss = F.mse_loss(output.reconstruction, batch) + output.quantizer.loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def bare_loop(configs: list[dict], cores: int) -> tuple[float, list[float]]:
    """Wall time of the bare loop over ``configs`` on ``cores`` processes, and each trial's seconds."""
    import multiprocessing

    order = sorted(range(len(configs)), key=lambda i: -configs[i]["steps"])  # longest first
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(cores) as pool:
        seconds = pool.map(bare_trial_seconds, [configs[i] for i in order], chunksize=1)
    return time.perf_counter() - started, seconds


# ----------------------------------------------------------------------------- the sweep
def profile_sweep(preset: str, workdir: Path, cores: int) -> dict:
    from mlflow.tracking import MlflowClient

    from .grid import expand_grid
    from .launch import SweepSettings, start_sweep
    from .presets import get_preset

    grid = get_preset(preset)
    trials = expand_grid(grid).trials
    uri = f"sqlite:///{workdir / 'profile.db'}"
    started = time.perf_counter()
    with CpuSampler() as sampler:
        outcome = start_sweep(grid, name=f"profile-{preset}", preset=preset, experiment="vqbench-profile",
                              settings=SweepSettings(storage_path=str(workdir / "runs"), num_cpus=cores,
                                                     tracking_uri=uri))
    wall = time.perf_counter() - started
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("vqbench-profile").experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{outcome.parent_run_id}'")
    finished = [run for run in runs if run.info.status == "FINISHED"]
    if len(finished) != len(trials):
        raise RuntimeError(f"profile sweep: {len(finished)} of {len(trials)} trials finished; see {uri}")
    per_trial = [run.data.metrics for run in finished]
    return {"wall_s": wall, "cpu_busy": sampler.busy, "per_trial": per_trial,
            "configs": [t.as_dict()["config"] for t in trials]}


def summarize(preset: str, sweep: dict, bare_wall: float, bare_seconds: list[float], cores: int) -> dict:
    core_seconds = sweep["wall_s"] * cores
    trial_total = sum(m[keys.COST_WALL_TIME] for m in sweep["per_trial"])
    split = {label: sum(m.get(key, 0.0) for m in sweep["per_trial"]) for label, key in STAGES}
    unaccounted_in_trials = trial_total - sum(split.values())
    outside = core_seconds - trial_total
    idle = max(0.0, (1.0 - sweep["cpu_busy"]) * core_seconds)
    split["other inside trials (loop bookkeeping)"] = unaccounted_in_trials
    split["Ray start, worker start-up, scheduling"] = max(0.0, outside - idle)
    split["idle cores"] = min(idle, max(outside, 0.0))
    median_trial = sorted(sweep["per_trial"], key=lambda m: m[keys.COST_WALL_TIME])[len(sweep["per_trial"]) // 2]
    return {
        "preset": preset, "cores": cores, "trials": len(sweep["per_trial"]),
        "sweep_wall_s": sweep["wall_s"], "cpu_busy_fraction": sweep["cpu_busy"],
        "bare_loop_wall_s": bare_wall, "bare_loop_trial_s_total": sum(bare_seconds),
        "ratio_sweep_to_bare": sweep["wall_s"] / bare_wall,
        "split_core_s": split,
        "median_trial": {label: median_trial.get(key, 0.0) for label, key in STAGES}
        | {"wall": median_trial[keys.COST_WALL_TIME]},
    }


def markdown(summary: dict, command: str) -> str:
    total = summary["sweep_wall_s"] * summary["cores"]
    lines = [f"# Throughput profile: preset `{summary['preset']}`", "", f"Command: `{command}`", "",
             f"{summary['trials']} trials on {summary['cores']} cores. Sweep wall time "
             f"**{summary['sweep_wall_s']:.0f} s**; the same trials in a bare PyTorch loop on the same cores "
             f"**{summary['bare_loop_wall_s']:.0f} s**; ratio **{summary['ratio_sweep_to_bare']:.2f}**. "
             f"Mean CPU use over the sweep {summary['cpu_busy_fraction']:.0%}.", "",
             "| where the sweep's core-seconds went | core-s | share |", "|---|---:|---:|"]
    for label, seconds in summary["split_core_s"].items():
        lines.append(f"| {label} | {seconds:.0f} | {seconds / total:.0%} |")
    lines += ["", "| one median trial | s |", "|---|---:|"]
    lines += [f"| {label} | {seconds:.1f} |" for label, seconds in summary["median_trial"].items()]
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="quick", help="the preset to profile (default quick)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="cores for both runs")
    parser.add_argument("--out", default="results/throughput", help="where profile.md/.json go")
    parser.add_argument("--workdir", help="stores and Tune results (default: a temporary folder)")


def run(args: argparse.Namespace) -> int:
    command = f"vqbench profile --preset {args.preset} --cores {args.cores}"
    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(args.workdir or temporary).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        print(f"profiling the {args.preset} sweep on {args.cores} cores ...", flush=True)
        sweep = profile_sweep(args.preset, workdir, args.cores)
        print(f"sweep: {sweep['wall_s']:.0f} s; bare loop of the same {len(sweep['configs'])} trials ...", flush=True)
        bare_wall, bare_seconds = bare_loop(sweep["configs"], args.cores)
    summary = summarize(args.preset, sweep, bare_wall, bare_seconds, args.cores)
    text = markdown(summary, command)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"profile_{args.preset}.md").write_text(text)
    (out / f"profile_{args.preset}.json").write_text(json.dumps(summary, indent=2))
    print(text)
    return 0
