"""A sweep's state on disk: ``<storage_path>/<name>/vqbench_sweep.json``.

It is written (atomically) before anything exists in MLflow (its tracking URI without a password: a
resume reads the password from the environment or from the URI given again) and updated as the experiment and the
parent run are created, so a driver killed at any moment leaves a sweep that ``--resume`` continues.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

STATE_FILE = "vqbench_sweep.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class SweepState:
    """What ``vqbench_sweep.json`` stores so a sweep can be resumed."""

    name: str
    preset: str | None
    experiment: str
    tracking_uri: str
    grid: dict
    created: str
    experiment_id: str = ""             # "" until created (a driver killed before that leaves it empty)
    parent_run_id: str = ""
    invocations: int = 1
    sweep_uid: str = ""                 # tag on the parent run: found again if its id was never saved


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(f"sweep name must be letters, digits, '.', '_' or '-' (starting with a letter or "
                         f"digit); got {name!r}")
    return name


def sweep_dir(storage_path: str, name: str) -> Path:
    return Path(storage_path).expanduser().resolve() / name


def load_state(storage_path: str, name: str) -> SweepState:
    path = sweep_dir(storage_path, check_name(name)) / STATE_FILE
    if not path.is_file():
        root = Path(storage_path).expanduser().resolve()
        known = sorted(p.parent.name for p in root.glob(f"*/{STATE_FILE}")) if root.is_dir() else []
        raise ValueError(f"no sweep named {name!r} under --storage-path {str(root)!r}; sweeps there: "
                         f"{known or 'none'}")
    values = json.loads(path.read_text())
    return SweepState(**{f.name: values[f.name] for f in fields(SweepState) if f.name in values})


def save_state(storage_path: str, state: SweepState) -> None:
    path = sweep_dir(storage_path, state.name) / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    from benchmark.tracking.store import strip_password

    values = asdict(state)
    values["tracking_uri"] = strip_password(state.tracking_uri)  # a password is never saved to disk
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(values, indent=2))
    temporary.replace(path)  # atomic: a kill mid-write never leaves a half-written state file
