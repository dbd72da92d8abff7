"""A sweep's wall time on this machine, estimated from a short calibration (``vqbench sweep --dry-run``).

:func:`estimate_sweep` builds each distinct cost configuration of the trials once (backbone and its sizes,
dataset, quantizer, codebook size, latent dim, batch size: seeds do not change the cost), times a few
training steps after a warm-up step at the sweep's threads per trial, and times the evaluation pass over
the trial's test sample (the code-usage pass of the early checkpoints and the full pass of the last). A
trial's time is then

    steps x s/step + (checkpoints - 1) x partial evaluation + full evaluation + PER_TRIAL_OVERHEAD_S

and the trials are dealt, in order, to ``cpus // cpus_per_trial`` parallel slots (each to the slot that
frees first, as Ray Tune schedules them), plus ``RAY_STARTUP_S`` and ``WORKER_STARTUP_S`` per slot. When
other work shares the CPUs, the fixed costs are scaled by the busy factor (wall / CPU time of the timed
steps), which the step and evaluation times already carry. For trials with ``stop_when_converged``
the steps are the cap, so the estimate is an upper bound.

Approximations, stated so the number can be judged:

- the calibration runs one configuration at a time; in the sweep ``slots`` trials run side by side and
  share memory bandwidth and caches (measured here: about 10-20% slower per step on 2 cores);
- the evaluation passes are timed on the first ``EVAL_CALIBRATION_SAMPLES`` test samples and scaled
  linearly to the trial's sample; the code-usage pass is timed once per (backbone, dataset, codebook size) with the first
  quantizer met at that size, and the decode-and-quality part of the full pass once per (backbone, dataset);
- under ``budget_s`` (default 20 s) every distinct configuration is timed in this order: one per codebook
  size, then one per quantizer, then the rest; configurations not reached are given the time of the same
  quantizer at the nearest size scaled by that size's ratio, or else the median of those measured
  (``Estimate.approximated`` counts them);
- data-initialized codebooks (VQGAN-LC's k-means of InceptionV3 features) are not initialized here: the
  first run on a fresh cache pays that once (k-means and weight conversion), later runs read the cache;
- ``PER_TRIAL_OVERHEAD_S`` and ``RAY_STARTUP_S`` are measured constants (results/throughput/profile_quick.md:
  33 trials spent 24 + 4 + 14 + 2 core-s on set-up, probes, MLflow and loop bookkeeping, 1.3 s a trial, and
  17 core-s on Ray start, worker start-up and scheduling).
"""
from __future__ import annotations

import math
import statistics
import time

from .estimate import PER_TRIAL_OVERHEAD_S, RAY_STARTUP_S, WORKER_STARTUP_S, Estimate

#: Test samples an evaluation pass is timed on (scaled to the trial's sample: the passes are linear in it).
EVAL_CALIBRATION_SAMPLES = 256
#: The calibration's own time budget: past it, configurations are estimated from those already timed.
DEFAULT_BUDGET_S = 20.0


def cost_key(config) -> tuple:
    """What a trial's cost depends on (not its seed)."""
    return (config.quantizer, config.codebook_size, config.latent_dim, config.batch_size,
            config.resolved_backbone(), config.dataset, config.image_size, config.sample_rate,
            config.clip_samples, config.width, config.num_res_blocks, config.num_downsamples,
            tuple(sorted((k, repr(v)) for k, v in config.quantizer_options.items())), config.optimizer,
            config.data_dir, config.validation_fraction, config.eval_samples)


def _eval_key(config) -> tuple:
    return cost_key(config)[4:12] + (config.codebook_size, config.eval_samples, config.validation_fraction)


def _data_key(config) -> tuple:
    return (config.dataset, config.image_size, config.sample_rate, config.clip_samples, config.data_dir,
            config.validation_fraction)


def calibration_order(configs: list) -> list:
    """Distinct configurations, the most informative first: one per codebook size, then one per quantizer
    (at the largest size), then the rest in trial order."""
    first_per_size, first_per_quantizer, rest = [], [], []
    sizes, quantizers = set(), set()
    largest = {}
    for config in configs:
        largest[config.quantizer] = max(largest.get(config.quantizer, 0), config.codebook_size)
    for config in configs:
        if config.codebook_size not in sizes:
            sizes.add(config.codebook_size)
            first_per_size.append(config)
    chosen = {cost_key(c) for c in first_per_size}
    for config in configs:
        if (config.quantizer not in quantizers and config.codebook_size == largest[config.quantizer]
                and cost_key(config) not in chosen):
            quantizers.add(config.quantizer)
            first_per_quantizer.append(config)
    chosen |= {cost_key(c) for c in first_per_quantizer}
    rest = [c for c in configs if cost_key(c) not in chosen]
    return first_per_size + first_per_quantizer + rest


