"""Reconstruction FID and KID (rFID, rKID) with torch-fidelity's InceptionV3, offline.

rFID compares the InceptionV3 pool features (2048-d) of the test originals with those of their
reconstructions: the Fréchet distance between Gaussian fits (Heusel et al. 2017); rKID is the kernel
(MMD², cubic polynomial kernel) distance of Bińkowski et al. 2018. The math is torch-fidelity's own
(``fid_features_to_statistics``, ``fid_statistics_to_metric``, ``kid_features_to_metric``), except
that with no more images than feature dims the Fréchet trace term uses an exact low-rank identity
(:func:`frechet_distance`) instead of a 2048×2048 eigendecomposition that costs 20–30 CPU-seconds.

Reference (original-image) features are cached per ``reference_name`` in-process and on disk, keyed also
by a fingerprint of the images, of the weights file, and of the numerics that computed them (device type,
dtype, and on CUDA whether TF32 was allowed), so a sweep extracts them once per dataset and neither a
stale cache nor CPU statistics can stand in for a different test set or a GPU run's reconstructions.
"""
from __future__ import annotations

import hashlib
import math
import re
import warnings
from pathlib import Path

import torch
from torch import Tensor

from benchmark.files import resolve_cache_dir, save_atomically
from quantizers.base import check_int

from benchmark.evaluation.inception import (check_images, inception_features, resolve_inception_weights, to_uint8_rgb,
                                            weights_digest)

#: Below this many images the 2048-d feature covariance is rank-deficient and rFID is biased upward
#: (Chong & Forsyth 2020); trials remain comparable only at an equal image count.
MIN_UNBIASED_IMAGES = 2048
KID_SUBSET_SIZE = 1000          # torch-fidelity's default, lowered to the sample count when fewer
KID_SUBSETS = 100               # torch-fidelity's default
KID_SEED = 2020                 # torch-fidelity's default rng_seed: rKID is deterministic


class SmallSampleFIDWarning(UserWarning):
    """rFID/rKID computed on fewer than MIN_UNBIASED_IMAGES images: biased, compare at equal counts."""


# ----------------------------------------------------------------------------- weights
def numerics_tag(device: str | torch.device) -> str:
    """The numerics features are computed with: device type, dtype, and TF32 where CUDA could use it."""
    device = torch.device(device)
    tag = f"{device.type}-float32"
    if device.type == "cuda":
        tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32
        tag += "-tf32" if tf32 else "-notf32"
    return tag


#: Reference features per cache key, kept for the life of the process.
_REFERENCE_FEATURES: dict[str, Tensor] = {}


def _reference_features(originals: Tensor, reference_name: str | None, weights_path: Path,
                        device: str | torch.device, batch_size: int) -> Tensor:
    """Features of the originals: from the in-process memo, the disk cache, or computed (and stored)."""
    if reference_name is None:
        return inception_features(originals, weights=weights_path, device=device, batch_size=batch_size)
    images_digest = hashlib.sha256(to_uint8_rgb(originals).contiguous().numpy().tobytes()
                                   + str(tuple(originals.shape)).encode()).hexdigest()[:16]
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", reference_name)
    key = f"{safe_name}-{images_digest}-{weights_digest(weights_path)}-{numerics_tag(device)}"
    if key in _REFERENCE_FEATURES:
        return _REFERENCE_FEATURES[key]
    cache_file = resolve_cache_dir() / "fid_reference" / f"{key}.pt"
    features = None
    if cache_file.is_file():
        try:
            features = torch.load(cache_file, map_location="cpu", weights_only=True)
        except Exception:  # a truncated file from a killed process: recompute below
            features = None
        if features is not None and tuple(features.shape) != (originals.shape[0], 2048):
            features = None
    if features is None:
        features = inception_features(originals, weights=weights_path, device=device, batch_size=batch_size)
        save_atomically(features, cache_file)
    _REFERENCE_FEATURES[key] = features
    return features


# ----------------------------------------------------------------------------- metrics
def frechet_distance(reference: Tensor, other: Tensor) -> float:
    """Fréchet distance between Gaussian fits of two feature sets ``(n, d)`` (Heusel et al. 2017):
    ``||μ1 − μ2||² + tr Σ1 + tr Σ2 − 2 tr √(Σ1 Σ2)``, with unbiased covariances as in torch-fidelity.

    With more samples than dimensions this is torch-fidelity's ``fid_statistics_to_metric`` (a
    d×d eigendecomposition: 20–30 CPU-seconds at d = 2048 on this project's machines). With at most d
    samples per side it uses the exact identity for rank-deficient covariances: for centred features
    ``X_i`` and ``Σ_i = X_iᵀX_i / (n_i − 1)``, the non-zero eigenvalues of ``Σ1Σ2`` are the squared
    singular values of ``X1 X2ᵀ / √((n1 − 1)(n2 − 1))``, so ``tr √(Σ1Σ2)`` is that matrix's nuclear norm
    (an n1×n2 SVD: well under a second). Both agree to float precision (tested).
    """
    n_ref, n_other, dim = reference.shape[0], other.shape[0], reference.shape[1]
    if max(n_ref, n_other) > dim:
        from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

        result = fid_statistics_to_metric(fid_features_to_statistics(reference.cpu()),
                                          fid_features_to_statistics(other.cpu()), verbose=False)
        return float(result[KEY_METRIC_FID])
    x1, x2 = reference.detach().cpu().double(), other.detach().cpu().double()
    mean_gap = x1.mean(0) - x2.mean(0)
    c1, c2 = x1 - x1.mean(0), x2 - x2.mean(0)
    trace_1 = c1.pow(2).sum() / (n_ref - 1)
    trace_2 = c2.pow(2).sum() / (n_other - 1)
    trace_sqrt = torch.linalg.svdvals(c1 @ c2.T).sum() / math.sqrt((n_ref - 1) * (n_other - 1))
    return float(mean_gap.dot(mean_gap) + trace_1 + trace_2 - 2 * trace_sqrt)


