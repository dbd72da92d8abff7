"""Train one autoencoder with one quantizer under an identical budget, and log the trial to MLflow.

One explicit loop (nanoGPT-style): the budget, the log and probe cadences and the evaluation are all
visible in :func:`train`. What makes trials comparable (issue 4, "identical budget"):

- the same samples: ``steps × batch_size`` images, drawn from one permutation of the training set per
  epoch by a generator seeded from ``config.seed`` (:func:`batch_order`), so every quantizer sees the
  same images in the same order for a seed;
- the same backbone: the encoder body, decoder body and latent projections come from their own streams
  seeded by ``config.seed`` (``benchmark.models.conv2d.build_backbone``) and the quantizer from another, so every
  quantizer, at every latent dim, starts from the same backbone parameters for a seed (:func:`build_model`);
- the same optimizer: AdamW (or the paper's Adam, ``optimizer="adam-paper"``) over every trainable
  parameter, linear warm-up over ``warmup_steps`` then a constant learning rate. Constant rather than
  cosine: the curve up to step t does not depend on the total budget, so a short run is a prefix of a
  long one, and the evaluation checkpoints inside one trial give the budget axis;
- the same data and test split for every trial: the dataset is built with a fixed seed, not the trial's.

Measurement (issue 11, 12, 15): evaluation on a fixed stratified test sample at checkpoints with uniform
ceilings (``benchmark.evaluation``), the collapse probes (``benchmark.evaluation.probes``) on a cadence, and the
time of every stage (:class:`StageClock`) logged as ``cost/*``.

Loss = MSE(reconstruction, images) + the quantizer's loss. A NaN or infinite loss (or encoder output)
raises :class:`NonFiniteLossError` naming the step; the MLflow run is then marked FAILED, as it is for
any other exception, so no run is left RUNNING.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from benchmark.evaluation.usage import utilization_ceiling
from benchmark.tracking import keys
from benchmark.tracking.runs import RunTracking, TrialRun, default_run_name, trial_tags
from benchmark.training.config import TrainConfig
from benchmark.training.run_record import MIN_UNBIASED_FID_IMAGES, dataset_profile, describe_trial, usage_histogram
from benchmark.training.setup import (COST_KEYS, DATA_ORDER_SEED_OFFSET, DATASET_SEED, StageClock, batch_order,
                                      build_model, build_optimizer, build_quantizer, data_request,
                                      initialize_from_data, learning_rate)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite. Raised after the MLflow run is marked FAILED."""

    def __init__(self, step: int, loss: float, detail: str = ""):
        self.step = step
        self.loss = loss
        message = f"the training loss is not finite at step {step}: loss={loss}"
        if detail:
            message += f" ({detail})"
        super().__init__(message + "; lower the learning rate or check the quantizer's options")


@dataclass
class TrainResult:
    run_id: str | None              # None when trained without MLflow
    metrics: dict[str, float]       # the final metrics (keys.FINAL names) + final curve values


