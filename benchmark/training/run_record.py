"""What a trial's run records besides its metrics: the description shown on its MLflow page (the trial,
its budget, what its evaluation measured and whether its utilization and rFID can be read at face
value), the dataset profile, the reconstruction grid and the code-usage histogram."""
from __future__ import annotations

import json

import torch

from benchmark.training.config import TrainConfig
from benchmark.evaluation.checkpoints import checkpoint_steps
from benchmark.evaluation.usage import utilization_ceiling

#: Below this many images rFID is biased upward (benchmark.evaluation.fid.MIN_UNBIASED_IMAGES; not imported here so
#: that importing the trainer does not import torch-fidelity).
MIN_UNBIASED_FID_IMAGES = 2048


def data_shape(dataset) -> str:
    if dataset.modality == "audio":
        seconds = dataset.sample_length / dataset.sample_rate
        return (f"{len(dataset.train)} train / {len(dataset.test)} test clips of {seconds:g} s at "
                f"{dataset.sample_rate} Hz")
    return f"{len(dataset.train)} train / {len(dataset.test)} test images, {dataset.image_size} px"


def dataset_profile(dataset, config: TrainConfig, plan) -> dict:
    return {
        "train_images": int(len(dataset.train)),
        "test_images": int(len(dataset.test)),
        "image_shape" if dataset.modality == "image" else "clip_shape": [int(s) for s in dataset.train.shape[1:]],
        "modality": dataset.modality,
        "eval_images": int(len(plan.indices)),
        "eval_indices_digest": plan.digest,
        "fid_images": int(len(plan.fid_indices)),
    }


def describe_trial(config: TrainConfig, codebook_size: int, dataset, device: torch.device, plan,
                   tokens_per_sample: int) -> str:
    """The run's description (Markdown, shown on the run page): the trial, its budget, what the
    evaluation measures on, and whether its utilization and rFID can be read at face value."""
    size = f"K={codebook_size}" + (f" (requested {config.codebook_size})"
                                   if codebook_size != config.codebook_size else "")
    options = json.dumps(config.quantizer_options) if config.quantizer_options else "defaults"
    optimizer = ("Adam betas (0.5, 0.9)" if config.optimizer == "adam-paper"
                 else f"AdamW weight decay {config.weight_decay}")
    tokens = len(plan.indices) * tokens_per_sample
    ceiling = utilization_ceiling(codebook_size, tokens)
    capped = (f" **Capped:** {tokens} test tokens < 10·K = {10 * codebook_size}: a perfectly uniform "
              f"quantizer would read {ceiling:.3f}; compare utilization relative to that ceiling."
              if tokens < 10 * codebook_size else "")
    fid_count = len(plan.fid_indices)
    fid = ("rFID/rKID: not computed (fid_samples = 0, or not an image modality)." if not fid_count else
           f"rFID/rKID on {fid_count} stratified test images"
           + (f" — **biased upward with fewer than {MIN_UNBIASED_FID_IMAGES} images: compare only at "
              f"the same fid_samples, never across sweeps**." if fid_count < MIN_UNBIASED_FID_IMAGES else "."))
    return (
        f"vqbench trial: **{config.quantizer}** quantizer, {size}, latent dim {config.latent_dim}, "
        f"seed {config.seed}; options: {options}.\n\n"
        f"Data: {dataset.name} ({data_shape(dataset)}, digest {dataset.digest}).\n\n"
        f"Budget: {config.steps} steps x batch {config.batch_size} = {config.steps * config.batch_size} "
        f"samples; {optimizer}, lr {config.lr} (linear warm-up {config.warmup_steps} steps, then constant).\n\n"
        f"Backbone: {config.resolved_backbone()}, width {config.width}, {config.num_res_blocks} residual "
        f"block(s) per resolution -> {tokens_per_sample} tokens per sample. Device: {device}.\n\n"
        f"Eval at steps {checkpoint_steps(config.steps, config.eval_checkpoints, config.checkpoint_ratio)} on {len(plan.indices)} "
        f"test images stratified over the test set's sources ({tokens} tokens, indices digest {plan.digest}); "
        f"uniform utilization ceiling {ceiling:.4f}.{capped}\n\n{fid}"
    )


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
