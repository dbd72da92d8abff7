"""Launch a sweep on Ray Tune under one MLflow parent run, and resume it after an interruption.

Layout on disk: ``<storage_path>/<name>/`` is Tune's experiment directory (results, experiment state)
and also holds ``vqbench_sweep.json`` — the grid, the MLflow store, experiment and parent run id — so
``resume_sweep(name)`` reruns nothing that finished and reuses the same parent run.

The parent run is never left RUNNING by this process: FINISHED when every trial reached an end,
KILLED when the sweep was interrupted (Ctrl+C: Tune stops gracefully), FAILED on an error; child runs
still RUNNING after Tune stopped are set KILLED. A process killed outright (SIGKILL, power loss) cannot
clean up; ``resume_sweep`` does it.
"""
from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from benchmark import keys, tracking

from . import mlflow_runs
from .grid import Expansion, SweepGrid, expand_grid
from .report import TrialOutcome, description_markdown, parent_params, results_markdown
from .trainable import RUN_ID, STATUS, STATUS_FINISHED, STATUS_NAN, SweepContext, run_trial

STATE_FILE = "vqbench_sweep.json"
DEFAULT_STORAGE_PATH = "./vqbench_runs"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class SweepSettings:
    """How to run a sweep (not what it compares): Ray, storage, retries, MLflow store."""

    storage_path: str = DEFAULT_STORAGE_PATH
    address: str | None = None          # join this Ray cluster; None starts a local one
    num_cpus: int | None = None         # local Ray only; None: os.cpu_count()
    gpus_per_trial: float | None = None  # None: 0 without GPUs, else an equal share per CPU slot
    max_failures: int = 2               # retries of a trial that raises (a NaN loss is not retried)
    tracking_uri: str | None = None     # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db (absolute)
    log_system_metrics: bool = True
    verbose: int = 1                    # Tune's console output: 0 silent, 1 status, 2 trial results


@dataclass
class SweepState:
    """What ``vqbench_sweep.json`` stores so a sweep can be resumed."""

    name: str
    preset: str | None
    experiment: str
    experiment_id: str
    tracking_uri: str
    parent_run_id: str
    grid: dict
    created: str
    invocations: int = 1


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
    tune_restored: bool = False         # Tune's own experiment state was restored (not a fresh Tuner)
    counts: dict[str, int] = field(default_factory=dict)


def default_sweep_name(preset: str | None) -> str:
    return f"{preset or 'custom'}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def default_experiment(preset: str | None) -> str:
    return f"vqbench-{preset}" if preset else "vqbench-custom"


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
    return SweepState(**json.loads(path.read_text()))


def _save_state(storage_path: str, state: SweepState) -> None:
    path = sweep_dir(storage_path, state.name) / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(state), indent=2))
    temporary.replace(path)  # atomic: a kill mid-write never leaves a half-written state file


def start_sweep(grid: SweepGrid, *, name: str, preset: str | None = None, experiment: str | None = None,
                settings: SweepSettings | None = None) -> SweepOutcome:
    """Validate ``grid``, create the MLflow experiment and parent run, and run every trial on Ray Tune."""
    settings = settings or SweepSettings()
    check_name(name)
    _check_settings(settings)
    expansion = expand_grid(grid)  # raises before anything starts
    directory = sweep_dir(settings.storage_path, name)
    if (directory / STATE_FILE).exists() or _tune_can_restore(directory):
        raise ValueError(f"a sweep named {name!r} already exists in {str(directory)!r}; resume it with "
                         f"--resume {name} or choose another --name")
    experiment = experiment or default_experiment(preset)
    uri = tracking.resolve_tracking_uri(settings.tracking_uri)
    client = mlflow_runs.client_for(uri)
    experiment_id = tracking.experiment_id(client, experiment)  # on the driver, before any trial
    parent_run_id = mlflow_runs.create_parent_run(
        client, experiment_id, name=name, preset=preset, params=parent_params(grid, expansion),
        description=description_markdown(name, preset, grid, expansion), tags=software_versions())
    state = SweepState(name=name, preset=preset, experiment=experiment, experiment_id=experiment_id,
                       tracking_uri=uri, parent_run_id=parent_run_id, grid=grid.to_dict(),
                       created=datetime.now().isoformat(timespec="seconds"))
    _save_state(settings.storage_path, state)
    return _run(state, grid, expansion, settings, client, resumed=False)