def fid_kid_from_features(reference: Tensor, other: Tensor) -> dict[str, float]:
    """rFID (:func:`frechet_distance`) and rKID (mean and std over subsets, torch-fidelity's
    ``kid_features_to_metric``: unbiased MMD², cubic polynomial kernel) between two feature sets.

    KID's subset size is min(1000, N); when it equals both sample counts every subset is the whole set
    (the unbiased MMD² is permutation-invariant), so one subset gives the value a hundred would.
    """
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    for name, features in (("reference", reference), ("other", other)):
        if not isinstance(features, Tensor) or features.dim() != 2:
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(f"{name} features must be (n, d); got {shape}")
    if reference.shape[1] != other.shape[1]:
        raise ValueError(f"feature dims differ: {reference.shape[1]} and {other.shape[1]}")
    n_ref, n_other = reference.shape[0], other.shape[0]
    if min(n_ref, n_other) < 2:
        raise ValueError(f"rFID/rKID need at least 2 images on each side; got {n_ref} and {n_other}")
    subset_size = min(KID_SUBSET_SIZE, n_ref, n_other)
    subsets = 1 if subset_size == n_ref == n_other else KID_SUBSETS
    kid = kid_features_to_metric(reference.detach().cpu(), other.detach().cpu(), kid_subsets=subsets,
                                 kid_subset_size=subset_size, rng_seed=KID_SEED, verbose=False)
    return {"rfid": frechet_distance(reference, other), "rkid": float(kid[KEY_METRIC_KID_MEAN]),
            "rkid_std": float(kid[KEY_METRIC_KID_STD])}


def reconstruction_fid(originals: Tensor, reconstructions: Tensor, *, reference_name: str | None = None,
                       device: str | torch.device = "cpu", batch_size: int = 32,
                       weights: str | None = None) -> dict[str, float]:
    """rFID and rKID of ``reconstructions`` against their ``originals`` (float ``(N, C, H, W)`` in
    [0, 1], C = 1 or 3, paired and equal in shape).

    Returns ``{"rfid", "rkid", "rkid_std", "num_images"}``. Images are clipped to [0, 1] and quantized to
    uint8 as when saved to PNG; grayscale is repeated to RGB. With ``reference_name`` (e.g. the dataset
    and split) the originals' features are cached in-process and under ``resolve_cache_dir()/fid_reference``.
    Fewer than :data:`MIN_UNBIASED_IMAGES` images emit a :class:`SmallSampleFIDWarning`: the value is
    biased upward, so log ``num_images`` and compare trials only at equal counts. rKID is the unbiased
    MMD² estimate: a perfect reconstruction gives a small negative value, O(1/N). ``weights`` overrides
    the InceptionV3 weights file (see :func:`resolve_inception_weights`).
    """
    check_images("originals", originals)
    check_images("reconstructions", reconstructions)
    if originals.shape != reconstructions.shape:
        raise ValueError(f"originals and reconstructions must have the same shape; got "
                         f"{tuple(originals.shape)} and {tuple(reconstructions.shape)}")
    num_images = originals.shape[0]
    if num_images < 2:
        raise ValueError(f"rFID/rKID need at least 2 images; got {num_images}")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if reference_name is not None and (not isinstance(reference_name, str) or not reference_name.strip()):
        raise ValueError(f"reference_name must be a non-empty string or None; got {reference_name!r}")
    weights_path = resolve_inception_weights(weights)
    if num_images < MIN_UNBIASED_IMAGES:
        warnings.warn(f"rFID/rKID on {num_images} images (< {MIN_UNBIASED_IMAGES}) are biased upward; "
                      "compare trials only at the same image count", SmallSampleFIDWarning, stacklevel=2)
    reference = _reference_features(originals.cpu(), reference_name, weights_path, device, batch_size)
    other = inception_features(reconstructions, weights=weights_path, device=device, batch_size=batch_size)
    return {**fid_kid_from_features(reference, other), "num_images": num_images}
