"""What a trial's run records besides its metrics: the description shown on its MLflow page (the trial,
its budget, what its evaluation measured and whether its utilization and rFID can be read at face
value), the dataset profile, the reconstruction grid and the code-usage histogram."""
from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from benchmark.config import TrainConfig
from benchmark.evaluation import checkpoint_steps, utilization_ceiling

#: Upscaling of the reconstruction grid so 32 px images are visible in the MLflow UI.
GRID_SCALE = 4
#: Below this many images rFID is biased upward (benchmark.fid.MIN_UNBIASED_IMAGES; not imported here so
#: that importing the trainer does not import torch-fidelity).
MIN_UNBIASED_FID_IMAGES = 2048


def dataset_profile(dataset, config: TrainConfig, plan) -> dict:
    return {
        "train_images": int(len(dataset.train)),
        "test_images": int(len(dataset.test)),
        "image_shape": [int(s) for s in dataset.train.shape[1:]],
        "eval_images": int(len(plan.indices)),
        "eval_indices_digest": plan.digest,
        "fid_images": int(len(plan.fid_indices)),
    }


def describe_trial(config: TrainConfig, codebook_size: int, dataset, device: torch.device, plan) -> str:
    """The run's description (Markdown, shown on the run page): the trial, its budget, what the
    evaluation measures on, and whether its utilization and rFID can be read at face value."""
    size = f"K={codebook_size}" + (f" (requested {config.codebook_size})"
                                   if codebook_size != config.codebook_size else "")
    grid = config.image_size // 2 ** config.num_downsamples
    options = json.dumps(config.quantizer_options) if config.quantizer_options else "defaults"
    optimizer = ("Adam betas (0.5, 0.9)" if config.optimizer == "adam-paper"
                 else f"AdamW weight decay {config.weight_decay}")
    tokens = len(plan.indices) * grid * grid
    ceiling = utilization_ceiling(codebook_size, tokens)
    capped = (f" **Capped:** {tokens} test tokens < 10·K = {10 * codebook_size}: a perfectly uniform "
              f"quantizer would read {ceiling:.3f}; compare utilization relative to that ceiling."
              if tokens < 10 * codebook_size else "")
    fid_count = len(plan.fid_indices)
    fid = ("rFID/rKID: not computed (fid_samples = 0)." if not fid_count else
           f"rFID/rKID on {fid_count} stratified test images"
           + (f" — **biased upward with fewer than {MIN_UNBIASED_FID_IMAGES} images: compare only at "
              f"the same fid_samples, never across sweeps**." if fid_count < MIN_UNBIASED_FID_IMAGES else "."))
    return (
        f"vqbench trial: **{config.quantizer}** quantizer, {size}, latent dim {config.latent_dim}, "
        f"seed {config.seed}; options: {options}.\n\n"
        f"Data: {dataset.name} ({len(dataset.train)} train / {len(dataset.test)} test images, "
        f"{config.image_size} px, digest {dataset.digest}).\n\n"
        f"Budget: {config.steps} steps x batch {config.batch_size} = {config.steps * config.batch_size} "
        f"samples; {optimizer}, lr {config.lr} (linear warm-up {config.warmup_steps} steps, then constant).\n\n"
        f"Backbone: width {config.width}, {config.num_res_blocks} residual block(s) per resolution, "
        f"{config.num_downsamples} downsamplings -> {grid}x{grid} tokens per image. Device: {device}.\n\n"
        f"Eval at steps {checkpoint_steps(config.steps, config.eval_checkpoints)} on {len(plan.indices)} "
        f"test images stratified over the test set's sources ({tokens} tokens, indices digest {plan.digest}); "
        f"uniform utilization ceiling {ceiling:.4f}.{capped}\n\n{fid}"
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
