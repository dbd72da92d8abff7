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

import uuid
from datetime import datetime
from pathlib import Path

from benchmark.tracking import runs as tracking
from benchmark.tracking.store import redact, strip_password

from . import cluster
from .grid import Expansion, SweepGrid, expand_grid
from .launch_run import (  # noqa: F401 - re-exported
    _ensure_parent,
    _fit,
    _run,
    secrets_to_environment,
    sigterm_as_sigint,
    software_versions,
    trial_dirname,
    trial_name,
)
from .launch_settings import (  # noqa: F401 - re-exported
    DEFAULT_STORAGE_PATH,
    SweepOutcome,
    SweepSettings,
    _check_settings,
    default_experiment,
    default_sweep_name,
)
from .lock import sweep_lock
from .state import STATE_FILE, SweepState, check_name, load_state, save_state, sweep_dir


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
    check_before_creating(grid, expansion, memory=not target.is_cluster)  # before the state file or the store
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


def check_before_creating(grid: SweepGrid, expansion: Expansion, memory: bool = True) -> None:
    """What can be refused before anything exists: the data (decoded, enough test tokens) and, with
    ``memory`` (a local Ray: this machine runs the trials), trials whose codebook and distance blocks
    cannot fit in the memory available (ValueError, one line each)."""
    from benchmark.training.memory import check_trials_fit

    from .measurement import check_data

    if expansion.trials:
        check_data(grid.base, sorted({t.codebook_size for t in expansion.trials}))
        if memory:
            check_trials_fit([t.config for t in expansion.trials])


def _exists(name: str, directory: Path) -> ValueError:
    return ValueError(f"a sweep named {name!r} already exists in {str(directory)!r}; resume it with "
                      f"--resume {name} or choose another --name")


def resume_sweep(name: str, settings: SweepSettings | None = None) -> SweepOutcome:
    """Continue sweep ``name``: trials done in MLflow are kept, the others run; leftovers of killed
    attempts are retired; the same parent run is reused."""
    settings = settings or SweepSettings()
    _check_settings(settings)
    state = load_state(settings.storage_path, name)
    given = tracking.resolve_tracking_uri(settings.tracking_uri) if settings.tracking_uri else None
    if given and strip_password(given) != strip_password(state.tracking_uri):
        raise ValueError(f"sweep {name!r} was tracked in {redact(state.tracking_uri)!r}; resume it against the same "
                         f"store (got --tracking-uri {redact(settings.tracking_uri)!r})")
    target = cluster.check_target(settings.address, state.tracking_uri, settings.num_cpus)
    grid = SweepGrid.from_dict(state.grid)
    expansion = expand_grid(grid, threads=settings.cpus_per_trial)
    with sweep_lock(sweep_dir(settings.storage_path, name), name):
        state = load_state(settings.storage_path, name)  # as the last holder of the lock left it
        if given:  # the state file holds the URI without its password; the caller's has it
            state.tracking_uri = given
        state.invocations += 1
        save_state(settings.storage_path, state)
        return _run(state, grid, expansion, settings, target, resumed=True)
