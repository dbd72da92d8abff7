"""Train one autoencoder with one quantizer under an identical budget, and log the trial to MLflow.

One explicit loop (nanoGPT-style): the budget, the log and probe cadences and the evaluation are all
visible in :func:`train`. What makes trials comparable (issue 4, "identical budget"):

- the same samples: ``steps × batch_size`` images, drawn from one permutation of the training set per
  epoch by a generator seeded from ``config.seed`` (:func:`batch_order`), so every quantizer sees the
  same images in the same order for a seed;
- the same backbone: the encoder and decoder are built right after seeding with ``config.seed`` and the
  quantizer is built afterwards from its own seeded RNG stream, so every quantizer starts from a
  bit-identical encoder/decoder for a seed (:func:`build_model`);
- the same optimizer: AdamW over every trainable parameter (backbone and quantizer alike), linear
  warm-up over ``warmup_steps`` then a constant learning rate. Constant rather than cosine: the curve
  up to step t does not depend on the total budget, so a short run is a prefix of a long one;
- the same data and test split for every trial: the dataset is built with a fixed seed, not the trial's.

Loss = MSE(reconstruction, images) + the quantizer's loss. A NaN or infinite loss (or encoder output)
raises :class:`NonFiniteLossError` naming the step; the MLflow run is then marked FAILED, as it is for
any other exception, so no run is left RUNNING.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from benchmark import keys
from benchmark.config import TrainConfig
from benchmark.tracking import RunTracking, TrialRun, default_run_name, trial_tags

#: The dataset (its patches and its train/test split) is the same for every trial: built with this
#: seed, not the trial's, so seeds vary the initialization and the data order only.
DATASET_SEED = 0
#: Offsets that give the quantizer's initialization and the data order their own RNG streams, distinct
#: from the backbone's (all three derive from config.seed).
QUANTIZER_SEED_OFFSET = 1_000_003
DATA_ORDER_SEED_OFFSET = 2_000_003
#: Test images shown in the reconstruction grid (originals above reconstructions), and their upscaling
#: so 32 px images are visible in the MLflow UI.
GRID_IMAGES = 8
GRID_SCALE = 4


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


# ----------------------------------------------------------------------------- the identical budget
def batch_order(num_samples: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless batches of sample indices: one seeded permutation per epoch, batches may span two epochs
    (so every sample is seen equally often whatever the batch size)."""
    generator = torch.Generator().manual_seed(seed)
    pending = torch.empty(0, dtype=torch.long)
    while True:
        while pending.numel() < batch_size:
            pending = torch.cat([pending, torch.randperm(num_samples, generator=generator)])
        yield pending[:batch_size]
        pending = pending[batch_size:]


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up from lr/warmup_steps at step 1 to lr at step warmup_steps, then constant."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * step / config.warmup_steps
    return config.lr


def build_quantizer(config: TrainConfig):
    """The configured quantizer, initialized from its own RNG stream (the global RNG is left untouched)."""
    import quantizers

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + QUANTIZER_SEED_OFFSET)
        return quantizers.build(config.quantizer, dim=config.latent_dim, codebook_size=config.codebook_size,
                                **config.quantizer_options)


