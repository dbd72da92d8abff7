"""vqbench quantizers: one module per method, all behind :class:`Quantizer` and the registry."""
from .base import Quantizer, QuantizerOutput
from .registry import available, build, describe, get_class, register

# Importing a module registers its quantizer(s). One line per method.
from . import bsq, dense_pull, ema, fc, fsq, ibq, lc, lfq, restart, rotation, simvq, vq  # noqa: E402,F401

__all__ = ["Quantizer", "QuantizerOutput", "available", "build", "describe", "get_class", "register"]
