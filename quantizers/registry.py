"""Build quantizers by name, timm-style: ``@register("vq")`` on a class, then ``build("vq", dim=…,
codebook_size=…, **options)``. Adding a quantizer is one module plus its decorator, and an import line
in ``quantizers/__init__.py``."""
from __future__ import annotations

import inspect
from dataclasses import dataclass

from .base import Quantizer

_REGISTRY: dict[str, type[Quantizer]] = {}


def register(name: str):
    """Class decorator: make a :class:`Quantizer` subclass buildable by ``name``."""

    def decorator(cls: type[Quantizer]) -> type[Quantizer]:
        if not (isinstance(cls, type) and issubclass(cls, Quantizer)):
            raise TypeError(f"@register({name!r}) must decorate a Quantizer subclass; got {cls!r}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"quantizer name {name!r} is already registered to {_REGISTRY[name].__name__}")
        cls.registry_name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def available() -> list[str]:
    """Registered quantizer names, sorted."""
    return sorted(_REGISTRY)


def get_class(name: str) -> type[Quantizer]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown quantizer {name!r}; available: {available()}")
    return _REGISTRY[name]


def build(name: str, dim: int, codebook_size: int, **options) -> Quantizer:
    """Construct the quantizer registered as ``name``. Unknown options raise ValueError naming them."""
    cls = get_class(name)
    accepted = {p.name for p in _parameters(cls)}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for quantizer {name!r}; accepted: {sorted(accepted)}"
        )
    return cls(dim=dim, codebook_size=codebook_size, **options)


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
    """Name, one-line summary and options (with defaults) of a registered quantizer."""
    cls = get_class(name)
    doc = (inspect.getdoc(cls) or "").strip().splitlines()
    return {
        "name": name,
        "class": cls.__name__,
        "summary": doc[0] if doc else "",
        "options": _parameters(cls),
    }
