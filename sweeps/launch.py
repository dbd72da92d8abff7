"""Launch a sweep on Ray Tune under one MLflow parent run, and resume it after an interruption.

Layout on disk: ``<storage_path>/<name>/`` holds ``vqbench_sweep.json`` (the grid, the MLflow store,
experiment and parent run id), ``vqbench_sweep.lock`` (held by the one driver running the sweep) and one
Ray Tune experiment directory per invocation (``tune-<n>-<time>``, Tune's logs).

MLflow, not Tune, decides what is left to do: every invocation runs the trials that have no final run
(FINISHED, or FAILED because the loss diverged) under the parent run, so a trial whose run went missing
is rerun on resume, never reported done. The state file is written before anything is created in MLflow
and the parent run carries a uid tag, so a driver killed at any moment leaves a sweep that resumes.

The parent run is never left RUNNING by this process: FINISHED when every trial reached an end, KILLED
when the sweep was interrupted (Ctrl+C or SIGTERM: Tune stops gracefully), FAILED on an error; child
runs still RUNNING after Tune stopped are set KILLED, with the reason. A store that fails during this
clean-up is retried, then reported in one line. A process killed outright (SIGKILL, power loss) cannot
clean up; the next ``resume_sweep`` does.
"""
from __future__ import annotations

import os
import re
import signal
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from benchmark.tracking import keys
from benchmark.tracking import runs as tracking

from . import cluster, mlflow_runs
from .grid import Expansion, SweepGrid, expand_grid
from .lock import sweep_lock
from .outcomes import close_sweep, collect_outcomes, pending_trials
from .report import TrialOutcome, description_markdown, parent_params
from .state import STATE_FILE, SweepState, check_name, load_state, save_state, sweep_dir
from .trainable import SweepContext, run_trial

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


def start_sweep(grid: SweepGrid, *, name: str, preset: str | None = None, experiment: str | None = None,
                settings: SweepSettings | None = None) -> SweepOutcome:
    """Check everything that can be checked, then create the sweep and run every trial on Ray Tune."""
    settings = settings or SweepSettings()
    check_name(name)
    _check_settings(settings)
    uri = tracking.resolve_tracking_uri(settings.tracking_uri)
    target = cluster.check_target(settings.address, uri, settings.num_cpus)  # before anything is created
    grid = cluster.with_driver_paths(grid)
    expansion = expand_grid(grid, threads=settings.cpus_per_trial)  # raises before anything starts
    directory = sweep_dir(settings.storage_path, name)
    if (directory / STATE_FILE).exists():
        raise _exists(name, directory)
    with sweep_lock(directory, name):
        if (directory / STATE_FILE).exists():  # another driver created it while we looked
            raise _exists(name, directory)
        state = SweepState(name=name, preset=preset, experiment=experiment or default_experiment(preset),
                           tracking_uri=uri, grid=grid.to_dict(), sweep_uid=uuid.uuid4().hex,
                           created=datetime.now().isoformat(timespec="seconds"))
        save_state(settings.storage_path, state)
        try:
            return _run(state, grid, expansion, settings, target, resumed=False)
        except BaseException:
            # Failed before MLflow was touched (e.g. Ray would not start): leave the name free for a rerun.
            # Once the experiment exists the parent may exist too: keep the state, --resume adopts it.
            if not state.experiment_id:
                (directory / STATE_FILE).unlink(missing_ok=True)
            raise


def _exists(name: str, directory: Path) -> ValueError:
    return ValueError(f"a sweep named {name!r} already exists in {str(directory)!r}; resume it with "
                      f"--resume {name} or choose another --name")


