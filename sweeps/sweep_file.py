"""Sweep files: a sweep written as YAML or TOML instead of flags.

Every key is optional; a file starts from its ``preset`` (default ``quick``) and replaces what it names::

    preset: quick                 # start from this preset's grid and budget
    name: photos-small            # the sweep's name (MLflow parent run, Tune directory)
    experiment: vqbench-mine      # MLflow experiment
    quantizers: [vq, simvq]
    codebook_sizes: [1024, 16384]
    latent_dims: [8, 64]
    seeds: [0, 1, 2]
    budget: {steps: 300, batch_size: 64}      # any TrainConfig field but the four axes
    quantizer_options: {vq: {beta: 0.25}}

The same keys at the top level of a ``.toml`` file, with ``[budget]`` and ``[quantizer_options.vq]``
tables.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

KEYS = ("preset", "name", "experiment", "quantizers", "codebook_sizes", "latent_dims", "seeds", "budget",
        "quantizer_options")


@dataclass
class SweepFile:
    path: str
    preset: str | None = None
    name: str | None = None
    experiment: str | None = None
    quantizers: list[str] | None = None
    codebook_sizes: list[int] | None = None
    latent_dims: list[int] | None = None
    seeds: list[int] | None = None
    budget: dict = field(default_factory=dict)
    quantizer_options: dict[str, dict] = field(default_factory=dict)


def load_sweep_file(path: str | Path) -> SweepFile:
    """Read and check a ``.yaml``/``.yml``/``.toml`` sweep file; ValueError says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"sweep file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    text = path.read_text()
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            values = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"sweep file {str(path)!r} is not valid YAML: {error}") from None
    elif suffix == ".toml":
        import tomllib

        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"sweep file {str(path)!r} is not valid TOML: {error}") from None
    else:
        raise ValueError(f"sweep file must end in .yaml, .yml or .toml; got {str(path)!r}")
    if not isinstance(values, dict):
        raise ValueError(f"sweep file {str(path)!r} must hold a mapping of {list(KEYS)}")
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise ValueError(f"sweep file {str(path)!r}: unknown key(s) {unknown}; allowed: {list(KEYS)}")
    for key in ("quantizers", "codebook_sizes", "latent_dims", "seeds"):
        if key in values and not isinstance(values[key], list):
            raise ValueError(f"sweep file {str(path)!r}: {key} must be a list; got {values[key]!r}")
    for key in ("budget", "quantizer_options"):
        if key in values and not isinstance(values[key], dict):
            raise ValueError(f"sweep file {str(path)!r}: {key} must be a mapping; got {values[key]!r}")
    for key in ("preset", "name", "experiment"):
        if key in values and not isinstance(values[key], str):
            raise ValueError(f"sweep file {str(path)!r}: {key} must be a string; got {values[key]!r}")
    return SweepFile(path=str(path), **values)
