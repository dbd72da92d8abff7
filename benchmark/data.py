"""Image datasets for the benchmark: one entry point, ``load_dataset(name, ...) -> ImageDataset``.

Every source yields uint8 tensors (N, C, H, W) with H = W = ``image_size`` and a fixed train/test
split, so every trial of a comparison trains and is evaluated on the same images. The sources live in
``benchmark.datasets`` (one module each) and are imported on demand, so importing this module is cheap.

- ``photos`` (default, offline, pip-only): colour patches cut from the real photographs bundled in the
  scikit-image and scikit-learn wheels; the test patches come from a held-out bottom strip of every
  photo (``benchmark.datasets.photos``). Built once and cached on disk.
- ``fashion-mnist``: the IDX files from ``data_dir``, else the Debian package's
  ``/usr/share/datasets/fashion-mnist``, else torchvision's download (``benchmark.datasets.fashion_mnist``).
- ``cifar10``: the python-pickle batches in torchvision's layout under ``data_dir`` (or the cache),
  downloaded by torchvision when absent (``benchmark.datasets.cifar10``).
- ``folder``: any folder of images, flat or with class subfolders, split by a hash of each file's
  relative path (``benchmark.datasets.folder``). Cached on disk, keyed by the folder's file listing.

Nothing is downloaded when ``VQBENCH_OFFLINE=1`` is set: a missing dataset is then a clear error.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch

from benchmark.files import resolve_cache_dir

DATASETS = ("photos", "fashion-mnist", "cifar10", "folder")


@dataclass
class ImageDataset:
    """A train/test pair of uint8 image tensors (N, C, H, W) and where they came from."""

    name: str             # one of DATASETS
    source: str           # where the images came from (packages + photo names, IDX dir, folder path)
    train: torch.Tensor   # uint8 (N, C, H, W), C = 1 or 3, H = W = image_size
    test: torch.Tensor    # uint8 (M, C, H, W), never overlapping train regions/images
    digest: str           # short sha256 of the content, stable across runs
    #: int64 (M,): the source of each test image (photo, class or folder), so evaluation samples can be
    #: stratified over sources; None when the source has no such structure (one group).
    test_groups: torch.Tensor | None = None

    @property
    def channels(self) -> int:
        return int(self.train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.shape[-1])


def load_dataset(name: str, *, image_size: int = 32, data_dir: str | None = None, seed: int = 0,
                 cache_dir: str | None = None) -> ImageDataset:
    """Load dataset ``name`` at ``image_size`` × ``image_size`` pixels.

    ``data_dir``: where the files are (required for ``folder``; optional for ``fashion-mnist`` and
    ``cifar10``; ignored by ``photos``). ``seed``: the data seed. It picks the random train crops of
    ``photos`` only; every test set and every other source is the same for all seeds. Pass a fixed
    value (the default) to train every trial on the same images and let the trial seed control the
    order. ``cache_dir``: where built datasets are cached (default ``$VQBENCH_CACHE``, else
    ``~/.cache/vqbench``).
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {name!r}")
    check_image_size(image_size)
    cache = resolve_cache_dir(cache_dir)
    if name == "photos":
        from benchmark.datasets.photos import load_photos

        return load_photos(image_size=image_size, seed=seed, cache_dir=cache)
    if name == "fashion-mnist":
        from benchmark.datasets.fashion_mnist import load_fashion_mnist

        return load_fashion_mnist(image_size=image_size, data_dir=data_dir, cache_dir=cache)
    if name == "cifar10":
        from benchmark.datasets.cifar10 import load_cifar10

        return load_cifar10(image_size=image_size, data_dir=data_dir, cache_dir=cache)
    if data_dir is None:
        raise ValueError("dataset 'folder' needs data_dir (--data-dir): a folder of images")
    from benchmark.datasets.folder import load_folder

    return load_folder(data_dir, image_size=image_size, cache_dir=cache)


def check_image_size(image_size: int) -> None:
    """The autoencoders downsample by up to 4, so sizes must be multiples of 4 and at least 8."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8 \
            or image_size % 4:
        raise ValueError(f"image_size must be an integer >= 8 and divisible by 4, got {image_size!r}")


def content_digest(train: torch.Tensor, test: torch.Tensor) -> str:
    """Short sha256 of both splits' shapes and bytes: equal digests mean identical data."""
    hasher = hashlib.sha256()
    for split in (train, test):
        hasher.update(repr(tuple(split.shape)).encode())
        hasher.update(split.contiguous().numpy().tobytes())
    return hasher.hexdigest()[:16]


def stratified_sample(groups: torch.Tensor | None, size: int, count: int, seed: int) -> torch.Tensor:
    """Sorted indices of ``count`` of ``size`` test images, spread over ``groups`` in proportion to their
    sizes (largest remainder; every group gets one when ``count`` allows), chosen at random within each
    group by a generator seeded with ``seed``. ``count >= size`` returns every index. Depends only on its
    arguments, so every trial of a comparison evaluates the same images."""
    if count < 1:
        raise ValueError(f"count must be >= 1; got {count}")
    if count >= size:
        return torch.arange(size)
    groups = torch.zeros(size, dtype=torch.long) if groups is None else groups.long()
    if len(groups) != size:
        raise ValueError(f"groups must have one entry per test image ({size}); got {len(groups)}")
    generator = torch.Generator().manual_seed(seed)
    labels, sizes = torch.unique(groups, return_counts=True)
    shares = sizes.double() / size * count
    quotas = shares.floor().long()
    if count >= len(labels):  # every source represented before any gets a second remainder
        quotas = quotas.clamp(min=1)
    remaining = count - int(quotas.sum())
    order = torch.argsort(shares - shares.floor(), descending=True, stable=True)
    for position in order.tolist():
        if remaining == 0:
            break
        step = 1 if remaining > 0 else -1
        if step > 0 and quotas[position] < sizes[position] or step < 0 and quotas[position] > 1:
            quotas[position] += step
            remaining -= step
    chosen = []
    for label, quota in zip(labels.tolist(), quotas.tolist()):
        members = (groups == label).nonzero().squeeze(1)
        chosen.append(members[torch.randperm(len(members), generator=generator)[:quota]])
    return torch.cat(chosen).sort().values


def indices_digest(indices: torch.Tensor) -> str:
    """Short sha256 of an index list: two runs with equal digests evaluated the same images."""
    return hashlib.sha256(indices.long().contiguous().numpy().tobytes()).hexdigest()[:16]


def offline() -> bool:
    """True when ``VQBENCH_OFFLINE`` forbids downloads (set it on machines without internet)."""
    return os.environ.get("VQBENCH_OFFLINE", "").strip().lower() in ("1", "true", "yes")
