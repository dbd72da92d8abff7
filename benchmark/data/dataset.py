"""The one dataset type every source returns, whatever its modality, and its content digest."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch

#: What each modality's tensors hold: images uint8 (N, C, H, W); audio int16 PCM (N, 1, samples).
SAMPLE_DTYPES = {"image": torch.uint8, "audio": torch.int16}


@dataclass
class Dataset:
    """A fixed train/test pair of sample tensors and where they came from.

    ``modality`` says how to read the tensors: ``image`` is uint8 (N, C, H, W) with H = W; ``audio`` is
    int16 PCM (N, 1, samples) at ``sample_rate`` Hz. Every trial of a comparison trains and is evaluated
    on the same tensors.
    """

    name: str             # the registered source name (benchmark.data.sources)
    source: str           # where the samples came from (packages, files, folder path)
    train: torch.Tensor
    test: torch.Tensor    # never overlapping the train regions, clips or images
    digest: str           # short sha256 of the content, stable across runs
    #: int64 (M,): the source of each test sample (photo, class, folder, voice), so evaluation samples
    #: can be stratified over sources; None when the source has no such structure (one group).
    test_groups: torch.Tensor | None = None
    modality: str = "image"
    sample_rate: int | None = None   # audio only

    @property
    def channels(self) -> int:
        return int(self.train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.shape[-1])

    @property
    def sample_length(self) -> int:
        """Pixels per side (images) or samples per clip (audio): the last axis."""
        return int(self.train.shape[-1])


def content_digest(train: torch.Tensor, test: torch.Tensor) -> str:
    """Short sha256 of both splits' shapes and bytes: equal digests mean identical data."""
    hasher = hashlib.sha256()
    for split in (train, test):
        hasher.update(repr(tuple(split.shape)).encode())
        hasher.update(split.contiguous().numpy().tobytes())
    return hasher.hexdigest()[:16]


def offline() -> bool:
    """True when ``VQBENCH_OFFLINE`` forbids downloads (set it on machines without internet)."""
    return os.environ.get("VQBENCH_OFFLINE", "").strip().lower() in ("1", "true", "yes")
