"""VQGAN-LC: a large frozen codebook of k-means centres of pretrained features, and one trainable linear
projector into the latent space.

Zhu, Wei, Lu, Chen, "Scaling the Codebook Size of VQGAN to 100,000 with a Utilization Rate of 99%" (arXiv
2406.11837), the method section (Fig. 2d). The codebook ``C_feat`` ``(K, feature_dim)`` is initialized once from
clustered features of a pretrained vision encoder and never trained; the effective codes are ``P(C_feat)``
with one linear projector P, so every gradient on a selected code moves P and with it every code. Search,
loss and straight-through are VQ's, with the official *effective* loss weights:

    codes = P(C_feat),   k = argmin_k ||z - codes_k||^2,
    qloss = ||z - sg(codes_k)||^2 + 0.33 * ||sg(z) - codes_k||^2            (models_vq.py L203)
    L_total = rec + rate_q * qloss + ...,   rate_q = 0.1                    (models_vq.py L246-254)
    => L = 0.1 * ||z - sg(codes_k)||^2 + 0.033 * ||sg(z) - codes_k||^2     ("commitment" beta = 0.1,
                                                                             "codebook" 0.033)

The quantizer's ``loss`` is what the trainer adds to its reconstruction loss unweighted, so the official
``rate_q`` is folded into the two defaults (``beta = 0.1 * 1``, ``codebook_weight = 0.1 * 0.33``). The
official reconstruction term is L1 plus LPIPS (``models_vq.py`` L237-239), not this benchmark's; the
weights are relative to each lab's own reconstruction loss.

Read in the authors' code (github.com/zh460045050/VQGAN-LC, commit 4708958):
``vqgan-gpt-lc/models/models_vq.py`` L83-93 (``tuning_codebook == 0``: the loaded codebook, frozen),
L113-116 (``use_cblinear == 1``: ``nn.Linear(codebook_dim, embed_dim)``, weight ~ N(0, embed_dim^-1/2)),
L174-175 (codes = projector(codebook)), L179-183 (nearest code), L203 (``qloss`` above), L207
(straight-through), L226 and L246-254 (``loss = rec_loss + self.args.rate_q * qloss + ...``);
``vqgan-gpt-lc/training_vqgan.py`` L261 (``--rate_q`` default 0.1); ``vqgan-gpt-lc/runTrainVQ.sh``
(``--tuning_codebook 0 --use_cblinear 1 --embed_dim 8``, ``--n_vision_words 100000``; no ``--rate_q``, so
0.1); ``codebook_generation/clip_feature_generation.py`` and
``codebook_generation/minibatch_kmeans_per_class.py`` L12-13, L72-81 (CLIP ViT-L/14 patch features, 768-d on a
16x16 grid, average-pooled 4x4 to a 4x4 grid, k-means with 100 centres per ImageNet class: 100,000 codes).

How this differs from the paper's codebook (documented, deliberate):

- Features: not CLIP ViT-L/14 (not available offline here) but the InceptionV3 that rFID already uses
  (torch-fidelity's ``FeatureExtractorInceptionV3``, TF inception-2015-12-05 weights; the trainer injects
  it as ``feature_extractor``, so this module never imports ``benchmark``), an ImageNet-supervised CNN rather than a language-aligned ViT. The feature
  map is an intermediate one, ``feature_layer``: by default the output of ``Conv2d_4a_3x3`` (192 channels,
  the last stem convolution before the first Inception block). Why that layer: on the 2 shared cores this
  project targets the uncached initialization must stay under ~30 s at K = 2^14; at the default 64 px input
  it ran at 130-260 images/s there (by load), 3-4x faster than ``Mixed_5d`` (288 channels, the last
  block at the 35x35 grid of 299 px inputs) at the 88 px that block needs for an 8x8 map. ``Mixed_5d``
  is an option for those who can afford it (set ``feature_resolution`` >= 88).
- Geometry: images are resized to ``feature_resolution`` (default 64 px, 2x the 32 px training patches,
  with torch-fidelity's TF1-compatible bilinear resize, not 299 px), the feature map is average-pooled onto
  the autoencoder's token grid (``token_grid`` from the trainer: 8x8 for 32 px and two downsamplings), so
  each k-means point describes the same image region as one encoder token, as the paper pools CLIP's grid.
- Clustering: one k-means over the token features of at most ``max_images`` training images, not per
  class (there are no labels here). Features are centred, reduced by PCA to ``feature_dim`` and scaled to
  unit mean squared norm (the scale of the random basis used before initialization), then clustered with
  ``kmeans_iters`` Lloyd iterations from ``kmeans_seed``-seeded random data points (Forgy init; k-means++
  is K sequential passes, too slow at K = 2^14 here); assignments use the blocked exact
  :func:`~quantizers.search.nearest_code`; a cluster that empties keeps its centre (as
  vector-quantize-pytorch's ``kmeans``). With fewer points than codes, the starting points repeat.
- Cached under ``cache_dir/lc_codebooks/`` (the trainer passes its cache folder), keyed by the data key
  and every option that changes the centres, written atomically (a temporary file in the same folder,
  then ``os.replace``). Without a ``cache_dir`` nothing is cached.

Defaults, measured on the photos data set (16,384 patches of 32 px, token grid 8): ``max_images = 1024``
(65,536 token features), ``feature_dim = 32``, ``kmeans_iters = 10``. The first, uncached initialization
took 16 s at K = 2^14 and 5 s at K = 2^10 with one torch thread (9.8 s at 2^14 with two threads; with two
threads on the loaded shared machine OpenMP oversubscription made it up to 23 s); 2,048 images took 27 s
at 2^14 with two threads, hence 1,024. ``feature_dim = 32`` keeps 95 % of the 192 channels' variance on
the photos data (16: 87 %, 64: 98.5 %) at half the k-means cost of 64. A cached initialization takes
milliseconds. The projector maps the 32-d centres to ``dim`` (the paper: 768-d CLIP features to 8).

Before :meth:`LargeCodebookQuantizer.initialize_from_data` runs (unit tests, ``vqbench bench``) the frozen
basis is random, N(0, feature_dim^-1/2) as SimVQ's, and the quantizer works as a frozen-basis VQ. The
extractor is obtained (``feature_extractor()``) inside ``torch.random.fork_rng``, so the global RNG stream
is the same whether the centres were cached or computed; features are computed on the device the
extractor's parameters are on (the quantizer never moves a module it did not build).
"""
from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Quantizer, QuantizerOutput, check_choice, check_float, check_int, straight_through
from .registry import register
from .search import nearest_code

