"""Metrics on hand-built cases: code usage, the collapse probes, PSNR and SSIM."""
from __future__ import annotations

import math

import pytest
import torch
from skimage.metrics import structural_similarity

import quantizers
from benchmark.evaluation.usage import CodeUsageWindow, code_counts, perplexity, utilization
from benchmark.evaluation.codebook import effective_rank, gradient_coverage, moved_fraction
from benchmark.evaluation.image_quality import psnr, ssim


# ----------------------------------------------------------------------------- code usage
def test_uniform_use_of_half_the_codes():
    indices = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    counts = code_counts(indices, codebook_size=8)
    assert counts.dtype == torch.int64 and counts.tolist() == [2, 2, 2, 2, 0, 0, 0, 0]
    assert utilization(counts) == 0.5
    assert perplexity(counts) == pytest.approx(4.0)


def test_perplexity_of_one_code_is_one_and_of_skewed_use_matches_entropy():
    assert perplexity(code_counts(torch.zeros(10, dtype=torch.long), 16)) == pytest.approx(1.0)
    counts = torch.tensor([3, 1, 0, 0])
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert perplexity(counts) == pytest.approx(math.exp(entropy))
    assert utilization(counts) == 0.5


def test_code_counts_rejects_bad_indices():
    with pytest.raises(ValueError, match="codebook_size=4"):
        code_counts(torch.tensor([0, 4]), 4)
    with pytest.raises(ValueError, match="integer"):
        code_counts(torch.tensor([0.0, 1.0]), 4)
    with pytest.raises(ValueError, match="sum to zero"):
        perplexity(torch.zeros(4, dtype=torch.long))


def test_usage_window_forgets_old_steps_and_counts_dead_codes():
    usage = CodeUsageWindow(codebook_size=8, window=2, dead_window=3)
    with pytest.raises(ValueError, match="update"):
        usage.utilization()
    usage.update(torch.tensor([0, 1]), step=0)
    usage.update(torch.tensor([2, 2]), step=1)
    assert usage.utilization() == 3 / 8                       # codes 0, 1, 2 within steps 0..1
    assert usage.perplexity() == pytest.approx(math.exp(-(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5))))
    assert usage.dead_fraction() == 5 / 8
    usage.update(torch.tensor([3]), step=2)
    assert usage.utilization() == 2 / 8                       # window now steps 1..2: codes 2, 3
    assert usage.counts().tolist() == [0, 0, 2, 1, 0, 0, 0, 0]
    assert usage.dead_fraction() == 4 / 8                     # steps 0..2 used codes 0..3
    usage.update(torch.tensor([3]), step=3)
    assert usage.dead_fraction() == 6 / 8                     # steps 1..3 used codes 2, 3
    usage.update(torch.tensor([5]), step=3)                   # same step pools (gradient accumulation)
    assert usage.utilization() == 2 / 8 and usage.counts()[5] == 1
    with pytest.raises(ValueError, match="decrease"):
        usage.update(torch.tensor([0]), step=2)


# ----------------------------------------------------------------------------- probes
def test_effective_rank_of_identity_rank_one_and_zero():
    assert effective_rank(torch.eye(6)) == pytest.approx(6.0)
    rank_one = torch.outer(torch.arange(1.0, 9.0), torch.tensor([1.0, -2.0, 0.5]))
    assert effective_rank(rank_one) == pytest.approx(1.0, abs=1e-6)
    assert effective_rank(torch.zeros(4, 3)) == 0.0
    # leading dims are flattened: (batch, tokens, d) encoder outputs
    assert effective_rank(torch.eye(4).repeat(3, 1).view(2, 6, 4)) == pytest.approx(4.0)
    # two equal singular values out of three non-zero-but-unequal ones lie strictly between 2 and 3
    assert 2.0 < effective_rank(torch.diag(torch.tensor([1.0, 1.0, 0.1]))) < 3.0


def _backward_once(name: str, rng: torch.Generator, codebook_size: int = 64, dim: int = 4):
    torch.manual_seed(0)
    quantizer = quantizers.build(name, dim=dim, codebook_size=codebook_size)
    z = torch.randn(2, 5, dim, generator=rng, requires_grad=True)
    out = quantizer(z)
    (out.loss + out.quantized.pow(2).mean()).backward()
    return quantizer, out


def test_gradient_coverage_of_vq_is_the_selected_fraction(rng):
    quantizer, out = _backward_once("vq", rng)
    selected = utilization(code_counts(out.indices, quantizer.codebook_size))
    assert 0 < selected < 1
    assert gradient_coverage(quantizer) == selected


def test_gradient_coverage_of_simvq_is_one(rng):
    quantizer, out = _backward_once("simvq", rng)
    assert utilization(code_counts(out.indices, quantizer.codebook_size)) < 1
    assert gradient_coverage(quantizer) == 1.0


