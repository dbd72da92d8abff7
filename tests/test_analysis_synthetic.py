"""(No tests here: helpers for the analysis tests.) Synthetic MLflow runs with known values, shaped like the
trainer's and the sweep's runs (benchmark/keys.py): a sweep parent run (vqbench.kind = sweep) and one child
run per trial, with eval/* at every evaluation checkpoint, the probes, and the convergence verdict."""
from __future__ import annotations

import math
import time

from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from benchmark.evaluation.checkpoints import convergence
from benchmark.tracking import keys
from benchmark.training.config import TrainConfig

SIZES = [256, 1024, 4096]
FSQ_REAL_SIZE = {256: 240, 1024: 1000, 4096: 4000}   # FSQ rounds a requested size to a level product
SEEDS = [0, 1, 2]
TRAIN_STEPS = 40
STEPS = [0, 10, 20, 30, 40]                  # curve steps (train/*, probe/*)
CHECKPOINTS = [5, 10, 20, 40]                # evaluation checkpoints: 1/8, 1/4, 1/2, all of the steps
BATCH_SIZE = 64
EVAL_IMAGES = 256
TOKENS = EVAL_IMAGES * 64                    # 16,384 test tokens: < 10·K only at K = 4096 (capped there)
QUANTIZERS = ("vq", "fsq", "simvq", "vq-simvq-init", "simvq-frozen-w")
UNCONVERGED = {("vq-simvq-init", 4096)}      # still rising over its last doubling of samples
CODEBOOK_QUANTIZERS = {"vq", "simvq", "vq-simvq-init", "simvq-frozen-w"}


def ceiling(size: int, tokens: int = TOKENS) -> float:
    return 1 - (1 - 1 / size) ** tokens


def real_size(quantizer: str, size: int) -> int:
    return FSQ_REAL_SIZE[size] if quantizer == "fsq" else size


def final_relative(quantizer: str, size: int, seed: int, latent_dim: int = 8) -> float:
    """Known final utilization / ceiling: VQ collapses with K, SimVQ falls by 0.03 (no meaningful trend),
    FSQ uses every code, the controls sit in between."""
    jitter = 0.002 * ((seed + int(math.log2(size))) % 3)
    if quantizer == "vq":
        return {256: 0.9, 1024: 0.5, 4096: 0.2, 16384: 0.1}[size] + 0.01 * seed + 0.001 * latent_dim
    if quantizer == "simvq":
        return {256: 0.97, 1024: 0.95, 4096: 0.94}[size] - 0.005 * seed * seed + 0.001 * latent_dim - jitter
    if quantizer == "vq-simvq-init":
        return {256: 0.92, 1024: 0.7, 4096: 0.5}[size] + 0.012 * seed - 1.5 * jitter
    if quantizer == "simvq-frozen-w":
        return {256: 0.9, 1024: 0.6, 4096: 0.35}[size] + 0.015 * seed + jitter
    return 1.0


def final_utilization(quantizer: str, size: int, seed: int, latent_dim: int = 8) -> float:
    return final_relative(quantizer, size, seed, latent_dim) * ceiling(real_size(quantizer, size))


def relative_at(quantizer: str, size: int, seed: int, step: int, latent_dim: int = 8) -> float:
    """Utilization / ceiling at an evaluation checkpoint: flat to 0.2 % from the first checkpoint (converged
    by the slope rule), except UNCONVERGED, which rises by 0.15 of its final value per doubling of samples."""
    final = final_relative(quantizer, size, seed, latent_dim)
    if (quantizer, size) in UNCONVERGED:
        return final * (1.0 - 0.15 * math.log2(TRAIN_STEPS / step))
    return final * (1 - 0.002 * (TRAIN_STEPS - step) / TRAIN_STEPS)