#: The InceptionV3 blocks, in forward order (torch-fidelity's ``FeatureExtractorInceptionV3.forward``), and
#: the layers whose output may be used with their channel counts.
INCEPTION_BLOCKS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1",
                    "Conv2d_4a_3x3", "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d")
FEATURE_CHANNELS = {"Conv2d_4a_3x3": 192, "Mixed_5d": 288}
CACHE_FOLDER = "lc_codebooks"
CACHE_VERSION = 1
FEATURE_BATCH = 64


@register("lc")
class LargeCodebookQuantizer(Quantizer):
    """Frozen k-means codebook of pretrained features, a trainable linear projector (VQGAN-LC, Zhu et al.)."""

    learns_codebook_by_gradient = True
    needs_data_init = True

    def __init__(self, dim: int, codebook_size: int, feature_dim: int = 32,
                 feature_layer: str = "Conv2d_4a_3x3", feature_resolution: int = 64, max_images: int = 1024,
                 kmeans_iters: int = 10, kmeans_seed: int = 0, beta: float = 0.1, codebook_weight: float = 0.033):
        super().__init__(dim, codebook_size)
        self.feature_layer = check_choice("feature_layer", feature_layer, list(FEATURE_CHANNELS))
        channels = FEATURE_CHANNELS[self.feature_layer]
        self.feature_dim = check_int("feature_dim", feature_dim, minimum=1, maximum=channels)
        # below 32 px the stem's strided convolutions leave no feature map; 299 px is the network's own size
        self.feature_resolution = check_int("feature_resolution", feature_resolution, minimum=32, maximum=299)
        self.max_images = check_int("max_images", max_images, minimum=1)
        self.kmeans_iters = check_int("kmeans_iters", kmeans_iters, minimum=1)
        self.kmeans_seed = check_int("kmeans_seed", kmeans_seed, minimum=0)
        # official effective weights: rate_q 0.1 x (1, 0.33) (models_vq.py L203, L246-254; training_vqgan.py L261)
        self.beta = check_float("beta", beta, minimum=0.0)
        self.codebook_weight = check_float("codebook_weight", codebook_weight, minimum=0.0)
        # random until initialize_from_data replaces it with k-means centres; frozen either way
        self.register_buffer("basis", torch.randn(self.codebook_size, self.feature_dim) * self.feature_dim ** -0.5)
        self.register_buffer("data_initialized", torch.tensor(False))
        self.projection = nn.Linear(self.feature_dim, self.dim)
        nn.init.normal_(self.projection.weight, std=self.dim ** -0.5)  # official L116; bias: PyTorch default
        #: "cache" or "computed" after initialize_from_data, with the seconds it took (None before)
        self.init_source: str | None = None
        self.init_seconds: float | None = None

    # ------------------------------------------------------------------------- codes and forward
    def codebook(self) -> Tensor:
        """The effective codes ``P(C_feat)``, ``(codebook_size, dim)``; differentiable w.r.t. P only."""
        return self.projection(self.basis)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        return F.embedding(indices, self.codebook())

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_input(z)
        codebook = self.codebook()
        indices = nearest_code(z.reshape(-1, self.dim), codebook)
        codes = F.embedding(indices, codebook).view_as(z)
        commitment_loss = self.beta * F.mse_loss(z, codes.detach())
        codebook_loss = self.codebook_weight * F.mse_loss(codes, z.detach())
        return QuantizerOutput(
            quantized=straight_through(z, codes),
            indices=indices.view(z.shape[:-1]),
            loss=commitment_loss + codebook_loss,
            losses={"codebook": codebook_loss, "commitment": commitment_loss},
            codebook_size=self.codebook_size,
        )

    # ------------------------------------------------------------------------- data initialization
    def cache_path(self, cache_dir: Path, data_key: str, token_grid: int, num_images: int) -> Path:
        """Where the centres for this data key, grid and these options live under ``cache_dir``."""
        safe_key = re.sub(r"[^A-Za-z0-9_.-]+", "_", data_key)
        name = (f"{safe_key}-v{CACHE_VERSION}-{self.feature_layer}-{self.feature_resolution}px-grid{token_grid}"
                f"-d{self.feature_dim}-K{self.codebook_size}-n{num_images}-it{self.kmeans_iters}"
                f"-seed{self.kmeans_seed}.pt")
        return Path(cache_dir) / CACHE_FOLDER / name

    @torch.no_grad()
    def initialize_from_data(self, images: Tensor, *, data_key: str, token_grid: int,
                             feature_extractor: Callable[[], nn.Module] | None = None,
                             cache_dir: Path | None = None) -> None:
        """Set the frozen basis to k-means centres of InceptionV3 token features of ``images`` (uint8
        ``(N, C, H, W)``, C = 1 or 3), pooled onto a ``token_grid`` x ``token_grid`` grid; loaded from
        ``cache_dir`` when this data key and these options were clustered before. ``feature_extractor`` is a
        zero-argument callable returning torch-fidelity's ``FeatureExtractorInceptionV3`` (required: the
        trainer injects it). See the module docstring."""
        if feature_extractor is None or not callable(feature_extractor):
            raise ValueError("lc needs feature_extractor: a zero-argument callable returning torch-fidelity's "
                             "FeatureExtractorInceptionV3; the trainer must inject it (quantizers do not import "
                             f"benchmark); got {feature_extractor!r}")
        if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4 \
                or images.shape[1] not in (1, 3) or images.shape[0] < 1:
            shape = (tuple(images.shape), images.dtype) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must be uint8 (N, C, H, W) with C = 1 or 3 and N >= 1; got {shape}")
        if not isinstance(data_key, str) or not data_key.strip():
            raise ValueError(f"data_key must be a non-empty string; got {data_key!r}")
        token_grid = check_int("token_grid", token_grid, minimum=1)
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(self.kmeans_seed)
        num_images = min(images.shape[0], self.max_images)
        path = None if cache_dir is None else self.cache_path(cache_dir, data_key, token_grid, num_images)
        centres = None if path is None else _load_centres(path, (self.codebook_size, self.feature_dim))
        self.init_source = "cache"
        if centres is None:
            chosen = torch.randperm(images.shape[0], generator=generator)[:num_images].sort().values
            device = self.basis.device
            # building the extractor initializes layers from the global RNG before loading its weights: keep
            # the trainer's RNG stream the same whether the centres come from the cache or not
            with torch.random.fork_rng(devices=[]):
                extractor = feature_extractor()
                features = inception_token_features(images[chosen], extractor, layer=self.feature_layer,
                                                    resolution=self.feature_resolution, grid=token_grid)
            points = pca_reduce(features.to(device), self.feature_dim)
            centres = kmeans(points, self.codebook_size, iterations=self.kmeans_iters, generator=generator).cpu()
            if path is not None:
                _save_atomically({"centres": centres, "data_key": data_key, "num_points": int(points.shape[0])},
                                 path)
            self.init_source = "computed"
        self.basis.copy_(centres.to(self.basis))
        self.data_initialized.fill_(True)
        self.init_seconds = time.perf_counter() - started

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, feature_dim={self.feature_dim}, feature_layer={self.feature_layer!r}, "
                f"feature_resolution={self.feature_resolution}, data_initialized={bool(self.data_initialized)}")