def test_gradient_coverage_is_none_without_gradients_or_gradient_learning(rng):
    assert gradient_coverage(quantizers.build("vq", dim=4, codebook_size=8)) is None  # no backward yet
    ema, _ = _backward_once("ema", rng)
    assert gradient_coverage(ema) is None


def test_gradient_coverage_ignores_optimizer_state(rng):
    """After a step of AdamW, momentum moves rows without gradient; the probe counts gradients only."""
    quantizer, out = _backward_once("vq", rng)
    selected = gradient_coverage(quantizer)
    optimizer = torch.optim.AdamW(quantizer.parameters(), lr=1e-2, weight_decay=0.1)
    before = quantizer.codebook().detach().clone()
    optimizer.step()
    assert moved_fraction(before, quantizer.codebook()) == 1.0   # weight decay moved every row
    assert gradient_coverage(quantizer) == selected


def test_moved_fraction_counts_changed_rows():
    before = torch.zeros(4, 3)
    after = before.clone()
    after[1, 2] = 1e-3
    after[3] = 1.0
    assert moved_fraction(before, after) == 0.5
    assert moved_fraction(torch.ones(4, 3), torch.ones(4, 3) * (1 + 1e-7), rtol=1e-5) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        moved_fraction(before, torch.zeros(5, 3))


def test_moved_fraction_of_an_ema_forward_in_training_mode(rng):
    quantizer = quantizers.build("ema", dim=4, codebook_size=32)
    before = quantizer.codebook().detach().clone()
    quantizer.train()
    out = quantizer(torch.randn(2, 5, 4, generator=rng))
    selected = utilization(code_counts(out.indices, 32))
    # the smoothing's global factor nudges every row; above a 1e-6 relative change, only the rows that
    # received tokens moved
    assert moved_fraction(before, quantizer.codebook(), rtol=1e-6) == selected < 1.0
    assert moved_fraction(before, quantizer.codebook()) >= selected


# ----------------------------------------------------------------------------- reconstruction
def test_psnr_of_known_gaussian_noise(rng):
    sigma = 0.05
    originals = torch.full((4, 3, 64, 64), 0.5)
    noisy = originals + sigma * torch.randn(originals.shape, generator=rng)
    assert psnr(originals, noisy) == pytest.approx(10 * math.log10(1 / sigma ** 2), abs=0.1)
    assert psnr(originals * 255, noisy * 255, data_range=255.0) == pytest.approx(psnr(originals, noisy))


def test_psnr_is_mean_of_per_image_values_including_clipped_ones(rng):
    originals = torch.rand(2, 1, 16, 16, generator=rng, dtype=torch.float64)
    clipped = (originals + 0.3 * torch.randn(originals.shape, generator=rng, dtype=torch.float64)).clamp(0, 1)
    exact_mse = (originals - clipped).pow(2).flatten(1).mean(1)
    expected = (10 * torch.log10(1 / exact_mse)).mean().item()
    assert psnr(originals, clipped) == pytest.approx(expected, rel=1e-9)
    # the extremes, exactly: everything wrong by the full range is 0 dB, a constant offset of 0.1 is 20 dB
    assert psnr(torch.ones(2, 3, 16, 16), torch.zeros(2, 3, 16, 16)) == pytest.approx(0.0)
    assert psnr(torch.full((1, 1, 16, 16), 0.5), torch.full((1, 1, 16, 16), 0.6)) == pytest.approx(20.0)
    # one perfect and one bad image: mean of per-image PSNR (inf), not PSNR of the mean MSE
    pair = torch.stack([originals[0], originals[0]])
    assert psnr(pair, torch.stack([originals[0], clipped[0]])) == math.inf


def test_image_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.zeros(2, 1, 16, 16), torch.zeros(2, 1, 16, 15))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="data_range"):
        psnr(torch.zeros(1, 1, 16, 16), torch.ones(1, 1, 16, 16), data_range=0)


def test_ssim_is_one_for_identical_images_and_lower_with_noise(rng):
    images = torch.rand(3, 3, 32, 32, generator=rng)
    assert ssim(images, images) == pytest.approx(1.0)
    mild = (images + 0.05 * torch.randn(images.shape, generator=rng)).clamp(0, 1)
    strong = (images + 0.3 * torch.randn(images.shape, generator=rng)).clamp(0, 1)
    assert ssim(images, strong) < ssim(images, mild) < 1.0


def test_ssim_matches_scikit_image(rng):
    from skimage import data

    photo = torch.from_numpy(data.astronaut()[100:148, 180:228].copy()).permute(2, 0, 1).float() / 255
    gray = torch.from_numpy(data.camera()[200:240, 200:250].copy()).float()[None] / 255
    for image in (photo, gray):
        distorted = (image + 0.1 * torch.randn(image.shape, generator=rng)).clamp(0, 1)
        expected = structural_similarity(
            image.numpy(), distorted.numpy(), gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=1.0, channel_axis=0,
        )
        assert ssim(image[None], distorted[None]) == pytest.approx(expected, abs=1e-6)
