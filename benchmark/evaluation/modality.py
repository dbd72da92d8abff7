"""The modality registry: how a modality's samples enter the model, which quality metrics its final
evaluation reports, and which examples its run shows in MLflow.

A modality is one module in this package that calls :func:`register_modality`, plus its module name in
:data:`MODALITY_MODULES`. Data sources declare their modality (``benchmark.data.sources``); the trainer
looks the modality up by that name, so a new modality adds files and touches no trainer branch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark.registry import LazyRegistry

#: Modules that register modalities, imported on first lookup.
MODALITY_MODULES = ("image_modality", "audio_modality")


@dataclass(frozen=True)
class Modality:
    name: str
    default_backbone: str
    #: stored samples (uint8 images, int16 PCM) -> the model's float input on a device
    to_float: Callable[[Tensor, torch.device], Tensor]
    #: the range reconstructions are clamped to before the metrics ((0, 1) for images, (-1, 1) for audio)
    value_range: tuple[float, float]
    #: (float originals, clamped float reconstructions, dataset) -> {MLflow key: value}, at the last checkpoint
    quality: Callable[..., dict[str, float]]
    #: (run, float originals, clamped float reconstructions, dataset, run name) -> logs example artifacts
    log_examples: Callable[..., None]
    #: what one stored sample is called in descriptions ("image", "clip")
    sample_noun: str = "sample"
    #: whether rFID/rKID (InceptionV3 on images) apply
    supports_fid: bool = False
    #: (reconstruction, target, dataset) -> the training loss's reconstruction term; default MSE
    reconstruction_loss: Callable[..., Tensor] = lambda reconstruction, target, dataset: F.mse_loss(
        reconstruction, target)


_MODALITIES: LazyRegistry[Modality] = LazyRegistry("modality", "benchmark.evaluation", MODALITY_MODULES)


def register_modality(modality: Modality) -> Modality:
    return _MODALITIES.add(modality.name, modality, same=lambda old, new: old == new)


def get_modality(name: str) -> Modality:
    return _MODALITIES.get(name)
