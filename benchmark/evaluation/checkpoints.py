"""Test-set evaluation: which test images, what a perfectly uniform quantizer would read, and the metrics.

What a number must not measure (issue 11) and how this module keeps it out:

- *which images*: the evaluation sample is a fixed, seeded sample stratified over the test set's sources
  (photos, classes, folders) — by default the whole test set — the same indices for every trial of a
  comparison, recorded as a digest (``eval_indices_digest``) so two runs can be checked to be comparable;
- *the token count*: with N test tokens a quantizer whose K codes were all equally likely would still
  leave about ``(1 - 1/K)^N`` of them unseen. Every utilization is logged with N, that *uniform ceiling*
  ``1 - (1 - 1/K)^N`` and the ratio to it; perplexity likewise with the perplexity of N uniformly random
  tokens. Below 10·K tokens the ceiling is visibly under 1 (0.99995 at exactly 10·K) and the report says
  the value is capped;
- *the budget*: evaluations at several checkpoints of one trial (1/8, 1/4, 1/2 and all of the steps by
  default) give utilization against samples seen, and the slope rule of
  :mod:`benchmark.evaluation.convergence` (a trend over the checkpoints with its interval, not two points)
  says whether the trial's utilization had levelled off (:func:`convergence`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from benchmark.tracking import keys
from benchmark.data.sampling import indices_digest, stratified_sample
from benchmark.evaluation.usage import code_counts, perplexity, utilization, utilization_ceiling

#: Evaluation samples depend on this seed only (never the trial's), so every trial sees the same images.
EVAL_SAMPLE_SEED = 0
#: Images per no-grad evaluation forward (GroupNorm normalises per image: results do not depend on it).
EVAL_BATCH = 256
#: Test images shown in the reconstruction grid, spread over the evaluation sample.
GRID_IMAGES = 8


@dataclass(frozen=True)
class EvaluationPlan:
    """Which test images each evaluation uses (sorted indices into ``dataset.test``)."""

    indices: Tensor           # utilization, perplexity, MSE, PSNR, SSIM
    fid_indices: Tensor       # rFID/rKID (empty when disabled)
    grid_indices: Tensor      # the reconstruction grid

    @property
    def digest(self) -> str:
        return indices_digest(self.indices)

    @property
    def fid_digest(self) -> str:
        return indices_digest(self.fid_indices) if len(self.fid_indices) else ""


def evaluation_plan(dataset, eval_samples: int | None, fid_samples: int) -> EvaluationPlan:
    """The stratified evaluation sample of ``dataset`` (all test images when ``eval_samples`` is None or
    larger than the test set) and its stratified rFID sample of ``fid_samples`` images (0: none)."""
    size = len(dataset.test)
    indices = stratified_sample(dataset.test_groups, size, eval_samples or size, EVAL_SAMPLE_SEED)
    fid_indices = (stratified_sample(dataset.test_groups, size, fid_samples, EVAL_SAMPLE_SEED)
                   if fid_samples else torch.empty(0, dtype=torch.long))
    spread = torch.linspace(0, len(indices) - 1, min(GRID_IMAGES, len(indices))).round().long()
    return EvaluationPlan(indices, fid_indices, indices[spread])


def checkpoint_steps(steps: int, checkpoints: int, ratio: float = 2.0) -> list[int]:
    """Evaluation steps: ``steps / ratio^(checkpoints-1)``, ..., ``steps / ratio``, ``steps`` (rounded up;
    equal steps merge). The default ratio 2 puts one checkpoint at each doubling of samples."""
    return sorted({math.ceil(steps / ratio ** i) for i in range(checkpoints)})


# ----------------------------------------------------------------------------- the uniform ceilings
def perplexity_ceiling(codebook_size: int, tokens: int) -> float:
    """Perplexity of N tokens spread uniformly at random over K codes (one draw from a fixed-seed
    generator; its spread across draws is far below the differences between quantizers). With N ≫ K it
    tends to K; with N ≪ K to N."""
    if tokens <= 0:
        return 0.0
    generator = torch.Generator().manual_seed(EVAL_SAMPLE_SEED)
    draws = torch.randint(codebook_size, (tokens,), generator=generator)
    return perplexity(torch.bincount(draws, minlength=codebook_size))


def usage_metrics(counts: Tensor) -> dict[str, float]:
    """Utilization and perplexity of code counts ``(K,)`` with their token count, ceilings and ratios."""
    codebook_size, tokens = counts.numel(), int(counts.sum())
    used, spread = utilization(counts), perplexity(counts)
    used_ceiling, spread_ceiling = utilization_ceiling(codebook_size, tokens), perplexity_ceiling(codebook_size, tokens)
    return {keys.EVAL_UTILIZATION: used, keys.EVAL_TOKENS: float(tokens),
            keys.EVAL_UTILIZATION_CEILING: used_ceiling, keys.EVAL_UTILIZATION_RELATIVE: used / used_ceiling,
            keys.EVAL_PERPLEXITY: spread, keys.EVAL_PERPLEXITY_CEILING: spread_ceiling,
            keys.EVAL_PERPLEXITY_RELATIVE: spread / spread_ceiling}


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def reconstruct(model, samples: Tensor, device: torch.device, modality, *, decode: bool = True
                ) -> tuple[Tensor | None, Tensor]:
    """Reconstructions of stored test ``samples`` (float, clamped to the modality's range, CPU; None with
    ``decode=False``, which runs only the encoder and the quantizer) and their code indices
    ``(N, tokens)``, in no-grad batches of :data:`EVAL_BATCH`, with the model in eval mode (EMA codebooks
    do not update); the model's training mode is restored afterwards."""
    from benchmark.models.autoencoder import to_tokens

    low, high = modality.value_range
    was_training = model.training
    model.eval()
    outputs, codes = [], []
    try:
        for start in range(0, len(samples), EVAL_BATCH):
            batch = modality.to_float(samples[start:start + EVAL_BATCH], device)
            if decode:
                output = model(batch)
                outputs.append(output.reconstruction.clamp(low, high).cpu())
                codes.append(output.quantizer.indices.cpu())
            else:
                codes.append(model.quantizer(to_tokens(model.encoder(batch))).indices.cpu())
    finally:
        model.train(was_training)
    return (torch.cat(outputs) if decode else None), torch.cat(codes)


