"""What became of each trial, read from MLflow (the truth) and Ray Tune's results, and the closing of a
sweep's parent run."""
from __future__ import annotations

from . import mlflow_runs
from .grid import Expansion, SweepGrid
from .report import TrialOutcome, description_markdown, results_markdown, root_cause
from .state import SweepState
from .trainable import RUN_ID, STATUS, STATUS_FAILED, STATUS_FINISHED, STATUS_NAN


def pending_trials(client, state: SweepState, expansion: Expansion) -> list:
    """The trials with no final run (FINISHED, or diverged) under the parent run in MLflow."""
    done = mlflow_runs.runs_by_trial(r for r in mlflow_runs.child_runs(client, state.experiment_id,
                                                                       state.parent_run_id) if mlflow_runs.is_final(r))
    return [t for t in expansion.trials if t.key not in done]


def close_sweep(client, state: SweepState, grid: SweepGrid, expansion: Expansion,
                outcomes: list[TrialOutcome], parent_status: str, wall_time: float) -> str | None:
    """Retire leftovers, write the results and end the parent run. Never raises: a store that still
    fails after its retries is reported (resume repairs it); the parent's status is tried last, always."""
    if not state.parent_run_id:
        return None
    error = None
    died = {o.trial.key: o.error for o in outcomes if o.status == "FAILED" and o.error}
    try:
        mlflow_runs.kill_orphaned_children(client, state.experiment_id, state.parent_run_id, died=died)
        mlflow_runs.retire_duplicates(client, state.experiment_id, state.parent_run_id)
        if outcomes:
            mlflow_runs.set_description(client, state.parent_run_id,
                                        description_markdown(state.name, state.preset, grid, expansion)
                                        + "\n" + results_markdown(outcomes, wall_time))
        if parent_status == "FAILED" and outcomes:
            failed = sum(o.status == "FAILED" for o in outcomes)
            client.set_tag(state.parent_run_id, mlflow_runs.OUTCOME_TAG,
                           f"{mlflow_runs.PARENT_OUTCOME_FAILURES}: {failed} of {len(outcomes)} trial(s) failed")
    except Exception as failure:
        error = f"{type(failure).__name__}: {failure}"
    try:
        client.set_terminated(state.parent_run_id, status=parent_status)
    except Exception as failure:
        error = f"could not mark the parent run {state.parent_run_id} {parent_status}: {failure}"
    return error


def collect_outcomes(results, expansion: Expansion, client, state: SweepState, started_ms: int) -> list[TrialOutcome]:
    """One outcome per trial of the grid, from its runs in MLflow (the truth) and Tune's results."""
    from mlflow.entities import ViewType

    by_name = {(r.config or {}).get("trial"): r for r in (results or [])}
    every_run = mlflow_runs.runs_by_trial(client.search_runs(
        [state.experiment_id], filter_string=f"tags.`{mlflow_runs.PARENT_RUN_TAG}` = '{state.parent_run_id}'",
        run_view_type=ViewType.ALL, max_results=50_000, order_by=["attributes.start_time ASC"]))
    outcomes = []
    for trial in expansion.trials:
        result = by_name.get(trial.run_name)
        runs = every_run.get(trial.key, [])
        live = [r for r in runs if r.info.lifecycle_stage == "active"]
        run = mlflow_runs.keeper(live)
        reported = (result.metrics or {}) if result is not None else {}
        error = None
        if run is not None and run.info.status == "FINISHED":
            status = "FINISHED"
        elif run is not None and mlflow_runs.is_final(run):
            status, error = "NAN", str(reported.get("error") or "the loss became non-finite")
        elif reported.get(STATUS) == STATUS_FAILED:  # deterministic: recorded once, not retried
            status, error = "FAILED", str(reported.get("error") or "failed; see its run's description")
        elif result is not None and result.error is not None:
            status, error = "FAILED", root_cause(result.error)
        else:
            status = "NOT RUN"
            if reported.get(STATUS) in (STATUS_FINISHED, STATUS_NAN):
                error = "Ray Tune finished it but its MLflow run is missing: --resume reruns it"
        outcomes.append(TrialOutcome(
            trial=trial, status=status, run_id=run.info.run_id if run is not None else reported.get(RUN_ID),
            metrics=dict(run.data.metrics) if status in ("FINISHED", "NAN") else None, error=error,
            attempts=len(runs),
            reused=status in ("FINISHED", "NAN") and run.info.start_time < started_ms))
    return outcomes