def train(config: TrainConfig, *, tracking: RunTracking | None = None,
          on_log: Callable[[int, dict[str, float]], None] | None = None,
          progress: bool = True) -> TrainResult:
    """Train ``config``'s trial; log it to MLflow when ``tracking`` is given.

    ``on_log(step, metrics)`` is called at every log step with the curve values (and the latest probes
    and checkpoint evaluation). Raises ValueError for a bad config before any compute,
    :class:`NonFiniteLossError` when the loss diverges. Any exception marks the MLflow run FAILED and is
    re-raised.
    """
    from tqdm.auto import tqdm

    from benchmark.data.sampling import validation_split
    from benchmark.data.sources import load_dataset
    from benchmark.evaluation.convergence import convergence_verdict
    from benchmark.device import resolve_device
    from benchmark.evaluation.checkpoints import (checkpoint_steps, convergence, evaluate, evaluation_plan,
                                                  fid_metrics, reconstruct)
    from benchmark.evaluation.modality import get_modality
    from benchmark.evaluation.probes import DeadCodeRevival, codes_with_gradient, collapse_probes
    from benchmark.evaluation.revival import code_turnover
    from benchmark.evaluation.usage import CodeUsageWindow
    from benchmark.models.registry import get_backbone

    clock = StageClock()
    trial_started = time.perf_counter()
    # ---- validate and set up everything that can fail cheaply, before any compute
    with clock("setup"):
        config.validate()
        device = resolve_device(config.device)
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        quantizer = build_quantizer(config)  # unknown options / impossible sizes fail here
        codebook_size = quantizer.codebook_size  # FSQ rounds the requested size to a product of levels
        modality = get_modality(config.modality())
        backbone = get_backbone(config.resolved_backbone())
        fid_samples = config.fid_samples if modality.supports_fid else 0
        dataset = load_dataset(config.dataset, data_request(config))
        if config.validation_fraction:
            dataset = validation_split(dataset, config.validation_fraction, seed=DATASET_SEED)
        train_images, test_images = torch.as_tensor(dataset.train), torch.as_tensor(dataset.test)
        plan = evaluation_plan(dataset, config.eval_samples, fid_samples)
        if fid_samples:
            from benchmark.evaluation.inception import weights_provenance

            fid_provenance = weights_provenance()
        initialize_from_data(quantizer, config, dataset, train_images, device)
        model = build_model(config, dataset.channels, quantizer).to(device)
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = build_optimizer(config, parameters)

    run_name = (tracking.run_name if tracking and tracking.run_name else
                default_run_name(config.quantizer, codebook_size, config.latent_dim, config.seed))
    if tracking is None:
        run = TrialRun.untracked()
    else:
        with clock("tracking"):
            run = TrialRun.start(
                tracking, run_name=run_name,
                description=describe_trial(config, codebook_size, dataset, device, plan, backbone.tokens(config)),
                tags=trial_tags(quantizer=config.quantizer, codebook_size=codebook_size,
                                latent_dim=config.latent_dim, seed=config.seed, dataset=dataset.name,
                                device=str(device), trial_key=config.trial_key()),
            )
    with run:
        with clock("tracking"):
            params = {**config.as_params(), keys.PARAM_CODEBOOK_SIZE_REQUESTED: config.codebook_size,
                      keys.PARAM_EVAL_IMAGES: len(plan.indices), keys.PARAM_EVAL_INDICES_DIGEST: plan.digest}
            params["codebook_size"] = codebook_size
            params.update({keys.PARAM_MODALITY: modality.name, keys.PARAM_BACKBONE_RESOLVED: backbone.name,
                           keys.PARAM_TOKENS_PER_SAMPLE: backbone.tokens(config)})
            if fid_samples:
                params.update({keys.PARAM_FID_INDICES_DIGEST: plan.fid_digest,
                               keys.PARAM_FID_WEIGHTS_SOURCE: fid_provenance["source"],
                               keys.PARAM_FID_WEIGHTS_DIGEST: fid_provenance["digest"]})
            run.log_params(params)
            run.log_dataset(name=dataset.name, source=str(dataset.source), digest=str(dataset.digest),
                            profile=dataset_profile(dataset, config, plan))
            run.log_dict({**asdict(config), keys.PARAM_CODEBOOK_SIZE_REQUESTED: config.codebook_size,
                          "codebook_size": codebook_size}, "config.json")

        # ---- the loop
        checkpoints = set(checkpoint_steps(config.steps, config.eval_checkpoints, config.checkpoint_ratio))
        usage: CodeUsageWindow | None = None   # sized from the first step's token count
        revival = DeadCodeRevival(codebook_size, window=config.dead_code_window)
        batches = batch_order(len(train_images), config.batch_size, config.seed + DATA_ORDER_SEED_OFFSET)
        window_sums: dict[str, float] = {}   # loss terms summed since the last log step
        window_steps = 0
        latest: dict[str, float] = {}        # latest value of every curve and checkpoint metric
        utilization_history: list[tuple[int, float]] = []
        evaluation_counts = None
        bar = tqdm(total=config.steps, desc=run_name, disable=not progress, file=sys.stderr,
                   dynamic_ncols=True)
        stopped_at: int | None = None        # the checkpoint where the stopping rule fired, if it did
        previous_counts = None               # code counts at the previous checkpoint (births and deaths)
        model.train()
        for step in range(1, config.steps + 1):
            probe = step == 1 or step % config.probe_every == 0
            with clock("train"):
                lr = learning_rate(step, config)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                images = modality.to_float(train_images[next(batches)], device)
                try:
                    output = model(images)
                except FloatingPointError as error:  # NonFiniteLatentError: the encoder already diverged
                    raise NonFiniteLossError(step, math.nan, str(error)) from error
                recon_loss = modality.reconstruction_loss(output.reconstruction, images, dataset)
                loss = recon_loss + output.quantizer.loss
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(step, float(loss))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            probes: dict[str, float] = {}
            indices = output.quantizer.indices.detach()
            if probe:
                with clock("probe"):
                    # before the optimizer step: the gradients and the codebook the forward used
                    moved = codes_with_gradient(quantizer)
                    if moved is not None:
                        probes[keys.PROBE_CODES_WITH_GRADIENT] = moved
                    probes.update(collapse_probes(quantizer, output.latents.detach(), indices,
                                                  dead=revival.dead_codes(step - 1)))
            with clock("train"):
                optimizer.step()
                terms = {keys.TRAIN_LOSS: loss, keys.TRAIN_RECON_LOSS: recon_loss,
                         keys.TRAIN_QUANT_LOSS: output.quantizer.loss,
                         **{f"train/{name}": value for name, value in output.quantizer.losses.items()},
                         **{f"train/{name}": torch.tensor(value) for name, value in quantizer.training_stats().items()}}
                for name, value in terms.items():
                    window_sums[name] = window_sums.get(name, 0.0) + float(value.detach())
                window_steps += 1
            with clock("probe"):
                if usage is None:
                    window = max(1, math.ceil(config.usage_window_tokens / indices.numel()))
                    usage = CodeUsageWindow(codebook_size, window=window, dead_window=config.dead_code_window)
                usage.update(indices, step)
                revival.update(indices, step)
                if probe:
                    revived = revival.value(step)
                    if revived is not None:
                        probes[keys.PROBE_DEAD_CODE_REVIVAL] = revived
            if probes:
                with clock("tracking"):
                    run.log_metrics(probes, step)
                latest.update(probes)
            bar.update(1)

            if step in checkpoints:
                with clock("eval"):
                    metrics, evaluation_counts = evaluate(model, test_images[plan.indices], device, modality,
                                                          dataset, full=step == config.steps)
                    metrics[keys.EVAL_SAMPLES_SEEN] = float(step * config.batch_size)
                utilization_history.append((step, metrics[keys.EVAL_UTILIZATION]))
                metrics.update(code_turnover(previous_counts, evaluation_counts))
                previous_counts = evaluation_counts
                if config.stop_when_converged and convergence_verdict(
                        [s * config.batch_size for s, _ in utilization_history],
                        [u for _, u in utilization_history], window=config.convergence_window,
                        abs_tol=keys.CONVERGENCE_ABS_TOL, rel_tol=keys.CONVERGENCE_REL_TOL).converged:
                    stopped_at = step  # levelled off (at the cap too: then it is not censored)
                    if step < config.steps:
                        with clock("eval"):  # the stop is the trial's end point: its full evaluation
                            full_metrics, evaluation_counts = evaluate(model, test_images[plan.indices], device,
                                                                       modality, dataset, full=True)
                            metrics.update(full_metrics)   # the same model: the same code counts
                with clock("tracking"):
                    run.log_metrics(metrics, step)
                latest.update(metrics)
            if step % config.log_every == 0 or step == config.steps or stopped_at:
                curves = {name: total / window_steps for name, total in window_sums.items()}
                window_counts = usage.counts()
                curves[keys.TRAIN_LR] = lr
                curves[keys.TRAIN_UTILIZATION] = usage.utilization()
                curves[keys.TRAIN_UTILIZATION_CEILING] = utilization_ceiling(codebook_size, int(window_counts.sum()))
                curves[keys.TRAIN_PERPLEXITY] = usage.perplexity()
                curves[keys.TRAIN_DEAD_CODES] = usage.dead_fraction()
                window_sums, window_steps = {}, 0
                latest.update(curves)
                with clock("tracking"):
                    run.log_metrics(curves, step)
                    run.flush()
                bar.set_postfix(loss=f"{curves[keys.TRAIN_LOSS]:.4f}",
                                util=f"{curves[keys.TRAIN_UTILIZATION]:.3f}")
                if on_log is not None:
                    on_log(step, dict(latest))
            if stopped_at:
                break  # at the cap the loop ends anyway
        bar.close()
        last_step = step

        # ---- the final evaluation: convergence, rFID on its stratified sample, artifacts
        final = convergence(utilization_history, window=config.convergence_window)
        if config.stop_when_converged:
            final.update({keys.BUDGET_STOPPED_STEP: float(last_step),
                          keys.BUDGET_STOPPED_SAMPLES: float(last_step * config.batch_size),
                          keys.BUDGET_CENSORED: float(stopped_at is None)})
        if fid_samples:
            if progress and len(plan.fid_indices) < MIN_UNBIASED_FID_IMAGES:
                print(f"rFID/rKID on {len(plan.fid_indices)} test images: biased upward with fewer than "
                      f"{MIN_UNBIASED_FID_IMAGES}; compare trials only at the same fid_samples.", file=sys.stderr)
            with clock("fid"):
                final.update(fid_metrics(model, test_images[plan.fid_indices], device,
                                         reference_name=f"{dataset.name}-{config.image_size}px-{dataset.digest}"))
        with clock("tracking"):
            if keys.EVAL_CONVERGED in final:
                run.set_tags({keys.TAG_CONVERGED: "yes" if final[keys.EVAL_CONVERGED] else "no"})
            if config.stop_when_converged:
                run.set_tags({keys.TAG_BUDGET_OUTCOME: "stopped-converged" if stopped_at else "censored-at-cap"})
            run.log_metrics(final, last_step)
            examples = test_images[plan.grid_indices]
            reconstructions, _ = reconstruct(model, examples, device, modality)
            modality.log_examples(run, modality.to_float(examples, torch.device("cpu")), reconstructions,
                                  dataset, run_name)
            run.log_figure(usage_histogram(evaluation_counts, run_name), "code_usage.png")
        samples_seen = last_step * config.batch_size
        cost = {key: clock.seconds.get(stage, 0.0) for stage, key in COST_KEYS.items()}
        cost.update({keys.COST_WALL_TIME: time.perf_counter() - trial_started,
                     keys.COST_SAMPLES_SEEN: float(samples_seen),
                     keys.COST_SAMPLES_PER_S: samples_seen / max(clock.seconds.get("train", 0.0), 1e-9)})
        run.log_metrics(cost, last_step)
        run.flush()
        result = TrainResult(run_id=run.run_id, metrics={**latest, **final, **cost})
    return result
