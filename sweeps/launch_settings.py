"""How a sweep is run and what it returns: SweepSettings (checked before anything starts), SweepOutcome,
and the default sweep and experiment names."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .report import TrialOutcome

DEFAULT_STORAGE_PATH = "./vqbench_runs"


@dataclass
class SweepSettings:
    """How to run a sweep (not what it compares): Ray, resources, retries, MLflow store, console."""

    storage_path: str = DEFAULT_STORAGE_PATH
    address: str | None = None          # a Ray cluster to join; "local": a private local Ray; None: the
                                        # cluster RAY_ADDRESS or `ray start` names, else a local Ray
    num_cpus: int | None = None         # local Ray only; None: os.cpu_count()
    cpus_per_trial: int = 1             # Ray CPUs and torch threads per trial
    gpus_per_trial: float | None = None  # None: 0 without GPUs, else an equal share per trial slot
    max_failures: int = 2               # retries of a trial that raises (a NaN loss is not retried)
    tracking_uri: str | None = None     # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db (absolute)
    log_system_metrics: bool = True
    verbose: int = 1                    # 0: the summary only; 1: a line per trial and a progress bar;
                                        # 2: also Ray Tune's tables and Ray's and MLflow's own logs


@dataclass
class SweepOutcome:
    name: str
    experiment: str
    parent_run_id: str
    parent_status: str
    outcomes: list[TrialOutcome]
    skipped: list
    wall_time_s: float
    storage_dir: str
    resumed: bool = False
    earlier: int = 0                    # trials already done before this invocation (not rerun)
    counts: dict[str, int] = field(default_factory=dict)
    cleanup_error: str | None = None    # the store failed while the sweep was being closed


def default_sweep_name(preset: str | None) -> str:
    return f"{preset or 'custom'}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def default_experiment(preset: str | None) -> str:
    return f"vqbench-{preset}" if preset else "vqbench-custom"


def _check_settings(settings: SweepSettings) -> None:
    if settings.num_cpus is not None and (not isinstance(settings.num_cpus, int) or settings.num_cpus < 1):
        raise ValueError(f"num_cpus must be an integer >= 1; got {settings.num_cpus!r}")
    if not isinstance(settings.cpus_per_trial, int) or settings.cpus_per_trial < 1:
        raise ValueError(f"cpus_per_trial must be an integer >= 1; got {settings.cpus_per_trial!r}")
    if settings.num_cpus is not None and settings.cpus_per_trial > settings.num_cpus:
        raise ValueError(f"cpus_per_trial ({settings.cpus_per_trial}) exceeds num_cpus ({settings.num_cpus}): "
                         "no trial could start")
    if not isinstance(settings.max_failures, int) or settings.max_failures < 0:
        raise ValueError(f"max_failures must be an integer >= 0; got {settings.max_failures!r}")
    if settings.gpus_per_trial is not None and not 0 <= settings.gpus_per_trial <= 1:
        raise ValueError(f"gpus_per_trial must be in [0, 1] (a fraction of one GPU); got {settings.gpus_per_trial}")