def resume_sweep(name: str, settings: SweepSettings | None = None) -> SweepOutcome:
    """Continue sweep ``name``: trials done in MLflow are kept, the others run; leftovers of killed
    attempts are retired; the same parent run is reused."""
    settings = settings or SweepSettings()
    _check_settings(settings)
    state = load_state(settings.storage_path, name)
    if settings.tracking_uri and tracking.resolve_tracking_uri(settings.tracking_uri) != state.tracking_uri:
        raise ValueError(f"sweep {name!r} was tracked in {state.tracking_uri!r}; resume it against the same "
                         f"store (got --tracking-uri {settings.tracking_uri!r})")
    target = cluster.check_target(settings.address, state.tracking_uri, settings.num_cpus)
    grid = SweepGrid.from_dict(state.grid)
    expansion = expand_grid(grid, threads=settings.cpus_per_trial)
    with sweep_lock(sweep_dir(settings.storage_path, name), name):
        state = load_state(settings.storage_path, name)  # as the last holder of the lock left it
        state.invocations += 1
        save_state(settings.storage_path, state)
        return _run(state, grid, expansion, settings, target, resumed=True)


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


def software_versions() -> dict[str, str]:
    """The parent run's provenance tags: package versions and git commit, named as on trial runs."""
    tags = {keys.TAG_VERSION_PREFIX + package: version
            for package, version in tracking.package_versions().items()}
    commit = tracking.git_commit()
    if commit:
        tags[keys.TAG_GIT_COMMIT] = commit
        tags[tracking.MLFLOW_GIT_COMMIT] = commit
    return tags


@contextmanager
def sigterm_as_sigint():
    """Treat SIGTERM (a scheduler or `kill` stopping the sweep) like Ctrl+C, which Tune handles
    gracefully: trials stop, and the parent run is ended KILLED. Yields a function that arms the
    handler again: ``ray.init`` replaces it with Ray's own, which aborts the driver."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    def handler(signum, frame):
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield lambda: signal.signal(signal.SIGTERM, handler)
    finally:
        signal.signal(signal.SIGTERM, previous)


def trial_name(trial) -> str:
    """Tune's trial name: the MLflow run name, so both lists read the same."""
    return trial.config["trial"]


def trial_dirname(trial) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", trial.config["trial"]) + f"_{trial.trial_id}"


def _ensure_parent(state: SweepState, client, grid: SweepGrid, expansion: Expansion, storage_path: str) -> None:
    """Create (or find again, or reopen) the experiment and the parent run; record them in the state."""
    if not state.experiment_id:
        state.experiment_id = tracking.experiment_id(client, state.experiment)
        save_state(storage_path, state)
    if state.parent_run_id:
        mlflow_runs.reopen_parent_run(client, state.parent_run_id)
        return
    params = parent_params(grid, expansion)
    found = mlflow_runs.find_parent_run(client, state.experiment_id, state.sweep_uid) if state.sweep_uid else None
    if found:  # created by a driver killed before it saved the id
        mlflow_runs.log_params(client, found, params)
        mlflow_runs.reopen_parent_run(client, found)
    else:
        found = mlflow_runs.create_parent_run(
            client, state.experiment_id, name=state.name, preset=state.preset, params=params,
            description=description_markdown(state.name, state.preset, grid, expansion),
            tags={**software_versions(), mlflow_runs.SWEEP_UID_TAG: state.sweep_uid})
    state.parent_run_id = found
    save_state(storage_path, state)