def resume_sweep(name: str, settings: SweepSettings | None = None) -> SweepOutcome:
    """Continue sweep ``name``: finished trials are reported from MLflow, not rerun; leftovers of killed
    attempts are retired; the same parent run is reused."""
    settings = settings or SweepSettings()
    _check_settings(settings)
    state = load_state(settings.storage_path, name)
    grid = SweepGrid.from_dict(state.grid)
    expansion = expand_grid(grid)
    if settings.tracking_uri and tracking.resolve_tracking_uri(settings.tracking_uri) != state.tracking_uri:
        raise ValueError(f"sweep {name!r} was tracked in {state.tracking_uri!r}; resume it against the same "
                         f"store (got --tracking-uri {settings.tracking_uri!r})")
    client = mlflow_runs.client_for(state.tracking_uri)
    mlflow_runs.reopen_parent_run(client, state.parent_run_id)
    state.invocations += 1
    _save_state(settings.storage_path, state)
    return _run(state, grid, expansion, settings, client, resumed=True)


def _check_settings(settings: SweepSettings) -> None:
    if settings.num_cpus is not None and (not isinstance(settings.num_cpus, int) or settings.num_cpus < 1):
        raise ValueError(f"num_cpus must be an integer >= 1; got {settings.num_cpus!r}")
    if settings.address and settings.num_cpus is not None:
        raise ValueError("num_cpus applies to a local Ray only; drop it when joining a cluster with --address")
    if not isinstance(settings.max_failures, int) or settings.max_failures < 0:
        raise ValueError(f"max_failures must be an integer >= 0; got {settings.max_failures!r}")
    if settings.gpus_per_trial is not None and not 0 <= settings.gpus_per_trial <= 1:
        raise ValueError(f"gpus_per_trial must be in [0, 1] (a fraction of one GPU); got {settings.gpus_per_trial}")


def software_versions() -> dict[str, str]:
    """The parent run's provenance tags: package versions and git commit, named as on trial runs."""
    tags = {keys.TAG_VERSION_PREFIX + package: version
            for package, version in tracking.package_versions().items()}
    commit = tracking.git_commit()
    if commit:
        tags[keys.TAG_GIT_COMMIT] = commit
        tags[tracking.MLFLOW_GIT_COMMIT] = commit
    return tags


def _tune_can_restore(directory: Path) -> bool:
    if not directory.is_dir():
        return False
    from ray.tune import Tuner

    return Tuner.can_restore(str(directory))


def _ensure_ray(settings: SweepSettings, tracking_uri: str) -> bool:
    """Start local Ray (or join ``address``) unless already connected; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    if settings.address and tracking_uri.startswith("sqlite:"):
        warnings.warn(f"joining Ray cluster {settings.address!r} with the SQLite store {tracking_uri!r}: trials on "
                      "other machines cannot open that file; use a shared MLflow server (--tracking-uri http://...)",
                      stacklevel=2)
    kwargs: dict = {"include_dashboard": False,
                    "runtime_env": {"env_vars": {"MLFLOW_TRACKING_URI": tracking_uri}}}
    if settings.address:
        kwargs["address"] = settings.address
    else:
        kwargs["num_cpus"] = settings.num_cpus or os.cpu_count() or 1
    ray.init(**kwargs)
    return True


def gpus_per_trial(settings: SweepSettings) -> float:
    """A CPU trial takes one CPU; with GPUs in the cluster every trial takes an equal GPU share so that
    one trial per CPU fits (every trial gets the same resources)."""
    if settings.gpus_per_trial is not None:
        return float(settings.gpus_per_trial)
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 1.0)
    if gpus <= 0:
        return 0.0
    return min(1.0, int(gpus / max(cpus, 1.0) * 10_000) / 10_000)  # Ray takes 4 decimal places


@contextmanager
def sigterm_as_sigint():
    """Treat SIGTERM (a scheduler or `kill` stopping the sweep) like Ctrl+C, which Tune handles
    gracefully: trials stop, the experiment state is saved, and the parent run is ended KILLED."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(os.getpid(), signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def trial_name(trial) -> str:
    """Tune's trial name: the MLflow run name, so both lists read the same."""
    return trial.config["trial"]


def trial_dirname(trial) -> str:
    run_name = trial.config["trial"]
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", run_name) + f"_{trial.trial_id}"


