"""The backbone registry: ``build_backbone_for(config, channels) -> (encoder, decoder)`` by name.

A backbone is one module in this package whose builder is decorated by :func:`register_backbone`, plus its
module name in :data:`BACKBONE_MODULES`. Every backbone maps a modality's float input to latents
``(B, latent_dim, *grid)`` and back, and draws its parts from separately seeded streams
(:mod:`benchmark.models.seeding`), so it is identical across quantizers and latent dims for a seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from benchmark.registry import LazyRegistry

#: Modules that register backbones, imported on first lookup. A new backbone: one module + one name here.
BACKBONE_MODULES = ("conv2d", "patch_mlp", "codec1d")


@dataclass(frozen=True)
class Backbone:
    name: str
    modality: str                       # the modality whose inputs it reads: "image" | "audio"
    build: Callable                     # build(config, channels) -> (encoder, decoder)
    #: tokens(config) -> tokens per stored sample (images: the latent grid's h·w; audio: samples / hop)
    tokens: Callable
    #: token_grid(config) -> the side of a square image token grid, or None where there is none (audio);
    #: what a data-initialized quantizer (VQGAN-LC) pools image features onto
    token_grid: Callable = lambda config: None
    description: str = ""


def square_token_grid(config) -> int:
    """The side of the token grid of an image backbone that downsamples ``num_downsamples`` times by 2."""
    return config.image_size // 2 ** config.num_downsamples


_BACKBONES: LazyRegistry[Backbone] = LazyRegistry("backbone", "benchmark.models", BACKBONE_MODULES)


def register_backbone(name: str, *, modality: str, tokens: Callable, token_grid: Callable | None = None,
                      description: str = ""):
    """Decorator: make ``build(config, channels) -> (encoder, decoder)`` buildable as ``name``."""

    def decorate(build):
        _BACKBONES.add(name, Backbone(name, modality, build, tokens, token_grid or (lambda config: None),
                                      description or (build.__doc__ or "").strip()),
                       same=lambda old, new: old.build is new.build)
        return build

    return decorate


def available_backbones() -> tuple[str, ...]:
    return _BACKBONES.names()


def get_backbone(name: str) -> Backbone:
    return _BACKBONES.get(name)