class _Calibrator:
    def __init__(self, threads: int, steps: int, warmup: int):
        self.threads, self.steps, self.warmup = threads, steps, warmup
        self.datasets: dict[tuple, object] = {}
        self.wall = self.cpu = 0.0   # over the timed steps: how much of its cores the calibration got

    def dataset(self, config):
        from benchmark.data.sampling import validation_split
        from benchmark.data.sources import load_dataset
        from benchmark.training.setup import DATASET_SEED, data_request

        key = _data_key(config)
        if key not in self.datasets:
            dataset = load_dataset(config.dataset, data_request(config))
            if config.validation_fraction:
                dataset = validation_split(dataset, config.validation_fraction, seed=DATASET_SEED)
            self.datasets[key] = dataset
        return self.datasets[key]

    def model(self, config):

        from benchmark.device import resolve_device
        from benchmark.evaluation.modality import get_modality
        from benchmark.training.setup import build_model, build_optimizer

        dataset = self.dataset(config)
        device = resolve_device(config.device)
        model = build_model(config, dataset.channels).to(device)
        optimizer = build_optimizer(config, [p for p in model.parameters() if p.requires_grad])
        return dataset, get_modality(config.modality()), model, optimizer, device

    def step_time(self, config, extra_warmup: int = 0) -> tuple[float, tuple]:
        """Median seconds per training step (the trainer's step: forward, loss, backward, optimizer)."""
        import torch

        from benchmark.training.setup import DATA_ORDER_SEED_OFFSET, batch_order

        dataset, modality, model, optimizer, device = self.model(config)
        train = torch.as_tensor(dataset.train)
        batches = batch_order(len(train), config.batch_size, config.seed + DATA_ORDER_SEED_OFFSET)
        model.train()
        times = []
        warmup = self.warmup + extra_warmup
        for index in range(warmup + self.steps):
            started, cpu_started = time.perf_counter(), time.process_time()
            images = modality.to_float(train[next(batches)], device)
            output = model(images)
            loss = modality.reconstruction_loss(output.reconstruction, images, dataset) + output.quantizer.loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            float(loss.detach())
            if index >= warmup:
                times.append(time.perf_counter() - started)
                self.wall += times[-1]
                self.cpu += time.process_time() - cpu_started
        return statistics.median(times), (dataset, modality, model, device)

    def eval_time(self, config, built, full: bool = True) -> tuple[float, float | None]:
        """Seconds of one code-usage pass and (``full``) of one full pass (decode and quality metrics) on the
        test sample."""
        import torch

        from benchmark.evaluation.checkpoints import evaluate, evaluation_plan

        dataset, modality, model, device = built
        indices = evaluation_plan(dataset, config.eval_samples, 0).indices
        # a prefix of the sample, scaled: the passes are linear in the number of samples
        timed = indices[:EVAL_CALIBRATION_SAMPLES]
        scale = len(indices) / max(1, len(timed))
        samples = torch.as_tensor(dataset.test)[timed]
        started = time.perf_counter()
        evaluate(model, samples, device, modality, dataset, full=False)
        partial = (time.perf_counter() - started) * scale
        if not full:
            return partial, None
        started = time.perf_counter()
        evaluate(model, samples, device, modality, dataset, full=True)
        return partial, (time.perf_counter() - started) * scale


