"""The sweep's side of MLflow: the parent run, and the child runs of one trial (found by its ``trial_key`` tag) so that a resumed sweep neither reruns nor duplicates them.

The trainer writes each trial's run (``benchmark.tracking.runs.RunTracking(parent_run_id=...)``); this module
only creates the parent, looks runs up, and retires leftovers of killed attempts. Every call goes
through :func:`benchmark.tracking.store.client`, so each is retried with back-off.
"""
from __future__ import annotations

from benchmark.tracking import keys

KIND_SWEEP = "sweep"
KIND_TRIAL = "trial"
PARENT_RUN_TAG = "mlflow.parentRunId"   # MLflow's own tag on child runs
DESCRIPTION_TAG = "mlflow.note.content"  # MLflow's own tag: the run description shown in the UI
TERMINAL = ("FINISHED", "FAILED", "KILLED")
# Tags only sweeps write and read (the trial's own tags live in benchmark.tracking.keys):
SWEEP_UID_TAG = "vqbench.sweep_uid"     # on the parent: finds it again if the driver died right after creating it
OUTCOME_TAG = "vqbench.outcome"         # on a trial run: "nan" when its loss diverged (final: not rerun)
OUTCOME_NAN = "nan"
OUTCOME_FAILED = "failed"               # on a trial run: a deterministic error, recorded once (not retried)
PARENT_OUTCOME_FAILURES = "finished with failures"  # on a FAILED parent whose trials ran but some failed
#: Why a leftover RUNNING run of an earlier attempt of the same trial is retired.
DIED_REASON = ("an earlier attempt of this trial stopped without ending its run: its process was killed "
               "(SIGKILL, the kernel's out-of-memory killer, a lost node) or the sweep's driver died; retired "
               "and the trial run again")
NODE_TAG = "vqbench.ray_node_id"        # on a trial run: the Ray node that ran it
HOST_TAG = "vqbench.host"               # on a trial run: that node's host name


def client_for(uri: str):
    from benchmark.tracking import store

    return store.client(uri)


def create_parent_run(client, experiment_id: str, *, name: str, preset: str | None,
                      params: dict[str, object], description: str, tags: dict[str, str]) -> str:
    """Create the sweep's parent run (RUNNING) and return its id."""
    all_tags = {keys.TAG_KIND: KIND_SWEEP, keys.TAG_SWEEP: name, DESCRIPTION_TAG: description, **tags}
    if preset:
        all_tags[keys.TAG_PRESET] = preset
    run = client.create_run(experiment_id, run_name=name, tags=all_tags)
    log_params(client, run.info.run_id, params)
    return run.info.run_id


def log_params(client, run_id: str, params: dict[str, object]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)) for k, v in params.items()]
    for start in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
        client.log_batch(run_id, params=items[start:start + 100])


def find_parent_run(client, experiment_id: str, sweep_uid: str) -> str | None:
    """The parent run created for ``sweep_uid`` (by a driver that died before recording it), if any."""
    from mlflow.entities import ViewType

    runs = client.search_runs([experiment_id], filter_string=f"tags.`{SWEEP_UID_TAG}` = '{sweep_uid}'",
                              run_view_type=ViewType.ACTIVE_ONLY, max_results=1)
    return runs[0].info.run_id if runs else None


def reopen_parent_run(client, run_id: str) -> None:
    """Mark a resumed sweep's parent RUNNING again (it was FINISHED/KILLED/FAILED, or RUNNING if killed)."""
    run = client.get_run(run_id)
    if run.info.lifecycle_stage == "deleted":
        raise ValueError(f"the sweep's parent run {run_id} is deleted in MLflow; restore it or start a new sweep")
    client.update_run(run_id, status="RUNNING")


def set_description(client, run_id: str, description: str) -> None:
    client.set_tag(run_id, DESCRIPTION_TAG, description)


