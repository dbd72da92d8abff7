"""The data-source registry: ``load_dataset(name, request) -> Dataset`` for every registered source.

A source is one module in this package with a loader decorated by :func:`register_source`, plus its
module name in :data:`SOURCE_MODULES` (the one line of registration; modules are imported on first use,
so importing this registry is cheap). Each source declares its modality, so the trainer picks the
modality's backbone, metrics and artifacts without a branch.

Image sources: ``photos`` (default, offline: patches of the photographs bundled in pip wheels),
``fashion-mnist`` (IDX files), ``cifar10`` (python batches), ``folder`` (any folder of images).
Audio sources: ``speech`` (offline: a corpus synthesized by espeak-ng), ``audio-folder`` (wav/flac files,
LibriTTS's layout included). Nothing is downloaded when ``VQBENCH_OFFLINE=1`` is set.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from benchmark.data.dataset import Dataset
from benchmark.files import resolve_cache_dir
from benchmark.registry import LazyRegistry

#: Modules that register sources, imported on first lookup. A new source: one module + one name here.
SOURCE_MODULES = ("photos", "fashion_mnist", "cifar10", "folder", "speech", "audio_folder")


@dataclass(frozen=True)
class DataRequest:
    """What a trial asks of a source. Image sources read ``image_size``; audio sources ``sample_rate``
    and ``clip_samples``. ``seed`` is the data seed (fixed across trials: the trial seed only orders)."""

    image_size: int = 32
    sample_rate: int = 16_000
    clip_samples: int = 16_000
    data_dir: str | None = None
    seed: int = 0
    cache_dir: str | None = None


@dataclass(frozen=True)
class Source:
    name: str
    modality: str                      # "image" | "audio"
    load: Callable[..., Dataset]       # load(request: DataRequest, cache_dir: Path) -> Dataset
    needs_data_dir: bool = False       # refuses to run without --data-dir
    description: str = ""


_SOURCES: LazyRegistry[Source] = LazyRegistry("data source", "benchmark.data", SOURCE_MODULES, option="dataset")


def register_source(name: str, *, modality: str, needs_data_dir: bool = False, description: str = ""):
    """Decorator: make ``load(request, cache_dir) -> Dataset`` loadable as ``name``."""

    def decorate(load):
        _SOURCES.add(name, Source(name, modality, load, needs_data_dir, description),
                     same=lambda old, new: old.load is new.load)
        return load

    return decorate


def available_sources() -> tuple[str, ...]:
    return _SOURCES.names()


def get_source(name: str) -> Source:
    return _SOURCES.get(name)


def load_dataset(name: str, request: DataRequest | None = None, **fields) -> Dataset:
    """Load source ``name``: ``request`` or its fields as keywords (``image_size=32, data_dir=...``)."""
    request = request if request is not None else DataRequest(**fields)
    source = get_source(name)
    if source.modality == "image":
        check_image_size(request.image_size)
    if source.needs_data_dir and not request.data_dir:
        raise ValueError(f"dataset {name!r} needs data_dir (--data-dir): {source.description}")
    return source.load(request, resolve_cache_dir(request.cache_dir))


def check_image_size(image_size: int) -> None:
    """The autoencoders downsample by up to 4, so sizes must be multiples of 4 and at least 8."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8 \
            or image_size % 4:
        raise ValueError(f"image_size must be an integer >= 8 and divisible by 4, got {image_size!r}")