# ----------------------------------------------------------------------------- offline pieces
def _save_atomically(payload: dict, path: Path) -> None:
    """``torch.save`` to a temporary file in ``path``'s folder, then ``os.replace`` it onto ``path``: a
    killed process leaves no truncated cache file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _load_centres(path: Path, shape: tuple[int, int]) -> Tensor | None:
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a truncated file from a killed process: recompute
        return None
    centres = payload.get("centres") if isinstance(payload, dict) else None
    if not isinstance(centres, Tensor) or tuple(centres.shape) != shape:
        return None
    return centres


@torch.inference_mode()
def inception_token_features(images: Tensor, extractor: nn.Module, *, layer: str, resolution: int, grid: int,
                             batch_size: int = FEATURE_BATCH) -> Tensor:
    """Feature map at ``layer`` of torch-fidelity's ``FeatureExtractorInceptionV3`` ``extractor`` for uint8
    ``images`` resized to ``resolution`` px, average-pooled to ``grid`` x ``grid``: ``(N * grid * grid,
    channels)`` float32 on the CPU, tokens in row-major order. Runs on the extractor's device."""
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    missing = [name for name in INCEPTION_BLOCKS if not hasattr(extractor, name)]
    if not isinstance(extractor, nn.Module) or missing:
        raise ValueError(f"feature_extractor() must return torch-fidelity's FeatureExtractorInceptionV3; got "
                         f"{type(extractor).__name__} without {missing[:3]}")
    device = next(extractor.parameters()).device
    blocks = [getattr(extractor, name) for name in INCEPTION_BLOCKS[: INCEPTION_BLOCKS.index(layer) + 1]]
    chunks = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start:start + batch_size].to(device)
        if batch.shape[1] == 1:
            batch = batch.repeat(1, 3, 1, 1)
        x = interpolate_bilinear_2d_like_tensorflow1x(batch.float(), size=(resolution, resolution),
                                                      align_corners=False)
        x = (x - 128) / 128  # torch-fidelity's input scaling
        for block in blocks:
            x = block(x)
        if x.shape[-1] < grid:
            raise ValueError(f"feature_resolution={resolution} gives a {x.shape[-1]}x{x.shape[-1]} {layer} map, "
                             f"smaller than the {grid}x{grid} token grid; raise feature_resolution")
        pooled = F.adaptive_avg_pool2d(x, grid)                         # (b, channels, grid, grid)
        chunks.append(pooled.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).float().cpu())
    return torch.cat(chunks)