def child_runs(client, experiment_id: str, parent_run_id: str, trial_key: str | None = None,
               *, statuses: tuple[str, ...] | None = None) -> list:
    """Active (not deleted) child runs of the parent, optionally of one trial key or statuses; oldest first."""
    from mlflow.entities import ViewType

    filters = [f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}'"]
    if trial_key is not None:
        filters.append(f"tags.`{keys.TAG_TRIAL_KEY}` = '{trial_key}'")
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=" and ".join(filters),
                                  run_view_type=ViewType.ACTIVE_ONLY, max_results=1000,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    if statuses is not None:
        runs = [r for r in runs if r.info.status in statuses]
    return runs


def retire_run(client, run, reason: str | None = None) -> None:
    """Remove a leftover of an earlier attempt: a terminal status first (never left RUNNING, even among
    deleted runs; with ``reason`` in its description), then deleted so the trial keeps exactly one visible run."""
    if run.info.status not in TERMINAL:
        if reason:
            note = run.data.tags.get(DESCRIPTION_TAG, "")
            set_description(client, run.info.run_id, f"{note}\n\n**KILLED:** {reason}".lstrip())
        client.set_terminated(run.info.run_id, status="KILLED")
    client.delete_run(run.info.run_id)


def kill_orphaned_children(client, experiment_id: str, parent_run_id: str,
                           died: dict[str, str] | None = None) -> list[str]:
    """Set KILLED, with the reason, on child runs still RUNNING after Tune stopped; their trials are
    rerun on resume. ``died`` maps a trial key to the error Ray Tune saw for it (its worker process died:
    SIGKILL, out of memory): those runs say so, not "the sweep stopped". Returns the run ids changed."""
    changed = []
    for run in child_runs(client, experiment_id, parent_run_id, statuses=("RUNNING", "SCHEDULED")):
        note = run.data.tags.get(DESCRIPTION_TAG, "")
        cause = (died or {}).get(run.data.tags.get(keys.TAG_TRIAL_KEY, ""))
        why = (f"the trial's process died while it ran ({cause}): killed by the operating system (out of memory?) "
               "or a signal, not by the sweep; a resumed sweep reruns it" if cause else
               "the sweep stopped while this trial ran; a resumed sweep reruns it")
        set_description(client, run.info.run_id, f"{note}\n\n**KILLED:** {why}".lstrip())
        client.set_terminated(run.info.run_id, status="KILLED")
        changed.append(run.info.run_id)
    return changed


def is_final(run) -> bool:
    """A run whose trial is done: FINISHED, or FAILED because its loss diverged (deterministic)."""
    return run.info.status == "FINISHED" or (
        run.info.status == "FAILED" and run.data.tags.get(OUTCOME_TAG) == OUTCOME_NAN)


def runs_by_trial(runs) -> dict[str, list]:
    """Runs grouped by their ``trial_key`` tag, each group in the order given."""
    grouped: dict[str, list] = {}
    for run in runs:
        key = run.data.tags.get(keys.TAG_TRIAL_KEY)
        if key:
            grouped.setdefault(key, []).append(run)
    return grouped


def keeper(runs):
    """The run that stands for a trial among its active runs: the newest FINISHED, else the newest
    diverged one, else the newest."""
    for wanted in (lambda r: r.info.status == "FINISHED", is_final, lambda r: True):
        chosen = [r for r in runs if wanted(r)]
        if chosen:
            return chosen[-1]
    return None


def retire_duplicates(client, experiment_id: str, parent_run_id: str) -> list[str]:
    """Leave one active run per trial (its :func:`keeper`); retire the others. A crash between two
    writes (or a reply lost to a restarting server) can leave two. Returns the run ids retired."""
    retired = []
    for runs in runs_by_trial(child_runs(client, experiment_id, parent_run_id)).values():
        kept = keeper(runs)
        for run in runs:
            if run.info.run_id != kept.info.run_id:
                retire_run(client, run)
                retired.append(run.info.run_id)
    return retired