def _run(state: SweepState, grid: SweepGrid, expansion: Expansion, settings: SweepSettings,
         target: cluster.RayTarget, *, resumed: bool) -> SweepOutcome:
    """Run the trials MLflow does not hold yet; always leaves the parent run in a terminal state."""
    started, started_ms = time.monotonic(), int(time.time() * 1000)
    # Keep the user's working directory in trials (Tune's default moves each into its own directory).
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    cluster.quiet_logging(settings.verbose >= 2)
    client = mlflow_runs.client_for(state.tracking_uri)
    parent_status, started_ray, results, earlier, summary = "FAILED", False, None, 0, None
    outcomes: list[TrialOutcome] = []
    try:
        with sigterm_as_sigint() as rearm_sigterm:
            # A resumed sweep asks MLflow first: when nothing is left, Ray need not start. (A new parent
            # run, or one adopted from a driver killed while creating it, has no trial runs yet.)
            pending = pending_trials(client, state, expansion) if state.parent_run_id else list(expansion.trials)
            if pending:
                started_ray = cluster.connect(target, tracking_uri=state.tracking_uri, num_cpus=settings.num_cpus,
                                              verbose=settings.verbose >= 2)
                rearm_sigterm()
                if not started_ray:
                    cluster.check_store_reachable(state.tracking_uri)  # a Ray the caller started
                summary = cluster.describe_cluster(check_versions=target.is_cluster and started_ray)
            _ensure_parent(state, client, grid, expansion, settings.storage_path)
            earlier = len(expansion.trials) - len(pending)
            if settings.verbose >= 1:
                if summary is not None:
                    print(summary.line(target, shipped=target.is_cluster and started_ray))
                print(f"sweep {state.name}: {len(expansion.trials)} trials, {earlier} done earlier, "
                      f"{len(pending)} to run, {settings.cpus_per_trial} CPU(s) per trial", flush=True)
            if pending:
                results = _fit(pending, expansion, state, settings, earlier)
            outcomes = collect_outcomes(results, expansion, client, state, started_ms)
            parent_status = "KILLED" if any(o.status == "NOT RUN" for o in outcomes) else "FINISHED"
    except KeyboardInterrupt:
        parent_status = "KILLED"
        raise
    finally:
        if started_ray:
            import ray

            ray.shutdown()
        wall_time = time.monotonic() - started
        cleanup_error = close_sweep(client, state, grid, expansion, outcomes, parent_status, wall_time)
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    return SweepOutcome(name=state.name, experiment=state.experiment, parent_run_id=state.parent_run_id,
                        parent_status=parent_status, outcomes=outcomes, skipped=expansion.skipped,
                        wall_time_s=wall_time, storage_dir=str(sweep_dir(settings.storage_path, state.name)),
                        resumed=resumed, earlier=earlier, counts=counts, cleanup_error=cleanup_error)


def _fit(pending, expansion: Expansion, state: SweepState, settings: SweepSettings, earlier: int):
    from ray import tune

    from .console import TrialConsole

    context = SweepContext(name=state.name, preset=state.preset, experiment=state.experiment,
                           experiment_id=state.experiment_id, parent_run_id=state.parent_run_id,
                           tracking_uri=state.tracking_uri, log_system_metrics=settings.log_system_metrics,
                           verbose=settings.verbose >= 2)
    resources = {"cpu": settings.cpus_per_trial,
                 "gpu": cluster.gpus_per_trial(settings.gpus_per_trial, settings.cpus_per_trial)}
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, trials={t.run_name: t.as_dict() for t in pending}, sweep=asdict(context)),
        resources)
    callbacks = [TrialConsole(len(expansion.trials), earlier)] if settings.verbose >= 1 else []
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search([t.run_name for t in pending])},
        # reuse_actors: a worker process runs trial after trial, so torch, MLflow and the data are
        # imported and loaded once per CPU slot rather than once per trial.
        tune_config=tune.TuneConfig(num_samples=1, trial_name_creator=trial_name,
                                    trial_dirname_creator=trial_dirname, reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"tune-{state.invocations}-{datetime.now().strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(sweep_dir(settings.storage_path, state.name)),
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            verbose=1 if settings.verbose >= 2 else 0, callbacks=callbacks),
    )
    # Tune's newer console engine prints a configuration box and a TensorBoard hint even at verbose=0;
    # the older one is silent there. --verbose keeps the newer one.
    previous = os.environ.get("RAY_AIR_NEW_OUTPUT")
    if settings.verbose < 2:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        return tuner.fit()
    finally:
        if previous is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = previous
