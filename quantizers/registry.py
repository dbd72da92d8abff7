"""Build quantizers by name, timm-style: ``@register("vq")`` on a class, then ``build("vq", dim=…,
codebook_size=…, **options)``. Adding a quantizer is one module plus its decorator, and an import line
in ``quantizers/__init__.py``.

A *variant* is a named quantizer that builds a registered class with some options preset:
``register_variant("simvq-frozen-w", "simvq", "…", train_projection=False)``. Variants are listed,
described, built and swept exactly like classes; their options are the base's minus the preset ones, and
passing a preset option to :func:`build` raises :class:`PresetOptionError`. They exist for controls (one
factor changed, everything else the base method), so a sweep can name them like any other method."""
from __future__ import annotations

import inspect
from dataclasses import dataclass

from .base import Quantizer

_REGISTRY: dict[str, type[Quantizer]] = {}
_VARIANTS: dict[str, "Variant"] = {}


class PresetOptionError(ValueError):
    """An option that a variant presets was passed to :func:`build` (a variant fixes it by definition)."""


@dataclass(frozen=True)
class Variant:
    """A registered class with some options preset, under its own name."""

    name: str
    base: str
    summary: str
    preset: dict


def register(name: str):
    """Class decorator: make a :class:`Quantizer` subclass buildable by ``name``."""

    def decorator(cls: type[Quantizer]) -> type[Quantizer]:
        if not (isinstance(cls, type) and issubclass(cls, Quantizer)):
            raise TypeError(f"@register({name!r}) must decorate a Quantizer subclass; got {cls!r}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"quantizer name {name!r} is already registered to {_REGISTRY[name].__name__}")
        if name in _VARIANTS:
            raise ValueError(f"quantizer name {name!r} is already registered as a variant of "
                             f"{_VARIANTS[name].base!r}")
        cls.registry_name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def register_variant(name: str, base_name: str, summary: str, **preset_options) -> Variant:
    """Register ``name`` as the class registered under ``base_name`` with ``preset_options`` fixed.

    ``summary`` is its one-line description in ``vqbench list`` (say which confound the variant
    separates). The base must be a registered class (not another variant) and every preset option one it
    accepts; the name must be new. Returns the :class:`Variant`."""
    if name in _REGISTRY or name in _VARIANTS:
        raise ValueError(f"quantizer name {name!r} is already registered")
    if base_name not in _REGISTRY:
        kind = "a variant, not a class" if base_name in _VARIANTS else "not registered"
        raise ValueError(f"variant {name!r}: base quantizer {base_name!r} is {kind}")
    if not isinstance(summary, str) or not summary.strip() or "\n" in summary.strip():
        raise ValueError(f"variant {name!r}: summary must be one non-empty line; got {summary!r}")
    if not preset_options:
        raise ValueError(f"variant {name!r}: preset at least one option (else it is just {base_name!r})")
    accepted = {p.name for p in _parameters(_REGISTRY[base_name])}
    unknown = sorted(set(preset_options) - accepted)
    if unknown:
        raise ValueError(f"variant {name!r}: unknown option(s) {unknown} for quantizer {base_name!r}; "
                         f"accepted: {sorted(accepted)}")
    variant = Variant(name=name, base=base_name, summary=summary.strip(), preset=dict(preset_options))
    _VARIANTS[name] = variant
    return variant


def available() -> list[str]:
    """Registered quantizer names (classes and variants), sorted."""
    return sorted([*_REGISTRY, *_VARIANTS])


def get_variant(name: str) -> Variant | None:
    """The :class:`Variant` registered as ``name``, or None when ``name`` is a class (or unknown)."""
    return _VARIANTS.get(name)


def get_class(name: str) -> type[Quantizer]:
    """The class that builds ``name`` (for a variant, its base's class)."""
    if name in _VARIANTS:
        return _REGISTRY[_VARIANTS[name].base]
    if name not in _REGISTRY:
        raise ValueError(f"unknown quantizer {name!r}; available: {available()}")
    return _REGISTRY[name]


def build(name: str, dim: int, codebook_size: int, **options) -> Quantizer:
    """Construct the quantizer registered as ``name``. Unknown options raise ValueError naming them; for a
    variant, an option it presets raises :class:`PresetOptionError`. The instance's ``registry_name`` is
    ``name`` (a variant's own name, not its base's)."""
    cls = get_class(name)
    variant = _VARIANTS.get(name)
    preset = variant.preset if variant else {}
    overridden = sorted(set(options) & set(preset))
    if overridden:
        fixed = {key: preset[key] for key in overridden}
        raise PresetOptionError(f"quantizer {name!r} presets {fixed} (it is {variant.base!r} with "
                                f"{variant.preset}); build {variant.base!r} to choose them")
    accepted = {p.name for p in _parameters(cls)} - set(preset)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for quantizer {name!r}; accepted: {sorted(accepted)}"
        )
    quantizer = cls(dim=dim, codebook_size=codebook_size, **preset, **options)
    if variant:
        quantizer.registry_name = name  # the instance knows which named method it is
    return quantizer


@dataclass(frozen=True)
class Parameter:
    name: str
    default: object
    annotation: str


def _parameters(cls: type[Quantizer]) -> list[Parameter]:
    params = []
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name in ("self", "dim", "codebook_size") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = None if p.default is inspect.Parameter.empty else p.default
        annotation = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
        params.append(Parameter(p.name, default, annotation))
    return params


def describe(name: str) -> dict:
    """Name, class, one-line summary and options (with defaults) of a registered quantizer.

    ``base`` and ``preset`` are the base quantizer's name and the preset options for a variant, None and
    ``{}`` for a class. A variant's ``options`` are its base's minus the preset ones (what a user may set)."""
    cls = get_class(name)
    variant = _VARIANTS.get(name)
    if variant:
        return {
            "name": name,
            "class": cls.__name__,
            "summary": variant.summary,
            "options": [p for p in _parameters(cls) if p.name not in variant.preset],
            "base": variant.base,
            "preset": dict(variant.preset),
        }
    doc = (inspect.getdoc(cls) or "").strip().splitlines()
    return {
        "name": name,
        "class": cls.__name__,
        "summary": doc[0] if doc else "",
        "options": _parameters(cls),
        "base": None,
        "preset": {},
    }