def utilization_change(quantizer: str, size: int, seed: int, latent_dim: int = 8) -> float:
    final = relative_at(quantizer, size, seed, TRAIN_STEPS, latent_dim)
    half = relative_at(quantizer, size, seed, TRAIN_STEPS // 2, latent_dim)
    return (final - half) / max(final, half)


def probe_value(probe: str, quantizer: str, size: int, seed: int, step: int) -> float | None:
    """Probe curves for codebook quantizers: unused-code distance tracks low utilization closely, the
    distribution gap hardly at all, dead-code revival loosely."""
    if quantizer not in CODEBOOK_QUANTIZERS:
        return None
    relative = final_relative(quantizer, size, seed)
    if probe == keys.PROBE_UNUSED_CODE_DISTANCE:
        return 3.0 - 2.0 * relative + 0.001 * step
    if probe == keys.PROBE_DISTRIBUTION_GAP:
        return 0.5 + 0.1 * ((seed + int(math.log2(size)) + len(quantizer)) % 3) + 0.001 * step
    if probe == keys.PROBE_DEAD_CODE_REVIVAL:
        return 0.3 * relative + 0.05 * ((seed * 5 + len(quantizer)) % 4)
    if probe == keys.PROBE_CODES_WITH_GRADIENT:   # the tautology: batch utilization, or 1 for SimVQ
        return 1.0 if quantizer.startswith("simvq") else relative
    raise KeyError(probe)


PROBE_KEYS = [keys.PROBE_UNUSED_CODE_DISTANCE, keys.PROBE_DISTRIBUTION_GAP, keys.PROBE_DEAD_CODE_REVIVAL,
              keys.PROBE_CODES_WITH_GRADIENT]


def late_mean(probe: str, quantizer: str, size: int, seed: int) -> float:
    """The probe's mean over the last quarter of its steps (what analysis.mechanism uses)."""
    late = [s for s in STEPS if s >= 0.75 * max(STEPS)]
    return sum(probe_value(probe, quantizer, size, seed, s) for s in late) / len(late)


def codebook_rank(quantizer: str, size: int, seed: int, step: int) -> float:
    base = {"vq": 3.0, "simvq": 7.0, "fsq": 4.0}.get(quantizer, 5.0)
    return base + 0.01 * step + 0.1 * seed + size / 4096


def _eval_metrics(quantizer: str, size: int, seed: int, latent_dim: int, step: int, now: int) -> list[Metric]:
    real = real_size(quantizer, size)
    relative = relative_at(quantizer, size, seed, step, latent_dim)
    values = {keys.EVAL_UTILIZATION: relative * ceiling(real), keys.EVAL_TOKENS: TOKENS,
              keys.EVAL_UTILIZATION_CEILING: ceiling(real), keys.EVAL_UTILIZATION_RELATIVE: relative,
              keys.EVAL_PERPLEXITY: 0.8 * relative * real, keys.EVAL_PERPLEXITY_CEILING: 0.8 * real,
              keys.EVAL_PERPLEXITY_RELATIVE: relative, keys.EVAL_PSNR: 20 + 2 * relative + seed,
              keys.EVAL_SSIM: 0.5 + 0.1 * relative, keys.EVAL_MSE: 0.01 / (1 + relative),
              keys.EVAL_SAMPLES_SEEN: step * BATCH_SIZE}
    return [Metric(k, float(v), now, step) for k, v in values.items()]


def log_trial(client: MlflowClient, experiment_id: str, parent_id: str | None, quantizer: str, size: int,
              seed: int, latent_dim: int = 8, status: str = "FINISHED", with_fid: bool = False,
              steps: int = TRAIN_STEPS, sweep: str = "synthetic", legacy: bool = False) -> str:
    """One trial run. ``legacy``: log only what trials logged before the slope rule (the two-point
    eval/utilization_change and its eval/converged), so analysis must recompute convergence."""
    real = real_size(quantizer, size)
    config = TrainConfig(quantizer=quantizer, codebook_size=real, latent_dim=latent_dim, seed=seed, steps=steps,
                         batch_size=BATCH_SIZE, eval_samples=EVAL_IMAGES, fid_samples=128 if with_fid else 0)
    tags = {keys.TAG_KIND: "trial", keys.TAG_QUANTIZER: quantizer, keys.TAG_CODEBOOK_SIZE: str(real),
            keys.TAG_LATENT_DIM: str(latent_dim), keys.TAG_SEED: str(seed), keys.TAG_DATASET: "photos",
            keys.TAG_DEVICE: "cpu", keys.TAG_PRESET: "test", keys.TAG_SWEEP: sweep,
            keys.TAG_TRIAL_KEY: config.trial_key()}
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    run = client.create_run(experiment_id, tags=tags, run_name=f"{quantizer}-K{size}-s{seed}")
    values = {k: str(v) for k, v in config.as_params().items()}
    values.setdefault("optimizer", "adamw")
    values.update({keys.PARAM_CODEBOOK_SIZE_REQUESTED: str(size), keys.PARAM_EVAL_INDICES_DIGEST: "abc123",
                   keys.PARAM_EVAL_IMAGES: str(EVAL_IMAGES)})
    params = [Param(k, v) for k, v in values.items()]
    now = int(time.time() * 1000)
    metrics = []
    for step in STEPS:
        metrics.append(Metric(keys.TRAIN_UTILIZATION, final_utilization(quantizer, size, seed, latent_dim)
                              * (0.5 + 0.5 * step / max(STEPS)), now, step))
        for probe in PROBE_KEYS:
            value = probe_value(probe, quantizer, size, seed, step)
            if value is not None:
                metrics.append(Metric(probe, value, now, step))
        metrics.append(Metric(keys.PROBE_CODEBOOK_RANK, codebook_rank(quantizer, size, seed, step), now, step))
        metrics.append(Metric(keys.TRAIN_LOSS, 1.0 / (step + 1), now, step))
    if status == "FINISHED":
        for step in CHECKPOINTS:
            metrics += _eval_metrics(quantizer, size, seed, latent_dim, step, now)
        change = utilization_change(quantizer, size, seed, latent_dim)
        if legacy:
            finals = {keys.EVAL_UTILIZATION_CHANGE: change,
                      keys.EVAL_CONVERGED: float(abs(change) <= keys.CONVERGENCE_TOLERANCE)}
        else:
            history = [(step, relative_at(quantizer, size, seed, step, latent_dim) * ceiling(real))
                       for step in CHECKPOINTS]
            finals = convergence(history)
        finals[keys.COST_SAMPLES_SEEN] = steps * BATCH_SIZE
        if with_fid:
            utilization = final_utilization(quantizer, size, seed, latent_dim)
            finals.update({keys.EVAL_RFID: 50 - 10 * utilization + seed, keys.EVAL_RKID: 0.05 - 0.01 * utilization,
                           keys.EVAL_RFID_SAMPLES: 128})
        metrics += [Metric(k, float(v), now, CHECKPOINTS[-1]) for k, v in finals.items()]
        tags_after = {keys.TAG_CONVERGED: "yes" if finals[keys.EVAL_CONVERGED] else "no"}
        for key, value in tags_after.items():
            client.set_tag(run.info.run_id, key, value)
    client.log_batch(run.info.run_id, metrics=metrics, params=params)
    client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


def log_sweep(client: MlflowClient, experiment: str = "vqbench-test", quantizers=QUANTIZERS,
              sizes=SIZES, seeds=SEEDS, latent_dims=(8,), failed: int = 1, with_fid: bool = False,
              artifact_location: str | None = None, steps: int = TRAIN_STEPS, name: str = "synthetic",
              legacy: bool = False) -> str:
    """A sweep parent run with one FINISHED child per (quantizer, size, seed, latent dim) and ``failed``
    FAILED vq children, in ``experiment`` (created when missing). Returns the parent run id."""
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(
        experiment, artifact_location=artifact_location)
    parent = client.create_run(experiment_id, tags={keys.TAG_KIND: "sweep", keys.TAG_SWEEP: name,
                                                    keys.TAG_PRESET: "test"}, run_name=f"sweep-{name}")
    parent_id = parent.info.run_id
    for quantizer in quantizers:
        for size in sizes:
            for seed in seeds:
                for latent_dim in latent_dims:
                    log_trial(client, experiment_id, parent_id, quantizer, size, seed, latent_dim,
                              with_fid=with_fid, steps=steps, sweep=name, legacy=legacy)
    for i in range(failed):
        log_trial(client, experiment_id, parent_id, "vq", sizes[-1], 100 + i, status="FAILED", sweep=name)
    client.set_terminated(parent_id)
    return parent_id
