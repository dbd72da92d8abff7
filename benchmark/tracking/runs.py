"""One MLflow run per trial: where it goes, what it is called, and everything logged to it.

The trainer calls this module and nothing else of MLflow, through an explicit :class:`MlflowClient`
bound to one tracking URI rather than MLflow's process-global "active run": a sweep's driver may hold
its own active parent run, and several trials may log to one store at once.

What a trial run holds (issue 8: readable in the UI without opening each run):
- a readable name (``simvq K=4096 d=32 seed=0``) and a description (``mlflow.note.content``);
- a parent (``mlflow.parentRunId``) when a sweep starts it, so the UI nests it under the sweep;
- tags the UI search box filters on (``keys.TAG_*``), the git commit and package versions;
- every config field as a param; metrics in batches (one ``log_batch`` per log step; a call per metric
  costs far more on SQLite); the dataset through MLflow's dataset entities (name, source, digest, split
  sizes); system metrics (CPU, memory, GPU where ``pynvml`` is installed) from MLflow's own monitor.

Every call goes through :func:`benchmark.tracking.store.client`: the store is initialized once under a lock and
each write is retried with back-off, so a restarting tracking server does not restart a trial.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.tracking import keys

#: Tag prefix for the versions of the packages a result depends on, e.g. ``version.torch``.
VERSIONED_PACKAGES = ("torch", "mlflow", "ray", "vqbench")
#: MLflow's own tag names (mlflow.utils.mlflow_tags), written directly because we bypass the fluent API.
MLFLOW_RUN_NAME = "mlflow.runName"
MLFLOW_NOTE = "mlflow.note.content"
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"
MLFLOW_DATASET_CONTEXT = "mlflow.data.context"
#: MLflow's limits per log_batch call.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
#: Seconds between two samples of MLflow's system-metrics monitor (its default is 10 s; trials here
#: last minutes, so sample a bit more often).
SYSTEM_METRICS_INTERVAL_S = 5.0


@dataclass
class RunTracking:
    """Where and how a trial is tracked. ``train(config, tracking=None)`` tracks nothing."""

    tracking_uri: str | None = None   # None -> MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db
    experiment: str = "vqbench"
    run_name: str | None = None       # None -> e.g. "simvq K=4096 d=32 seed=0"
    parent_run_id: str | None = None  # set by sweeps: the trial becomes a child run (nested)
    tags: dict[str, str] = field(default_factory=dict)  # extra tags, e.g. preset, sweep
    log_system_metrics: bool = True   # still off when MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else MLflow's default store ``mlflow.db`` in the working
    directory — written as an absolute ``sqlite:////…`` URI so a server or a Ray worker started elsewhere
    opens the same file."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and ":memory:" not in uri:
        uri = prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def default_run_name(quantizer: str, codebook_size: int, latent_dim: int, seed: int) -> str:
    return f"{quantizer} K={codebook_size} d={latent_dim} seed={seed}"


def package_versions() -> dict[str, str]:
    """Installed versions, read from package metadata (importing ray just for its version takes seconds)."""
    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit(directory: str | Path | None = None) -> str | None:
    """HEAD's commit of the git checkout holding vqbench's source (with ``-dirty`` if it has changes),
    or None outside a git checkout."""
    directory = Path(directory or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=directory,
                                capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if status else commit or None


#: MLflow 3's experiment-type tag; "custom_model_development" makes the UI show training runs first.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def experiment_id(client, name: str) -> str:
    """The id of experiment ``name``, created (at the store's default artifact location) if missing.

    Tolerates another process creating it at the same moment (parallel sweep trials). A new experiment
    is tagged as model training, so the MLflow 3 UI opens it on its runs table rather than the GenAI
    overview. A deleted experiment of that name is an error: MLflow cannot log to it.
    """
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException:
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise ValueError(f"experiment {name!r} is deleted in this MLflow store; restore it "
                         f"(mlflow experiments restore) or choose another experiment name")
    return experiment.experiment_id


def dataset_source(source: str) -> tuple[str, str]:
    """(source_type, source JSON) in MLflow's dataset-source vocabulary for a dataset's source string."""
    if source.startswith(("http://", "https://")):
        return "http", json.dumps({"url": source})
    if os.path.exists(source):
        return "local", json.dumps({"uri": str(Path(source).resolve())})
    # Built by code from bundled files (e.g. vqbench's photo patches): say what, not where.
    return "code", json.dumps({"tags": {"description": source}})


class TrialRun:
    """An open MLflow run for one trial, or a no-op stand-in when ``client`` is None (untracked).

    Use as a context manager: leaving it normally marks the run FINISHED; an exception marks it FAILED
    (KILLED for Ctrl-C) after flushing what was logged, so no run is ever left RUNNING.
    """

    def __init__(self, client=None, run_id: str | None = None, monitor=None, description: str = ""):
        self.client = client
        self.run_id = run_id
        self.monitor = monitor
        self.description = description
        self._pending: list = []

    # ------------------------------------------------------------------ opening
    @classmethod
    def untracked(cls) -> "TrialRun":
        return cls()

    @classmethod
    def start(cls, tracking: RunTracking, *, run_name: str, tags: dict[str, str],
              description: str) -> "TrialRun":
        """Create the run (nested under ``tracking.parent_run_id`` if set) and start system metrics."""
        from benchmark.tracking import store

        uri = resolve_tracking_uri(tracking.tracking_uri)
        client = store.client(uri)
        all_tags = {**tags, **{k: str(v) for k, v in tracking.tags.items()},
                    MLFLOW_RUN_NAME: run_name, MLFLOW_NOTE: description}
        if tracking.parent_run_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = tracking.parent_run_id
        run = client.create_run(experiment_id(client, tracking.experiment), run_name=run_name,
                                tags=all_tags)
        monitor = None
        if tracking.log_system_metrics and system_metrics_enabled():
            monitor = start_system_metrics(run.info.run_id, uri)
        return cls(client, run.info.run_id, monitor, description)

    @property
    def tracked(self) -> bool:
        return self.client is not None

    # ------------------------------------------------------------------ logging
    def log_params(self, params: dict[str, object]) -> None:
        if not self.tracked:
            return
        from mlflow.entities import Param

        items = [Param(key, "None" if value is None else str(value)) for key, value in params.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + MAX_PARAMS_PER_BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Queue metrics at ``step``; written by :meth:`flush` in one call."""
        if not self.tracked:
            return
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        self._pending += [Metric(key, float(value), timestamp, step) for key, value in metrics.items()]

    def flush(self) -> None:
        if not self.tracked or not self._pending:
            return
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=pending[start:start + MAX_METRICS_PER_BATCH])

    def set_tags(self, tags: dict[str, str]) -> None:
        if not self.tracked:
            return
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_dataset(self, *, name: str, source: str, digest: str, profile: dict,
                    context: str = "training") -> None:
        """Record the dataset with MLflow's dataset entities (shown in the run's "Datasets used")."""
        if not self.tracked:
            return
        from mlflow.entities import Dataset, DatasetInput, InputTag

        source_type, source_json = dataset_source(source)
        dataset = Dataset(name=name, digest=digest, source_type=source_type, source=source_json,
                          profile=json.dumps(profile))
        self.client.log_inputs(self.run_id, datasets=[
            DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
        ])

    def log_dict(self, dictionary: dict, artifact_file: str) -> None:
        if self.tracked:
            self.client.log_dict(self.run_id, dictionary, artifact_file)

    def log_image(self, image, artifact_file: str) -> None:
        """``image``: a uint8 ``(H, W, 3)`` numpy array."""
        if self.tracked:
            self.client.log_image(self.run_id, image, artifact_file=artifact_file)

    def log_figure(self, figure, artifact_file: str) -> None:
        if self.tracked:
            self.client.log_figure(self.run_id, figure, artifact_file)

    def log_artifacts(self, folder, artifact_path: str) -> None:
        """Every file in ``folder`` under ``artifact_path`` (audio clips and their spectrograms)."""
        if self.tracked:
            self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    # ------------------------------------------------------------------ closing
    def end(self, status: str = "FINISHED", failure: str | None = None) -> None:
        if not self.tracked:
            return
        try:
            self.flush()
            if failure:
                self.set_tags({MLFLOW_NOTE: f"{self.description}\n\n**{status}:** {failure}"})
        finally:
            if self.monitor is not None:
                self.monitor.finish()
                self.monitor = None
            self.client.set_terminated(self.run_id, status)

    def __enter__(self) -> "TrialRun":
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        if exc_type is None:
            self.end("FINISHED")
        else:
            failure = f"{exc_type.__name__}: {exc}"
            if issubclass(exc_type, (KeyboardInterrupt, SystemExit)):  # Tune stops trials with SystemExit
                status = "KILLED"
                failure = (f"stopped before the end ({exc_type.__name__}): the sweep was interrupted or Ray "
                           "stopped the trial; a resumed sweep reruns it")
            else:
                status = "FAILED"
            try:
                self.end(status, failure=failure)
            except Exception:  # never hide the training error behind a logging error
                pass
        return False