def pca_reduce(features: Tensor, dim: int) -> Tensor:
    """Centre ``features`` ``(N, C)``, project on the top-``dim`` principal axes and scale to unit mean squared
    norm: ``(N, dim)`` float32."""
    centred = features.double() - features.double().mean(0)
    covariance = centred.T @ centred / max(1, features.shape[0] - 1)
    _, vectors = torch.linalg.eigh(covariance)                         # ascending eigenvalues
    reduced = centred @ vectors[:, -dim:].flip(1)
    scale = reduced.pow(2).sum(1).mean().sqrt().clamp_min(1e-12)
    return (reduced / scale).float()


def kmeans(points: Tensor, num_centres: int, *, iterations: int, generator: torch.Generator) -> Tensor:
    """Lloyd's k-means on ``points`` ``(N, D)``: ``(num_centres, D)`` centres. Starts from random data points
    (with repetition when N < num_centres), assigns with the blocked exact ``nearest_code``, keeps the
    previous centre of a cluster that empties."""
    num_points = points.shape[0]
    if num_points >= num_centres:
        start = torch.randperm(num_points, generator=generator)[:num_centres]
    else:
        start = torch.randint(num_points, (num_centres,), generator=generator)
    centres = points[start.to(points.device)].clone()
    for _ in range(iterations):
        assignment = nearest_code(points, centres)
        counts = torch.bincount(assignment, minlength=num_centres)
        sums = torch.zeros_like(centres).index_add_(0, assignment, points)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled].unsqueeze(1).to(points.dtype)
    return centres
