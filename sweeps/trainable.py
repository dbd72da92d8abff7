"""The Ray Tune function trainable: one trial is one call of :func:`benchmark.training.trainer.train`.

Before training, a trial looks up its own runs under the sweep's parent run by its ``trial_key`` tag:

* a FINISHED run (from an earlier, interrupted invocation of the sweep) is reported again without
  training, so a resumed sweep never reruns or duplicates a finished trial;
* leftovers of killed or failed attempts (RUNNING, FAILED, KILLED) are set to a terminal state and
  deleted, so each trial keeps exactly one visible run and none stays RUNNING.

A loss that goes non-finite is deterministic: the trial reports a final result with status ``nan``
instead of raising, so Tune's ``max_failures`` does not rerun it, and its run is tagged so that a resumed
sweep does not either. Any other deterministic exception (bad options, a shape error, out of memory, a
permanent OS error such as EACCES or ENOSPC) is recorded once on the trial's run (FAILED, with the cause
as its description, tagged ``vqbench.outcome = failed``) and reported with status ``failed``: Tune does
not train it again (a resumed sweep does, after a fix). Only a transient error (the MLflow store still
down after its retries, a network error) is re-raised for Tune's ``max_failures`` to retry. Each run
records the Ray node and host that ran it.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass

from benchmark.tracking import keys

from . import mlflow_runs
from .grid import Trial

#: Key of the trial's status in the results it reports to Tune.
STATUS = "trial_status"
STATUS_RUNNING, STATUS_FINISHED, STATUS_NAN, STATUS_FAILED = "running", "finished", "nan", "failed"
#: Key of the trial's MLflow run id, and of "this result was read back from an earlier run".
RUN_ID, REUSED = "mlflow_run_id", "reused_earlier_run"
#: Live progress is forwarded to Tune at most this often (each report round-trips to the driver).
PROGRESS_EVERY_S = 10.0


@dataclass(frozen=True)
class SweepContext:
    """What every trial needs to know about its sweep (plain data in Tune's param space)."""

    name: str
    preset: str | None
    experiment: str
    experiment_id: str
    parent_run_id: str
    tracking_uri: str
    log_system_metrics: bool = True
    verbose: bool = False               # False: MLflow's INFO lines off in the trial processes


def trial_tags(context: SweepContext, trial: Trial) -> dict[str, str]:
    tags = {keys.TAG_SWEEP: context.name, keys.TAG_TRIAL_KEY: trial.key}
    if context.preset:
        tags[keys.TAG_PRESET] = context.preset
    return tags


def node_tags() -> dict[str, str]:
    """Which Ray node and host run this trial (a cluster sweep shows where each trial ran)."""
    import socket

    import ray

    return {mlflow_runs.NODE_TAG: ray.get_runtime_context().get_node_id(),
            mlflow_runs.HOST_TAG: socket.gethostname()}


def run_trial(tune_config: dict, trials: dict[str, dict] | None = None, sweep: dict | None = None) -> None:
    """Ray Tune function trainable (reports with ``ray.tune.report``).

    ``tune_config["trial"]`` is the trial's run name, the one thing Tune's param space varies (and its
    tables show). ``trials`` maps every run name of the sweep to :meth:`Trial.as_dict`, ``sweep`` is the
    :class:`SweepContext`; both reach the workers through Ray's object store (``tune.with_parameters``),
    so Tune's per-trial state stays small even for the paper grid.
    """
    from ray import tune

    if not trials or tune_config.get("trial") not in trials or not sweep:
        raise ValueError(f"trial {tune_config.get('trial')!r} is not in this sweep's trial table")
    trial = Trial.from_dict(trials[tune_config["trial"]])
    context = SweepContext(**sweep)
    if not context.verbose:
        from .cluster import quiet_logging

        quiet_logging(False)
    client = mlflow_runs.client_for(context.tracking_uri)

    earlier = mlflow_runs.child_runs(client, context.experiment_id, context.parent_run_id, trial.key)
    finished = [run for run in earlier if run.info.status == "FINISHED"]
    if finished:
        kept = finished[-1]
        for run in earlier:
            if run.info.run_id != kept.info.run_id:
                mlflow_runs.retire_run(client, run)
        tune.report({**kept.data.metrics, STATUS: STATUS_FINISHED, RUN_ID: kept.info.run_id, REUSED: 1})
        return
    for run in earlier:
        mlflow_runs.retire_run(client, run, reason=mlflow_runs.DIED_REASON)

    from benchmark.tracking.runs import RunTracking
    from benchmark.training.trainer import NonFiniteLossError, train

    tracking = RunTracking(tracking_uri=context.tracking_uri, experiment=context.experiment,
                           run_name=trial.run_name, parent_run_id=context.parent_run_id,
                           tags={**trial_tags(context, trial), **node_tags()},
                           log_system_metrics=context.log_system_metrics)
    last_progress = [time.monotonic()]

    def forward_progress(step: int, metrics: dict[str, float]) -> None:
        now = time.monotonic()
        if now - last_progress[0] >= PROGRESS_EVERY_S:
            last_progress[0] = now
            tune.report({**metrics, "step": step, STATUS: STATUS_RUNNING})

    # KeyboardInterrupt / SystemExit (how Tune stops a trial of an interrupted sweep) propagate: the
    # trainer's run marks itself KILLED, not FAILED, and resume reruns the trial.
    try:
        result = train(trial.config, tracking=tracking, on_log=forward_progress, progress=False)
    except NonFiniteLossError as error:
        run_id = _record_failure(client, context, trial, error, prefix="Loss became non-finite",
                                 outcome=mlflow_runs.OUTCOME_NAN)
        tune.report({STATUS: STATUS_NAN, "error": f"{type(error).__name__}: {error}", RUN_ID: run_id or "",
                     REUSED: 0})
        return
    except Exception as error:
        run_id = ""
        try:
            run_id = _record_failure(client, context, trial, error, prefix="Trial raised",
                                     outcome=None if is_retryable(error) else mlflow_runs.OUTCOME_FAILED)
        except Exception as record_error:  # never hide the trial's own error behind a tracking error
            print(f"vqbench: could not record the failure of {trial.run_name} in MLflow: {record_error}")
        if is_retryable(error):
            raise
        # Deterministic: training again gives the same error. Recorded once; Tune does not retry it.
        tune.report({STATUS: STATUS_FAILED, "error": failure_line(error), RUN_ID: run_id or "", REUSED: 0})
        return
    tune.report({**result.metrics, STATUS: STATUS_FINISHED, RUN_ID: result.run_id or "", REUSED: 0})


def is_retryable(error: BaseException) -> bool:
    """Whether training the trial again may succeed: only errors of the store or the network that
    outlasted their retries. Everything else (bad options, shapes, out of memory, EACCES) is not."""
    from benchmark.tracking import store

    if isinstance(error, store.PermanentStoreError):
        return False
    if isinstance(error, store.MlflowStoreError):
        return True
    if isinstance(error, MemoryError):
        return False
    return store.permanent_os_error(error) is None and isinstance(error, (ConnectionError, TimeoutError))


def failure_line(error: BaseException) -> str:
    """The cause of a failure in one line, with a hint for out-of-memory errors."""
    from benchmark.tracking.store import one_line

    text = one_line(error, 400)
    if isinstance(error, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower():
        text += " (out of memory: lower --codebook-size, --latent-dim or --batch-size)"
    return text


def _record_failure(client, context: SweepContext, trial: Trial, error: BaseException, *, prefix: str,
                    outcome: str | None = None) -> str:
    """Leave the trial's newest run FAILED with the error in its description (the trainer usually has
    done both; this covers a failure before or outside its run), tagged with ``outcome`` if given. If
    the trainer never created a run, create one, so every trial shows up in MLflow."""
    message = f"{type(error).__name__}: {error}"
    runs = mlflow_runs.child_runs(client, context.experiment_id, context.parent_run_id, trial.key)
    run_id = runs[-1].info.run_id if runs else _create_trial_run(client, context, trial)
    run = client.get_run(run_id)
    note = run.data.tags.get(mlflow_runs.DESCRIPTION_TAG, "")
    if str(error) not in note:
        trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))[-3000:]
        mlflow_runs.set_description(
            client, run_id, f"{note}\n\n**{prefix}:** `{message[:500]}`\n\n```\n{trace}\n```".lstrip())
    if outcome:
        client.set_tag(run_id, mlflow_runs.OUTCOME_TAG, outcome)
    if run.info.status != "FAILED":
        client.set_terminated(run_id, status="FAILED")
    return run_id


def _create_trial_run(client, context: SweepContext, trial: Trial) -> str:
    """A run for a trial that failed before the trainer created one, tagged like a trainer's run."""
    from benchmark.tracking import runs as tracking
    from mlflow.entities import Param

    c = trial.config
    tags = {
        **tracking.trial_tags(quantizer=c.quantizer, codebook_size=trial.codebook_size,
                              latent_dim=c.latent_dim, seed=c.seed, dataset=c.dataset, device=c.device,
                              trial_key=trial.key),
        **trial_tags(context, trial),
        **node_tags(),
        mlflow_runs.PARENT_RUN_TAG: context.parent_run_id,
    }
    run = client.create_run(context.experiment_id, run_name=trial.run_name, tags=tags)
    params = {**c.as_params(), "codebook_size": trial.codebook_size,
              keys.PARAM_CODEBOOK_SIZE_REQUESTED: c.codebook_size}
    items = [Param(k, str(v)) for k, v in params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[start:start + 100])
    return run.info.run_id
