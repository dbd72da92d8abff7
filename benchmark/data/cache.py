"""Built datasets on disk: one ``<key>.pt`` file per set of build parameters, verified on load.

A file that fails to load, lacks a field, or whose content no longer matches its stored digest is
reported with a warning and rebuilt, never trusted. Files are written to a temporary name and renamed,
so trials building the same dataset at once (parallel Ray workers) never read a half-written file.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from benchmark.data.dataset import SAMPLE_DTYPES, Dataset, content_digest
from benchmark.files import save_atomically

CACHE_FORMAT = 2  # bump when the file layout changes


def cached_dataset(cache_dir: Path, key: str, build: Callable[[], Dataset]) -> Dataset:
    """The dataset stored under ``key`` in ``cache_dir``, built with ``build()`` and stored if absent."""
    path = Path(cache_dir) / f"{key}.pt"
    if path.exists():
        try:
            return read_cache_file(path)
        except Exception as error:  # any unreadable file is rebuilt, whatever the reason
            warnings.warn(f"rebuilding dataset cache file {path}: {error}", stacklevel=3)
    dataset = build()
    try:
        write_cache_file(path, dataset)
    except OSError as error:  # a read-only cache must not stop a trial
        warnings.warn(f"could not write dataset cache file {path}: {error}", stacklevel=3)
    return dataset


def read_cache_file(path: Path) -> Dataset:
    """Load and verify one cache file; ValueError when it is not a complete, intact dataset."""
    stored = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(stored, dict) or stored.get("format") != CACHE_FORMAT:
        raise ValueError("not a vqbench dataset cache file of format %d" % CACHE_FORMAT)
    train, test = stored.get("train"), stored.get("test")
    modality = str(stored.get("modality", "image"))  # files written before audio existed hold images
    dtype, rank = SAMPLE_DTYPES.get(modality), 4 if modality == "image" else 3
    for split_name, split in (("train", train), ("test", test)):
        if not isinstance(split, torch.Tensor) or split.dtype != dtype or split.dim() != rank:
            raise ValueError(f"field {split_name!r} is not a {dtype} {modality} tensor of rank {rank}")
    if content_digest(train, test) != stored.get("digest"):
        raise ValueError("content does not match its stored digest")
    groups = stored.get("test_groups")
    if groups is not None and (not isinstance(groups, torch.Tensor) or groups.shape != (len(test),)):
        raise ValueError("field 'test_groups' is not one label per test sample")
    return Dataset(name=str(stored["name"]), source=str(stored["source"]), train=train, test=test,
                   digest=str(stored["digest"]), test_groups=groups, modality=modality,
                   sample_rate=stored.get("sample_rate"))


def write_cache_file(path: Path, dataset: Dataset) -> None:
    save_atomically({"format": CACHE_FORMAT, "name": dataset.name, "source": dataset.source,
                     "train": dataset.train.contiguous(), "test": dataset.test.contiguous(),
                     "digest": dataset.digest, "test_groups": dataset.test_groups,
                     **({} if dataset.modality == "image" else
                        {"modality": dataset.modality, "sample_rate": dataset.sample_rate})}, path)


def files_fingerprint(paths: list[Path]) -> str:
    """Short hash of the files' absolute paths, sizes and modification times: a cache key part that
    changes when any source file is replaced."""
    import hashlib
    import json

    listing = []
    for path in paths:
        stat = Path(path).stat()
        listing.append((str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns))
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]
