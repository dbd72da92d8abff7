"""Fashion-MNIST (Xiao et al. 2017) from its IDX files: 60k train / 10k test greyscale 28×28 images,
the official split, resized to ``image_size`` with one channel.

Where the files are looked for, in order:
1. ``data_dir`` (the files themselves, or torchvision's ``FashionMNIST/raw`` layout below it);
2. without ``data_dir``: ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``);
3. torchvision's download, into ``data_dir`` or ``<cache_dir>/fashion-mnist`` — not when
   ``VQBENCH_OFFLINE=1``, and a failed download is a ValueError naming these options.
Files may be gzip-compressed (``.gz``) or raw. The resized images are cached in ``cache_dir``, keyed by
``image_size`` and the files' paths, sizes and modification times. The test labels (``t10k-labels``),
when present, only group the test images by class so evaluation samples can be stratified; the
benchmark reconstructs images and never trains on labels.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from benchmark.data.dataset import Dataset, content_digest, offline
from benchmark.data.sources import register_source
from benchmark.data.cache import cached_dataset, files_fingerprint
from benchmark.data.images import resize_batch

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
TRAIN_IMAGES = "train-images-idx3-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_UBYTE_3D_MAGIC = 0x00000803  # two zero bytes, type 0x08 (unsigned byte), 3 dimensions
IDX_UBYTE_1D_MAGIC = 0x00000801  # the same, 1 dimension (labels)


def load_fashion_mnist(*, image_size: int = 32, data_dir: str | None = None, cache_dir) -> Dataset:
    directory = find_idx_dir(data_dir)
    if directory is None:
        directory = download(Path(data_dir) if data_dir else Path(cache_dir) / "fashion-mnist",
                             data_dir)
    train_path, test_path = idx_file(directory, TRAIN_IMAGES), idx_file(directory, TEST_IMAGES)
    labels_path = idx_file(directory, TEST_LABELS)
    files = [train_path, test_path] + ([labels_path] if labels_path else [])
    key = f"fashion-mnist-size{image_size}-{files_fingerprint(files)}"
    return cached_dataset(cache_dir, key,
                          lambda: build(directory, train_path, test_path, image_size, labels_path))


def build(directory: Path, train_path: Path, test_path: Path, image_size: int,
          labels_path: Path | None = None) -> Dataset:
    train = resize_batch(read_idx_images(train_path)[:, None], image_size)
    test = resize_batch(read_idx_images(test_path)[:, None], image_size)
    groups = read_idx_labels(labels_path) if labels_path else None
    if groups is not None and len(groups) != len(test):
        raise ValueError(f"IDX labels {labels_path} hold {len(groups)} labels for {len(test)} test images")
    return Dataset(name="fashion-mnist", source=f"Fashion-MNIST IDX files in {directory}",
                        train=train, test=test, digest=content_digest(train, test), test_groups=groups)


def find_idx_dir(data_dir: str | None) -> Path | None:
    """The first candidate directory holding both image files, or None."""
    if data_dir is not None:
        candidates = [Path(data_dir), Path(data_dir) / "FashionMNIST" / "raw"]
    else:
        candidates = [SYSTEM_DIR]
    for directory in candidates:
        if idx_file(directory, TRAIN_IMAGES) and idx_file(directory, TEST_IMAGES):
            return directory
    return None


def idx_file(directory: Path, stem: str) -> Path | None:
    """``stem`` raw or ``stem.gz`` in ``directory`` (raw preferred), or None."""
    for path in (directory / stem, directory / f"{stem}.gz"):
        if path.is_file():
            return path
    return None


def read_idx_labels(path: Path) -> torch.Tensor:
    """int64 (N,) from an IDX1 ubyte label file; ValueError naming the file when it is not one."""
    blob = _read_maybe_gzipped(path)
    if len(blob) < 8:
        raise ValueError(f"IDX label file {path} is truncated: {len(blob)} bytes, header needs 8")
    magic, count = struct.unpack(">II", blob[:8])
    if magic != IDX_UBYTE_1D_MAGIC or len(blob) != 8 + count:
        raise ValueError(f"IDX label file {path} is not {count} unsigned-byte labels (magic {magic:#010x})")
    return torch.from_numpy(np.frombuffer(blob, dtype=np.uint8, offset=8).astype(np.int64))


def _read_maybe_gzipped(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            gzipped = handle.read(2) == b"\x1f\x8b"
        opener = gzip.open if gzipped else open
        with opener(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError; truncated gzip: EOFError
        raise ValueError(f"cannot read IDX file {path}: {error}") from error


def read_idx_images(path: Path) -> torch.Tensor:
    """uint8 (N, rows, cols) from an IDX3 ubyte file; ValueError naming the file when it is not one."""
    blob = _read_maybe_gzipped(path)
    if len(blob) < 16:
        raise ValueError(f"IDX file {path} is truncated: {len(blob)} bytes, header needs 16")
    magic, count, rows, cols = struct.unpack(">IIII", blob[:16])
    if magic != IDX_UBYTE_3D_MAGIC:
        raise ValueError(f"IDX file {path} has magic number {magic:#010x}, expected "
                         f"{IDX_UBYTE_3D_MAGIC:#010x} (unsigned-byte images, 3 dimensions)")
    expected = 16 + count * rows * cols
    if len(blob) != expected or count == 0:
        raise ValueError(f"IDX file {path} holds {len(blob)} bytes; its header ({count} images of "
                         f"{rows}×{cols}) needs {expected}" + (" and at least one image" if not count
                                                             else ""))
    pixels = np.frombuffer(blob, dtype=np.uint8, offset=16).reshape(count, rows, cols)
    return torch.from_numpy(pixels.copy())


def download(root: Path, data_dir: str | None) -> Path:
    """torchvision's FashionMNIST download into ``root``; ValueError naming the options on failure."""
    looked = f"in {data_dir}" if data_dir else f"in {SYSTEM_DIR}"
    options = (f"no Fashion-MNIST IDX files ({TRAIN_IMAGES}[.gz], {TEST_IMAGES}[.gz]) found {looked}. "
               "Options: pass --data-dir with those files; install the Debian package "
               f"dataset-fashion-mnist (files in {SYSTEM_DIR}); or go online so torchvision can "
               f"download them into {root}")
    if offline():
        raise ValueError(options + " (downloads are disabled by VQBENCH_OFFLINE)")
    try:
        from torchvision.datasets import FashionMNIST

        for train in (True, False):
            FashionMNIST(root=str(root), train=train, download=True)
    except Exception as error:  # URLError, RuntimeError, timeouts: all mean "not available here"
        raise ValueError(f"{options}; the download failed: {error}") from error
    return root / "FashionMNIST" / "raw"


@register_source("fashion-mnist", modality="image", description="Fashion-MNIST IDX files")
def _load(request, cache_dir):
    return load_fashion_mnist(image_size=request.image_size, data_dir=request.data_dir, cache_dir=cache_dir)
