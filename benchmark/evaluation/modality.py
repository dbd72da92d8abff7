"""The modality registry: how a modality's samples enter the model, which quality metrics its final
evaluation reports, and which examples its run shows in MLflow.

A modality is one module in this package that calls :func:`register_modality`, plus its module name in
:data:`MODALITY_MODULES`. Data sources declare their modality (``benchmark.data.sources``); the trainer
looks the modality up by that name, so a new modality adds files and touches no trainer branch.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

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


_MODALITIES: dict[str, Modality] = {}
_imported = False


def register_modality(modality: Modality) -> Modality:
    if modality.name in _MODALITIES and _MODALITIES[modality.name] != modality:
        raise ValueError(f"modality {modality.name!r} is registered twice")
    _MODALITIES[modality.name] = modality
    return modality


def get_modality(name: str) -> Modality:
    global _imported
    if not _imported:
        for module in MODALITY_MODULES:
            importlib.import_module(f"benchmark.evaluation.{module}")
        _imported = True
    if name not in _MODALITIES:
        raise ValueError(f"modality must be one of {list(_MODALITIES)}, got {name!r}")
    return _MODALITIES[name]
