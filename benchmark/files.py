"""Where vqbench keeps what it builds (datasets, FID weights and reference features), and how it writes
them so that parallel trials never read a half-written file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$VQBENCH_CACHE``, else ``~/.cache/vqbench``."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("VQBENCH_CACHE") or Path.home() / ".cache" / "vqbench")


def save_atomically(obj, path: Path) -> None:
    """torch.save to a unique temporary file beside ``path``, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
