"""CIFAR-10 (Krizhevsky 2009): 50k train / 10k test colour 32×32 images, the official split, resized
to ``image_size``.

Read from the python-pickle batches in torchvision's layout: ``<root>/cifar-10-batches-py/``
``data_batch_1`` … ``data_batch_5`` and ``test_batch``, where ``root`` is ``data_dir`` (which may also
be the ``cifar-10-batches-py`` folder itself) or ``<cache_dir>/cifar10``. When the batches are absent,
``torchvision.datasets.CIFAR10(root, download=True)`` fetches and checks them — not when
``VQBENCH_OFFLINE=1``, and a failed download is a ValueError naming the options.

The batches are read here rather than through ``torchvision.datasets.CIFAR10`` so that each file is
validated with an error naming it (torchvision only reports "not found or corrupted"). The decoded
images are cached in ``cache_dir``, keyed by ``image_size`` and the batch files' paths, sizes and times. They are Python
pickles, as distributed: point ``data_dir`` only at files you trust.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from benchmark.data.dataset import Dataset, content_digest, offline
from benchmark.data.sources import register_source
from benchmark.data.cache import cached_dataset, files_fingerprint
from benchmark.data.images import resize_batch

BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
PIXELS_PER_IMAGE = 3 * 32 * 32


def load_cifar10(*, image_size: int = 32, data_dir: str | None = None, cache_dir) -> Dataset:
    root = Path(data_dir) if data_dir is not None else Path(cache_dir) / "cifar10"
    directory = find_batch_dir(root)
    if directory is None:
        directory = download(root)
    batches = [directory / name for name in TRAIN_BATCHES + TEST_BATCHES]
    key = f"cifar10-size{image_size}-{files_fingerprint(batches)}"
    return cached_dataset(cache_dir, key, lambda: build(directory, image_size))


def build(directory: Path, image_size: int) -> Dataset:
    train = resize_batch(read_batches(directory, TRAIN_BATCHES), image_size)
    test = resize_batch(read_batches(directory, TEST_BATCHES), image_size)
    groups = read_labels(directory / TEST_BATCHES[0])
    return Dataset(name="cifar10", source=f"CIFAR-10 python batches in {directory}",
                        train=train, test=test, digest=content_digest(train, test),
                        test_groups=groups if groups is not None and len(groups) == len(test) else None)


def find_batch_dir(root: Path) -> Path | None:
    for directory in (root / BATCH_DIR, root):
        if all((directory / name).is_file() for name in TRAIN_BATCHES + TEST_BATCHES):
            return directory
    return None


def read_batches(directory: Path, names: tuple[str, ...]) -> torch.Tensor:
    """uint8 (N, 3, 32, 32) from the named batch files, in order."""
    return torch.cat([read_batch(directory / name) for name in names])


def _load_batch(path: Path):
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle, encoding="bytes")
    except Exception as error:  # truncated or foreign files raise many different types
        raise ValueError(f"cannot read CIFAR-10 batch {path}: {error}") from error


def read_labels(path: Path) -> torch.Tensor | None:
    """The class labels of a batch (only used to stratify evaluation samples), or None when absent."""
    batch = _load_batch(path)
    labels = batch.get(b"labels", batch.get("labels")) if isinstance(batch, dict) else None
    return torch.tensor(list(labels), dtype=torch.long) if labels is not None else None


def read_batch(path: Path) -> torch.Tensor:
    """One CIFAR-10 batch: a pickled dict whose b"data" is uint8 (N, 3072), channel-major rows."""
    batch = _load_batch(path)
    data = batch.get(b"data", batch.get("data")) if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != PIXELS_PER_IMAGE or len(data) == 0:
        found = f"{type(data).__name__} {getattr(data, 'dtype', '')} {getattr(data, 'shape', '')}"
        raise ValueError(f"CIFAR-10 batch {path} must hold a non-empty uint8 array of shape "
                         f"(N, {PIXELS_PER_IMAGE}) under b'data'; found {found.strip()}")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())


def download(root: Path) -> Path:
    options = (f"no CIFAR-10 batches ({', '.join(TRAIN_BATCHES + TEST_BATCHES)}) found in "
               f"{root / BATCH_DIR}. Options: pass --data-dir pointing at a folder holding "
               f"{BATCH_DIR}/ (torchvision's layout); or go online so torchvision can download "
               f"CIFAR-10 into {root}")
    if offline():
        raise ValueError(options + " (downloads are disabled by VQBENCH_OFFLINE)")
    try:
        from torchvision.datasets import CIFAR10

        CIFAR10(root=str(root), train=True, download=True)
    except Exception as error:  # URLError, RuntimeError, timeouts: all mean "not available here"
        raise ValueError(f"{options}; the download failed: {error}") from error
    return root / BATCH_DIR


@register_source("cifar10", modality="image", description="CIFAR-10 python batches")
def _load(request, cache_dir):
    return load_cifar10(image_size=request.image_size, data_dir=request.data_dir, cache_dir=cache_dir)
