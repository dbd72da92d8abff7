"""One invocation of a sweep: Ray started or joined, the MLflow parent run created or reopened, the pending
trials run on Ray Tune, and the parent run always left in a terminal state (see :mod:`sweeps.launch`)."""
from __future__ import annotations

import os
import re
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime

from benchmark.tracking import keys
from benchmark.tracking import runs as tracking
from benchmark.tracking.store import strip_password

from . import cluster, mlflow_runs
from .grid import Expansion, SweepGrid
from .launch_settings import SweepOutcome, SweepSettings
from .outcomes import close_sweep, collect_outcomes, pending_trials
from .report import TrialOutcome, description_markdown, parent_params
from .state import SweepState, save_state, sweep_dir
from .trainable import SweepContext, run_trial


def secrets_to_environment(uri: str) -> None:
    """A password written in the tracking URI becomes MLFLOW_TRACKING_USERNAME/PASSWORD of this process
    (a local Ray's workers inherit them from the raylet it starts) instead of travelling in the URI."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(uri)
    if parts.password is not None and not os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", unquote(parts.username or ""))
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(parts.password)


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


def _ensure_parent(state: SweepState, client, grid: SweepGrid, expansion: Expansion, storage_path: str,
                   on_cluster: bool = False) -> None:
    """Create (or find again, or reopen) the experiment and the parent run; record them in the state.
    On a cluster, an experiment whose artifacts go to a local folder is refused first."""
    if not state.experiment_id:
        found_id = tracking.experiment_id(client, state.experiment)
        if on_cluster:
            cluster.check_artifact_location(client, found_id, state.experiment)
        state.experiment_id = found_id
        save_state(storage_path, state)
    elif on_cluster:
        cluster.check_artifact_location(client, state.experiment_id, state.experiment)
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
    secrets_to_environment(state.tracking_uri)
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
                if target.is_cluster:
                    cluster.check_nodes_reach_store(state.tracking_uri)  # a task per node, before any trial
            _ensure_parent(state, client, grid, expansion, settings.storage_path, on_cluster=target.is_cluster)
            earlier = len(expansion.trials) - len(pending)
            if settings.verbose >= 1:
                if summary is not None:
                    print(summary.line(target, shipped=target.is_cluster and started_ray))
                print(f"sweep {state.name}: {len(expansion.trials)} trials, {earlier} done earlier, "
                      f"{len(pending)} to run, {settings.cpus_per_trial} CPU(s) per trial", flush=True)
            if pending:
                results = _fit(pending, expansion, state, settings, earlier)
            outcomes = collect_outcomes(results, expansion, client, state, started_ms)
            # A sweep with a failed trial ends FAILED (tagged "finished with failures"): never FINISHED.
            parent_status = ("KILLED" if any(o.status == "NOT RUN" for o in outcomes) else
                             "FAILED" if any(o.status == "FAILED" for o in outcomes) else "FINISHED")
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

    # Trials get the URI without its password (Ray keeps the parameters in its object store); they log
    # in with MLFLOW_TRACKING_PASSWORD from their node's environment (see secrets_to_environment).
    context = SweepContext(name=state.name, preset=state.preset, experiment=state.experiment,
                           experiment_id=state.experiment_id, parent_run_id=state.parent_run_id,
                           tracking_uri=strip_password(state.tracking_uri), log_system_metrics=settings.log_system_metrics,
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