def build_model(config: TrainConfig, channels: int, quantizer=None):
    """Encoder + quantizer + decoder on the CPU. The backbone depends only on (config, channels), never on
    the quantizer: it is drawn right after seeding with ``config.seed``."""
    from benchmark.model import VQAutoencoder, build_backbone

    quantizer = quantizer if quantizer is not None else build_quantizer(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        encoder, decoder = build_backbone(channels=channels, width=config.width,
                                          num_res_blocks=config.num_res_blocks,
                                          num_downsamples=config.num_downsamples,
                                          latent_dim=config.latent_dim)
    return VQAutoencoder(encoder, quantizer, decoder)


def to_float_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` -> float in [0, 1] on ``device``."""
    return images.to(device=device, non_blocking=True).float().div_(255.0)


# ----------------------------------------------------------------------------- the trainer
def train(config: TrainConfig, *, tracking: RunTracking | None = None,
          on_log: Callable[[int, dict[str, float]], None] | None = None,
          progress: bool = True) -> TrainResult:
    """Train ``config``'s trial; log it to MLflow when ``tracking`` is given.

    ``on_log(step, metrics)`` is called at every log step with the curve values (and the latest probes).
    Raises ValueError for a bad config before any compute, :class:`NonFiniteLossError` when the loss
    diverges. Any exception marks the MLflow run FAILED and is re-raised.
    """
    from tqdm.auto import tqdm

    from benchmark.data import load_dataset
    from benchmark.device import resolve_device
    from benchmark.metrics import CodeUsageWindow, code_counts, effective_rank, gradient_coverage, utilization

    # ---- validate and set up everything that can fail cheaply, before any compute
    config.validate()
    device = resolve_device(config.device)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    quantizer = build_quantizer(config)  # unknown options / impossible sizes fail here
    codebook_size = quantizer.codebook_size  # FSQ rounds the requested size to a product of levels
    dataset = load_dataset(config.dataset, image_size=config.image_size, data_dir=config.data_dir,
                           seed=DATASET_SEED)
    train_images, test_images = torch.as_tensor(dataset.train), torch.as_tensor(dataset.test)
    model = build_model(config, dataset.channels, quantizer).to(device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate(1, config), weight_decay=config.weight_decay)

    run_name = (tracking.run_name if tracking and tracking.run_name else
                default_run_name(config.quantizer, codebook_size, config.latent_dim, config.seed))
    if tracking is None:
        run = TrialRun.untracked()
    else:
        run = TrialRun.start(
            tracking, run_name=run_name, description=describe_trial(config, codebook_size, dataset, device),
            tags=trial_tags(quantizer=config.quantizer, codebook_size=codebook_size,
                            latent_dim=config.latent_dim, seed=config.seed, dataset=dataset.name,
                            device=str(device), trial_key=config.trial_key()),
        )
    with run:
        params = {**config.as_params(), keys.PARAM_CODEBOOK_SIZE_REQUESTED: config.codebook_size}
        params["codebook_size"] = codebook_size
        run.log_params(params)
        run.log_dataset(name=dataset.name, source=str(dataset.source), digest=str(dataset.digest),
                        profile=dataset_profile(dataset, config))
        run.log_dict({**asdict(config), keys.PARAM_CODEBOOK_SIZE_REQUESTED: config.codebook_size,
                      "codebook_size": codebook_size}, "config.json")

        # ---- the loop
        usage = CodeUsageWindow(codebook_size, window=config.log_every, dead_window=config.dead_code_window)
        batches = batch_order(len(train_images), config.batch_size, config.seed + DATA_ORDER_SEED_OFFSET)
        window_sums: dict[str, float] = {}   # loss terms summed since the last log step
        window_steps = 0
        latest: dict[str, float] = {}        # latest value of every curve (the result's final curves)
        bar = tqdm(total=config.steps, desc=run_name, disable=not progress, file=sys.stderr,
                   dynamic_ncols=True)
        model.train()
        started = time.perf_counter()
        for step in range(1, config.steps + 1):
            lr = learning_rate(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = to_float_images(train_images[next(batches)], device)
            probe = step == 1 or step % config.probe_every == 0
            try:
                output = model(images)
            except FloatingPointError as error:  # NonFiniteLatentError: the encoder already diverged
                raise NonFiniteLossError(step, math.nan, str(error)) from error
            probes: dict[str, float] = {}
            if probe and quantizer.learns_codebook_by_averages:
                # EMA-VQ: this forward pulled exactly the assigned codes toward data. (Its decay and
                # Laplace smoothing also rescale every code slightly each step; that is not data.)
                probes[keys.PROBE_GRADIENT_COVERAGE] = utilization(
                    code_counts(output.quantizer.indices, codebook_size))
            recon_loss = F.mse_loss(output.reconstruction, images)
            loss = recon_loss + output.quantizer.loss
            if not torch.isfinite(loss):
                raise NonFiniteLossError(step, float(loss))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if probe:
                # Gradient coverage must read the gradients before the optimizer step consumes them.
                coverage = gradient_coverage(quantizer)
                if coverage is not None:
                    probes[keys.PROBE_GRADIENT_COVERAGE] = coverage
                probes[keys.PROBE_LATENT_RANK] = effective_rank(output.latents)
            optimizer.step()
            if probe:
                codebook = quantizer.codebook()
                if codebook is not None:
                    probes[keys.PROBE_CODEBOOK_RANK] = effective_rank(codebook.detach())
                run.log_metrics(probes, step)
                latest.update(probes)

            usage.update(output.quantizer.indices, step)
            terms = {keys.TRAIN_LOSS: loss, keys.TRAIN_RECON_LOSS: recon_loss,
                     keys.TRAIN_QUANT_LOSS: output.quantizer.loss,
                     **{f"train/{name}": value for name, value in output.quantizer.losses.items()}}
            for name, value in terms.items():
                window_sums[name] = window_sums.get(name, 0.0) + float(value.detach())
            window_steps += 1
            bar.update(1)

            if step % config.log_every == 0 or step == config.steps:
                curves = {name: total / window_steps for name, total in window_sums.items()}
                curves[keys.TRAIN_LR] = lr
                curves[keys.TRAIN_UTILIZATION] = usage.utilization()
                curves[keys.TRAIN_PERPLEXITY] = usage.perplexity()
                curves[keys.TRAIN_DEAD_CODES] = usage.dead_fraction()
                window_sums, window_steps = {}, 0
                latest.update(curves)
                run.log_metrics(curves, step)
                run.flush()
                bar.set_postfix(loss=f"{curves[keys.TRAIN_LOSS]:.4f}",
                                util=f"{curves[keys.TRAIN_UTILIZATION]:.3f}")
                if on_log is not None:
                    on_log(step, dict(latest))
        wall_time = time.perf_counter() - started
        bar.close()

        # ---- evaluation on the fixed test images
        samples_seen = config.steps * config.batch_size
        final = {keys.COST_WALL_TIME: wall_time, keys.COST_SAMPLES_SEEN: float(samples_seen),
                 keys.COST_SAMPLES_PER_S: samples_seen / wall_time}
        evaluation = evaluate(model, test_images, config, device, dataset, progress=progress)
        final.update(evaluation.metrics)
        run.log_metrics(final, config.steps)
        run.flush()
        run.log_image(reconstruction_grid(evaluation.originals, evaluation.reconstructions),
                      "reconstructions.png")
        run.log_figure(usage_histogram(evaluation.counts, run_name), "code_usage.png")
        result = TrainResult(run_id=run.run_id, metrics={**latest, **final})
    return result


# ----------------------------------------------------------------------------- evaluation
@dataclass
class Evaluation:
    metrics: dict[str, float]
    counts: torch.Tensor            # code usage (K,) on the eval images
    originals: torch.Tensor         # the first GRID_IMAGES test images, float [0, 1], CPU
    reconstructions: torch.Tensor   # their reconstructions, clamped to [0, 1], CPU


@torch.no_grad()
def evaluate(model, test_images: torch.Tensor, config: TrainConfig, device: torch.device, dataset,
             *, progress: bool = False) -> Evaluation:
    """Utilization, perplexity, MSE, PSNR, SSIM on the first ``eval_samples`` test images; rFID/rKID on
    the first ``fid_samples`` (when > 0). The model is put in eval mode (EMA codebooks stop updating)."""
    from benchmark.metrics import code_counts, perplexity, psnr, ssim, utilization

    model.eval()
    num_eval = min(config.eval_samples, len(test_images))
    num_fid = min(config.fid_samples, len(test_images))
    needed = max(num_eval, num_fid)
    codebook_size = model.quantizer.codebook_size
    counts = torch.zeros(codebook_size, dtype=torch.long)
    originals, reconstructions = [], []
    for start in range(0, needed, config.batch_size):
        images = to_float_images(test_images[start:min(start + config.batch_size, needed)], device)
        output = model(images)
        eval_rows = max(0, min(len(images), num_eval - start))
        counts += code_counts(output.quantizer.indices[:eval_rows].cpu(), codebook_size)
        originals.append(images.cpu())
        reconstructions.append(output.reconstruction.clamp(0.0, 1.0).cpu())
    originals, reconstructions = torch.cat(originals), torch.cat(reconstructions)
    eval_originals, eval_reconstructions = originals[:num_eval], reconstructions[:num_eval]
    metrics = {
        keys.EVAL_UTILIZATION: utilization(counts),
        keys.EVAL_PERPLEXITY: perplexity(counts),
        keys.EVAL_MSE: float(F.mse_loss(eval_reconstructions, eval_originals)),
        keys.EVAL_PSNR: psnr(eval_originals, eval_reconstructions),
        keys.EVAL_SSIM: ssim(eval_originals, eval_reconstructions),
    }
    if num_fid:
        import warnings

        from benchmark.fid import MIN_UNBIASED_IMAGES, SmallSampleFIDWarning, reconstruction_fid

        if progress and num_fid < MIN_UNBIASED_IMAGES:
            print(f"rFID/rKID on {num_fid} test images: biased upward with so few images "
                  f"(< {MIN_UNBIASED_IMAGES}); compare trials only at the same fid_samples.", file=sys.stderr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SmallSampleFIDWarning)  # said above; fid_samples is a param
            fid = reconstruction_fid(originals[:num_fid], reconstructions[:num_fid],
                                     reference_name=f"{dataset.name}-{config.image_size}px-{dataset.digest}",
                                     device=device, batch_size=config.batch_size)
        metrics[keys.EVAL_RFID] = fid["rfid"]
        metrics[keys.EVAL_RKID] = fid["rkid"]
    return Evaluation(metrics, counts, originals[:GRID_IMAGES], reconstructions[:GRID_IMAGES])


# ----------------------------------------------------------------------------- run description, artifacts
def dataset_profile(dataset, config: TrainConfig) -> dict:
    return {
        "train_images": int(len(dataset.train)),
        "test_images": int(len(dataset.test)),
        "image_shape": [int(s) for s in dataset.train.shape[1:]],
        "eval_images": min(config.eval_samples, len(dataset.test)),
        "fid_images": min(config.fid_samples, len(dataset.test)),
    }


def describe_trial(config: TrainConfig, codebook_size: int, dataset, device: torch.device) -> str:
    """The run's description (Markdown, shown on the run page)."""
    size = f"K={codebook_size}" + (f" (requested {config.codebook_size})"
                                   if codebook_size != config.codebook_size else "")
    tokens = config.image_size // 2 ** config.num_downsamples
    options = json.dumps(config.quantizer_options) if config.quantizer_options else "defaults"
    return (
        f"vqbench trial: **{config.quantizer}** quantizer, {size}, latent dim {config.latent_dim}, "
        f"seed {config.seed}; options: {options}.\n\n"
        f"Data: {dataset.name} ({len(dataset.train)} train / {len(dataset.test)} test images, "
        f"{config.image_size} px, digest {dataset.digest}).\n\n"
        f"Budget: {config.steps} steps x batch {config.batch_size} = {config.steps * config.batch_size} "
        f"samples; AdamW lr {config.lr} (linear warm-up {config.warmup_steps} steps, then constant), "
        f"weight decay {config.weight_decay}.\n\n"
        f"Backbone: width {config.width}, {config.num_res_blocks} residual block(s) per resolution, "
        f"{config.num_downsamples} downsamplings -> {tokens}x{tokens} tokens per image. Device: {device}.\n\n"
        f"Eval: {min(config.eval_samples, len(dataset.test))} test images; rFID/rKID on "
        f"{min(config.fid_samples, len(dataset.test))} (biased upward below a few thousand images)."
    )


def reconstruction_grid(originals: torch.Tensor, reconstructions: torch.Tensor):
    """uint8 ``(H, W, 3)`` image: originals in the top row, their reconstructions below."""
    from torchvision.utils import make_grid

    images = torch.cat([originals, reconstructions])
    images = F.interpolate(images, scale_factor=GRID_SCALE, mode="nearest")
    grid = make_grid(images, nrow=len(originals), padding=2 * GRID_SCALE, pad_value=1.0)
    return (grid.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def usage_histogram(counts: torch.Tensor, title: str):
    """Sorted code-usage counts on a log scale: a flat curve is healthy use, a cliff is collapse."""
    from matplotlib.figure import Figure

    sorted_counts = counts.sort(descending=True).values.numpy()
    used = int((sorted_counts > 0).sum())
    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.subplots()
    ranks = range(1, used + 1)
    axes.fill_between(ranks, sorted_counts[:used], step="mid", alpha=0.4)
    axes.step(ranks, sorted_counts[:used], where="mid")
    axes.set_yscale("log")
    axes.set_xlim(0, len(sorted_counts))
    axes.set_xlabel(f"code rank (by use); codes {used + 1}..{len(sorted_counts)} unused" if used < len(sorted_counts)
                    else "code rank (by use)")
    axes.set_ylabel("tokens assigned (test images)")
    axes.set_title(f"{title}: {used} of {len(sorted_counts)} codes used")
    figure.tight_layout()
    return figure
