"""(No tests here: helpers for tests/test_analysis.py.) Synthetic MLflow runs with known values, shaped like the trainer's and the sweep's runs, for the
analysis tests: a sweep parent run (vqbench.kind = sweep) and one child run per trial."""
from __future__ import annotations

import time

from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from benchmark import keys
from benchmark.config import TrainConfig

SIZES = [256, 1024, 4096]
FSQ_REAL_SIZE = {256: 240, 1024: 1000, 4096: 4000}   # FSQ rounds a requested size to a level product
SEEDS = [0, 1, 2]
STEPS = [0, 10, 20, 30, 40]


def final_utilization(quantizer: str, size: int, seed: int, latent_dim: int = 8) -> float:
    """Known values: VQ collapses with K, SimVQ stays high, FSQ always uses every code."""
    if quantizer == "vq":
        return {256: 0.9, 1024: 0.5, 4096: 0.2}[size] + 0.01 * seed + 0.001 * latent_dim
    if quantizer == "simvq":
        return {256: 0.97, 1024: 0.95, 4096: 0.94}[size] - 0.005 * seed * seed + 0.001 * latent_dim
    return 1.0


def gradient_coverage(quantizer: str, size: int, seed: int, step: int) -> float | None:
    if quantizer == "fsq":
        return None   # no learned codebook, so no coverage curve
    if quantizer == "simvq":
        return 1.0
    return final_utilization("vq", size, seed) * 0.5 + 0.001 * step


def codebook_rank(quantizer: str, size: int, seed: int, step: int) -> float:
    return {"vq": 3.0, "simvq": 7.0, "fsq": 4.0}[quantizer] + 0.01 * step + 0.1 * seed + size / 4096


def log_trial(client: MlflowClient, experiment_id: str, parent_id: str | None, quantizer: str, size: int,
              seed: int, latent_dim: int = 8, status: str = "FINISHED", with_fid: bool = False) -> str:
    real_size = FSQ_REAL_SIZE[size] if quantizer == "fsq" else size
    config = TrainConfig(quantizer=quantizer, codebook_size=real_size, latent_dim=latent_dim, seed=seed, steps=40)
    tags = {keys.TAG_KIND: "trial", keys.TAG_QUANTIZER: quantizer, keys.TAG_CODEBOOK_SIZE: str(real_size),
            keys.TAG_LATENT_DIM: str(latent_dim), keys.TAG_SEED: str(seed), keys.TAG_DATASET: "photos",
            keys.TAG_DEVICE: "cpu", keys.TAG_PRESET: "test", keys.TAG_SWEEP: "synthetic",
            keys.TAG_TRIAL_KEY: config.trial_key()}
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    run = client.create_run(experiment_id, tags=tags, run_name=f"{quantizer}-K{size}-s{seed}")
    params = [Param(k, str(v)) for k, v in config.as_params().items()]
    params.append(Param(keys.PARAM_CODEBOOK_SIZE_REQUESTED, str(size)))
    now = int(time.time() * 1000)
    metrics = []
    utilization = final_utilization(quantizer, size, seed, latent_dim)
    for step in STEPS:
        metrics.append(Metric(keys.TRAIN_UTILIZATION, utilization * (0.5 + 0.5 * step / max(STEPS)), now, step))
        coverage = gradient_coverage(quantizer, size, seed, step)
        if coverage is not None:
            metrics.append(Metric(keys.PROBE_GRADIENT_COVERAGE, coverage, now, step))
        metrics.append(Metric(keys.PROBE_CODEBOOK_RANK, codebook_rank(quantizer, size, seed, step), now, step))
        metrics.append(Metric(keys.TRAIN_LOSS, 1.0 / (step + 1), now, step))
    if status == "FINISHED":
        finals = {keys.EVAL_UTILIZATION: utilization, keys.EVAL_PSNR: 20 + 2 * utilization + seed,
                  keys.EVAL_SSIM: 0.5 + 0.1 * utilization, keys.EVAL_MSE: 0.01 / (1 + utilization)}
        if with_fid:
            finals[keys.EVAL_RFID] = 50 - 10 * utilization + seed
            finals[keys.EVAL_RKID] = 0.05 - 0.01 * utilization
        metrics += [Metric(k, v, now, STEPS[-1]) for k, v in finals.items()]
    client.log_batch(run.info.run_id, metrics=metrics, params=params)
    client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


def log_sweep(client: MlflowClient, experiment: str = "vqbench-test", quantizers=("vq", "fsq", "simvq"),
              sizes=SIZES, seeds=SEEDS, latent_dims=(8,), failed: int = 1, with_fid: bool = False,
              artifact_location: str | None = None) -> str:
    """A sweep parent run with one FINISHED child per (quantizer, size, seed, latent dim) and ``failed``
    FAILED vq children. Returns the parent run id."""
    experiment_id = client.create_experiment(experiment, artifact_location=artifact_location)
    parent = client.create_run(experiment_id, tags={keys.TAG_KIND: "sweep", keys.TAG_SWEEP: "synthetic",
                                                    keys.TAG_PRESET: "test"}, run_name="sweep-synthetic")
    parent_id = parent.info.run_id
    for quantizer in quantizers:
        for size in sizes:
            for seed in seeds:
                for latent_dim in latent_dims:
                    log_trial(client, experiment_id, parent_id, quantizer, size, seed, latent_dim, with_fid=with_fid)
    for i in range(failed):
        log_trial(client, experiment_id, parent_id, "vq", sizes[-1], 100 + i, status="FAILED")
    client.set_terminated(parent_id)
    return parent_id