def estimate_sweep(trials: list, cpus: int, cpus_per_trial: int = 1, *, steps: int = 3, warmup: int = 1,
                   budget_s: float = DEFAULT_BUDGET_S, ray_startup_s: float = RAY_STARTUP_S,
                   worker_startup_s: float = WORKER_STARTUP_S,
                   per_trial_overhead_s: float = PER_TRIAL_OVERHEAD_S) -> Estimate:
    """The estimated wall time of ``trials`` (``sweeps.grid.Trial``) on ``cpus`` CPUs, ``cpus_per_trial`` each.

    Times ``steps`` training steps after ``warmup`` per distinct configuration at ``cpus_per_trial`` torch
    threads, and one partial and one full evaluation pass per (backbone, dataset, size), within about
    ``budget_s`` seconds (see the module's notes for what is derived past it). Trains nothing that is kept.
    """
    import torch

    from benchmark.evaluation.checkpoints import checkpoint_steps

    if not trials:
        raise ValueError("no trials to estimate")
    if cpus < 1 or cpus_per_trial < 1:
        raise ValueError(f"cpus and cpus_per_trial must be >= 1; got {cpus}, {cpus_per_trial}")
    slots = max(1, cpus // cpus_per_trial)
    configs = [t.config for t in trials]
    distinct: dict[tuple, object] = {}
    for config in configs:
        distinct.setdefault(cost_key(config), config)
    order = calibration_order(list(distinct.values()))

    threads = torch.get_num_threads()
    torch.set_num_threads(cpus_per_trial)
    calibrator = _Calibrator(cpus_per_trial, steps, warmup)
    step_s: dict[tuple, float] = {}
    eval_s: dict[tuple, tuple[float, float]] = {}
    decode_s: dict[tuple, float] = {}
    started = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[]):
            for index, config in enumerate(order):
                # the first configuration is always timed; the others while the budget lasts
                if index and time.perf_counter() - started > budget_s:
                    break
                # the process's first steps also pay one-time costs (kernels' first calls): one more warm-up
                seconds, built = calibrator.step_time(config, extra_warmup=1 if index == 0 else 0)
                step_s[cost_key(config)] = seconds
                ekey = _eval_key(config)
                if ekey not in eval_s:
                    # the code-usage pass per size; the decode-and-quality part of the full pass once per backbone
                    partial, full = calibrator.eval_time(config, built, full=ekey[:-3] not in decode_s)
                    if full is not None:
                        decode_s[ekey[:-3]] = max(0.0, full - partial)
                    eval_s[ekey] = (partial, partial + decode_s[ekey[:-3]])
            # the first configuration again: its first timing also carried the process's one-time costs
            first = cost_key(order[0])
            seconds, _ = calibrator.step_time(order[0])
            step_s[first] = min(step_s[first], seconds)
    finally:
        torch.set_num_threads(threads)
    calibration_s = time.perf_counter() - started

    measured = len(step_s)
    for key, config in distinct.items():
        if key not in step_s:
            step_s[key] = _derive(key, step_s)
        ekey = _eval_key(config)
        if ekey not in eval_s:
            eval_s[ekey] = _derive_eval(ekey, eval_s, decode_s)

    # The fixed costs are quiet-machine constants: scaled by the share of its cores the calibration got
    # (wall / CPU time of its timed steps at cpus_per_trial threads), as the timed steps already are.
    busy = min(10.0, max(1.0, calibrator.wall * cpus_per_trial / calibrator.cpu)) if calibrator.cpu > 0 else 1.0
    trial_s = []
    for config in configs:
        checkpoints = checkpoint_steps(config.steps, config.eval_checkpoints, config.checkpoint_ratio)
        partial, full = eval_s[_eval_key(config)]
        trial_s.append(config.steps * step_s[cost_key(config)] + (len(checkpoints) - 1) * partial + full
                       + per_trial_overhead_s * busy)
    return Estimate(trials=len(trials), slots=slots, trial_s=trial_s, step_s=step_s, eval_s=eval_s,
                    calibration_s=calibration_s, measured=measured, approximated=len(distinct) - measured,
                    upper_bound=any(c.stop_when_converged for c in configs), busy_factor=busy,
                    ray_startup_s=ray_startup_s, worker_startup_s=worker_startup_s,
                    per_trial_overhead_s=per_trial_overhead_s)


def _derive(key: tuple, timed: dict[tuple, float]) -> float:
    """A configuration past the budget: the same quantizer at the nearest timed size, scaled by how that
    size's time compares (over quantizers timed at both sizes); else the median at that size; else all."""
    quantizer, size = key[0], key[1]
    rest = key[2:]
    same_quantizer = {k[1]: v for k, v in timed.items() if k[0] == quantizer and k[2:] == rest}
    if same_quantizer:
        nearest = min(same_quantizer, key=lambda s: (abs(math.log2(s) - math.log2(size)), s))
        ratios = [timed[k] / timed[(k[0], nearest) + k[2:]] for k in timed
                  if k[1] == size and k[2:] == rest and (k[0], nearest) + k[2:] in timed]
        return same_quantizer[nearest] * (statistics.median(ratios) if ratios else 1.0)
    same_size = [v for k, v in timed.items() if k[1] == size and k[2:] == rest]
    return statistics.median(same_size or list(timed.values()))


def _derive_eval(ekey: tuple, timed: dict[tuple, tuple[float, float]], decode_s: dict[tuple, float]
                 ) -> tuple[float, float]:
    same_backbone = [v for k, v in timed.items() if k[:-3] == ekey[:-3]] or list(timed.values())
    partial = max(p for p, _ in same_backbone)
    return partial, partial + decode_s.get(ekey[:-3], max(f - p for p, f in same_backbone))


def estimate_line(trials: list, cpus: int, cpus_per_trial: int = 1, **options) -> str:
    """:meth:`Estimate.line` of :func:`estimate_sweep`, or one line saying why there is no estimate (the
    dry run goes on: data it cannot decode is refused by the dry run's own checks)."""
    try:
        return estimate_sweep(trials, cpus, cpus_per_trial, **options).line()
    except Exception as error:  # noqa: BLE001 - an estimate must never fail a dry run
        return f"no wall-time estimate ({type(error).__name__}: {error})"