def evaluate(model, samples: Tensor, device: torch.device, modality, dataset=None, *, full: bool = True
             ) -> tuple[dict[str, float], Tensor]:
    """Code usage (with token count, ceilings and ratios) on stored test ``samples``, plus the modality's
    quality metrics (MSE, PSNR, SSIM for images) when ``full`` (the final checkpoint: earlier ones need only
    the encoder and the quantizer, which is most of the budget axis's cost saved). Returns (metrics, counts)."""
    reconstructions, indices = reconstruct(model, samples, device, modality, decode=full)
    counts = code_counts(indices, model.quantizer.codebook_size)
    metrics = usage_metrics(counts)
    if full:
        originals = modality.to_float(samples, torch.device("cpu"))
        metrics.update(modality.quality(originals, reconstructions, dataset))
    return metrics, counts


def fid_metrics(model, images: Tensor, device: torch.device, reference_name: str) -> dict[str, float]:
    """rFID, rKID (mean and std) and the image count on uint8 test ``images`` (the stratified rFID sample).
    The small-sample warning is not raised here: the count is logged and the run description says it."""
    import warnings

    from benchmark.evaluation.fid import SmallSampleFIDWarning, reconstruction_fid

    from benchmark.evaluation.image_modality import IMAGE

    reconstructions, _ = reconstruct(model, images, device, IMAGE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleFIDWarning)
        fid = reconstruction_fid(images.float().div_(255.0), reconstructions, reference_name=reference_name,
                                 device=device, batch_size=64)
    return {keys.EVAL_RFID: fid["rfid"], keys.EVAL_RKID: fid["rkid"], keys.EVAL_RKID_STD: fid["rkid_std"],
            keys.EVAL_RFID_SAMPLES: float(fid["num_images"])}


def convergence(history: list[tuple[int, float]], window: int | None = None) -> dict[str, float]:
    """Did utilization level off? ``history`` is [(step, utilization)] at the checkpoints (steps are
    proportional to samples seen: one batch size). The rule is
    :func:`benchmark.evaluation.convergence.convergence_verdict` (slope of utilization relative to its mean
    against log2 samples over the checkpoints, with its t-interval, against a tolerance band):

    - ``eval/utilization_change``: the change over the last doubling, ``(u_T - u_{T/2}) / max(u_T, u_{T/2})``
      (kept: a description, no longer the verdict); absent with fewer than two checkpoints;
    - ``eval/utilization_slope`` and its CI (omitted when there is no slope: fewer than 3 checkpoints) (``_ci_low``, ``_ci_high``), ``eval/convergence_points``,
      ``eval/convergence_status`` (:data:`benchmark.evaluation.convergence.STATUS_CODES`) and
      ``eval/converged`` = 1.0 only for "converged" (0.0 for rising, falling, unclear, too few checkpoints).
    Empty for an empty history."""
    from benchmark.evaluation.convergence import convergence_verdict

    if not history:
        return {}
    out: dict[str, float] = {}
    if len(history) >= 2:
        (_, before), (_, after) = history[-2], history[-1]
        out[keys.EVAL_UTILIZATION_CHANGE] = (after - before) / max(after, before, 1e-12)
    verdict = convergence_verdict([max(step, 1) for step, _ in history], [u for _, u in history],
                                  abs_tol=keys.CONVERGENCE_ABS_TOL, rel_tol=keys.CONVERGENCE_REL_TOL,
                                  window=window)
    out.update({keys.EVAL_UTILIZATION_SLOPE: verdict.slope, keys.EVAL_UTILIZATION_SLOPE_CI_LOW: verdict.ci_low,
                keys.EVAL_UTILIZATION_SLOPE_CI_HIGH: verdict.ci_high,
                keys.EVAL_CONVERGENCE_POINTS: float(verdict.points),
                keys.EVAL_CONVERGENCE_STATUS: verdict.code, keys.EVAL_CONVERGED: float(verdict.converged)})
    return {key: value for key, value in out.items() if not math.isnan(value)}   # too few points: no slope