def _run(state: SweepState, grid: SweepGrid, expansion: Expansion, settings: SweepSettings, client,
         *, resumed: bool) -> SweepOutcome:
    """Run (or restore) the Tune experiment; always leaves the parent run in a terminal state."""
    started = time.monotonic()
    started_ms = int(time.time() * 1000)
    # Tune's default moves each trial into its own directory; keep the user's working directory so
    # relative paths (data caches, --data-dir) mean the same in every trial. Tune propagates this
    # variable from the driver to the trial processes.
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    parent_status, started_ray = "FAILED", False
    outcomes: list[TrialOutcome] = []
    tune_restored = False
    try:
        started_ray = _ensure_ray(settings, state.tracking_uri)
        from ray import tune

        context = SweepContext(name=state.name, preset=state.preset, experiment=state.experiment,
                               experiment_id=state.experiment_id, parent_run_id=state.parent_run_id,
                               tracking_uri=state.tracking_uri, log_system_metrics=settings.log_system_metrics)
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, trials={t.run_name: t.as_dict() for t in expansion.trials},
                                 sweep=asdict(context)),
            {"cpu": 1, "gpu": gpus_per_trial(settings)})
        directory = sweep_dir(settings.storage_path, state.name)
        if resumed and tune.Tuner.can_restore(str(directory)):
            # Tune reruns unfinished trials and restarts errored ones; finished ones it keeps.
            tuner = tune.Tuner.restore(str(directory), trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=True)
            tune_restored = True
        else:
            tuner = tune.Tuner(
                trainable,
                param_space={"trial": tune.grid_search([t.run_name for t in expansion.trials])},
                # reuse_actors: a worker process runs trial after trial, so torch, MLflow and the data
                # are imported and loaded once per CPU rather than once per trial.
                tune_config=tune.TuneConfig(num_samples=1, trial_name_creator=trial_name,
                                            trial_dirname_creator=trial_dirname, reuse_actors=True),
                run_config=tune.RunConfig(
                    name=state.name, storage_path=str(directory.parent),
                    failure_config=tune.FailureConfig(max_failures=settings.max_failures),
                    verbose=settings.verbose),
            )
        with sigterm_as_sigint():
            results = tuner.fit()
        outcomes = _collect_outcomes(results, expansion, client, state, started_ms)
        interrupted = any(o.status == "NOT RUN" for o in outcomes)
        parent_status = "KILLED" if interrupted else "FINISHED"
    except KeyboardInterrupt:
        parent_status = "KILLED"
        raise
    finally:
        if started_ray:
            import ray

            ray.shutdown()
        wall_time = time.monotonic() - started
        try:
            # Children left RUNNING by stopped trials are ended; resume reruns those trials.
            mlflow_runs.kill_orphaned_children(client, state.experiment_id, state.parent_run_id)
            if outcomes:
                mlflow_runs.set_description(
                    client, state.parent_run_id,
                    description_markdown(state.name, state.preset, grid, expansion)
                    + "\n" + results_markdown(outcomes, wall_time))
        finally:
            client.set_terminated(state.parent_run_id, status=parent_status)
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    return SweepOutcome(name=state.name, experiment=state.experiment, parent_run_id=state.parent_run_id,
                        parent_status=parent_status, outcomes=outcomes, skipped=expansion.skipped,
                        wall_time_s=wall_time, storage_dir=str(sweep_dir(settings.storage_path, state.name)),
                        resumed=resumed, tune_restored=tune_restored, counts=counts)


def _collect_outcomes(results, expansion: Expansion, client, state: SweepState,
                      started_ms: int) -> list[TrialOutcome]:
    """One outcome per trial of the grid, from Tune's results and the trials' MLflow runs."""
    from mlflow.entities import ViewType

    by_name: dict[str, object] = {}
    for result in results:
        name = (result.config or {}).get("trial")
        if name:
            by_name[name] = result
    runs_by_key: dict[str, list] = {}
    for run in client.search_runs([state.experiment_id],
                                  filter_string=f"tags.`{mlflow_runs.PARENT_RUN_TAG}` = '{state.parent_run_id}'",
                                  run_view_type=ViewType.ALL, max_results=50_000,
                                  order_by=["attributes.start_time ASC"]):
        key = run.data.tags.get(keys.TAG_TRIAL_KEY)
        if key:
            runs_by_key.setdefault(key, []).append(run)
    outcomes = []
    for trial in expansion.trials:
        result = by_name.get(trial.run_name)
        runs = runs_by_key.get(trial.key, [])
        live = [r for r in runs if r.info.lifecycle_stage == "active"]
        run = live[-1] if live else None
        metrics = dict(run.data.metrics) if run is not None else None
        reported = (result.metrics or {}) if result is not None else {}
        error = None
        if result is not None and result.error is not None:
            status, error = "FAILED", _one_line(result.error)
        elif reported.get(STATUS) == STATUS_NAN:
            status, error = "NAN", str(reported.get("error", "loss became non-finite"))
        elif reported.get(STATUS) == STATUS_FINISHED and run is not None and run.info.status == "FINISHED":
            status = "FINISHED"
        else:
            status = "NOT RUN"
        outcomes.append(TrialOutcome(
            trial=trial, status=status, run_id=run.info.run_id if run is not None else reported.get(RUN_ID),
            metrics=metrics, error=error, attempts=len(runs),
            reused=status == "FINISHED" and run is not None and run.info.start_time < started_ms))
    return outcomes


def _one_line(error: BaseException) -> str:
    """The root cause of a Tune trial error, on one line."""
    cause = error
    while getattr(cause, "__cause__", None) is not None:
        cause = cause.__cause__
    text = str(cause).strip().splitlines()
    last = text[-1] if text else type(cause).__name__
    return last[:300]