def system_metrics_enabled() -> bool:
    """False only when the user switched MLflow's system metrics off with its environment variable."""
    return os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "").strip().lower() not in ("false", "0")


def start_system_metrics(run_id: str, tracking_uri: str):
    """MLflow's own system-metrics monitor (the one ``mlflow.start_run(log_system_metrics=True)`` starts),
    bound to this run and store. Needs ``psutil``; returns None, with a warning, when it cannot start."""
    import warnings

    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        # MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL, when set, overrides this interval (MLflow reads it)
        monitor = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S,
                                       tracking_uri=tracking_uri)
        monitor.start()
        return monitor
    except Exception as error:  # psutil missing, or an MLflow without the monitor
        warnings.warn(f"system metrics not logged: {error}", stacklevel=2)
        return None


def trial_tags(*, quantizer: str, codebook_size: int, latent_dim: int, seed: int, dataset: str,
               device: str, trial_key: str) -> dict[str, str]:
    """The filterable tags of a trial run plus provenance (git commit, package versions)."""
    tags = {
        keys.TAG_QUANTIZER: quantizer,
        keys.TAG_CODEBOOK_SIZE: str(codebook_size),
        keys.TAG_LATENT_DIM: str(latent_dim),
        keys.TAG_SEED: str(seed),
        keys.TAG_DATASET: dataset,
        keys.TAG_DEVICE: device,
        keys.TAG_TRIAL_KEY: trial_key,
        keys.TAG_KIND: "trial",
    }
    commit = git_commit()
    if commit:
        tags[keys.TAG_GIT_COMMIT] = commit
        tags[MLFLOW_GIT_COMMIT] = commit.removesuffix("-dirty")  # MLflow's tag holds a bare hash
    for package, version in package_versions().items():
        tags[keys.TAG_VERSION_PREFIX + package] = version
    return tags
