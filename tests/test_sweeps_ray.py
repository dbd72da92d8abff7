"""Sweeps end to end: real local Ray Tune, the real trainer, a real SQLite MLflow store.

One Ray session is shared with the other modules that need it (conftest.local_ray; Ray starts in about
4 s). Budgets are tiny: 16-pixel images, a width-8 backbone, a few steps, no rFID.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.tracking import keys
from sweeps.grid import SweepGrid, base_config, expand_grid
from sweeps.launch import SweepSettings, resume_sweep, start_sweep
from sweeps.mlflow_runs import PARENT_RUN_TAG

TINY_BUDGET = {"image_size": 16, "width": 8, "num_res_blocks": 0, "num_downsamples": 2, "steps": 12,
               "batch_size": 8, "warmup_steps": 2, "eval_samples": 32, "fid_samples": 0, "log_every": 4,
               "probe_every": 4, "dead_code_window": 8}
REPO = Path(__file__).resolve().parents[1]


def settings(tmp_path, uri, **changes) -> SweepSettings:
    values = dict(storage_path=str(tmp_path / "runs"), tracking_uri=uri, log_system_metrics=False, verbose=0,
                  max_failures=1)
    values.update(changes)
    return SweepSettings(**values)


def all_runs(uri: str):
    """Every run in the store, deleted ones included."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, run_view_type=ViewType.ALL, max_results=1000)


def children(runs, parent_run_id: str, *, active_only: bool = True):
    return [r for r in runs if r.data.tags.get(PARENT_RUN_TAG) == parent_run_id
            and (r.info.lifecycle_stage == "active" or not active_only)]


def test_tiny_sweep_gives_one_finished_child_run_per_trial(local_ray, tracking_uri, tmp_path):
    grid = SweepGrid(["vq", "simvq"], [16, 32], [4], [0], base=base_config(TINY_BUDGET))
    outcome = start_sweep(grid, name="tiny", preset=None, experiment="sweeps-test",
                          settings=settings(tmp_path, tracking_uri))
    assert outcome.parent_status == "FINISHED" and outcome.counts == {"FINISHED": 4}
    runs = all_runs(tracking_uri)
    parents = [r for r in runs if r.data.tags.get(keys.TAG_KIND) == "sweep"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_id == outcome.parent_run_id and parent.info.status == "FINISHED"
    assert parent.info.run_name == "tiny" and parent.data.tags[keys.TAG_SWEEP] == "tiny"
    assert "4 trials" in parent.data.tags["mlflow.note.content"]
    assert parent.data.params["steps"] == "12" and parent.data.params["grid.quantizers"] == "vq,simvq"
    kids = children(runs, parent.info.run_id, active_only=False)
    assert len(kids) == 4 and all(r.info.status == "FINISHED" for r in kids)
    expected = {t.key: t.run_name for t in expand_grid(grid).trials}
    assert {r.data.tags[keys.TAG_TRIAL_KEY]: r.info.run_name for r in kids} == expected
    for run in kids:
        assert run.data.tags[keys.TAG_SWEEP] == "tiny" and run.data.tags[keys.TAG_KIND] == "trial"
        assert 0 < run.data.metrics[keys.EVAL_UTILIZATION] <= 1
        assert run.data.metrics[keys.COST_SAMPLES_SEEN] == 12 * 8
    assert all(o.attempts == 1 and not o.reused for o in outcome.outcomes)


def test_a_raising_trial_fails_once_a_nan_trial_is_not_retried_and_the_others_finish(
        local_ray, tracking_uri, tmp_path):
    # Real configs the real code rejects inside the trial: VQ's constructor refuses beta < 0 (the grid
    # checks option names, not values), so the vq trial raises on every attempt; SimVQ with beta = 1e300
    # makes the loss infinite at step 1, a deterministic divergence. EMA-VQ runs normally.
    grid = SweepGrid(["vq", "simvq", "ema"], [16], [4], [0], base=base_config(TINY_BUDGET),
                     quantizer_options={"vq": {"beta": -1.0}, "simvq": {"beta": 1e300}})
    outcome = start_sweep(grid, name="failures", experiment="sweeps-test",
                          settings=settings(tmp_path, tracking_uri, max_failures=1))
    by_quantizer = {o.trial.config.quantizer: o for o in outcome.outcomes}
    assert by_quantizer["ema"].status == "FINISHED" and by_quantizer["ema"].attempts == 1
    failed = by_quantizer["vq"]
    assert failed.status == "FAILED" and "beta" in failed.error
    assert failed.attempts == 1, "a deterministic failure is recorded once, never retried"
    diverged = by_quantizer["simvq"]
    assert diverged.status == "NAN" and diverged.attempts == 1, "a non-finite loss is not retried"
    assert "not finite" in diverged.error
    assert outcome.parent_status == "FAILED", "a sweep with a failed trial does not end FINISHED"

    runs = all_runs(tracking_uri)
    kids = children(runs, outcome.parent_run_id, active_only=False)
    vq_runs = [r for r in kids if r.data.tags.get(keys.TAG_QUANTIZER) == "vq"]
    assert len(vq_runs) == 1 and vq_runs[0].info.status == "FAILED"
    assert "beta" in vq_runs[0].data.tags["mlflow.note.content"]
    (simvq_run,) = [r for r in kids if r.data.tags.get(keys.TAG_QUANTIZER) == "simvq"]
    assert simvq_run.info.status == "FAILED"
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_starting_a_sweep_twice_under_one_name_is_refused(local_ray, tracking_uri, tmp_path):
    grid = SweepGrid(["simvq"], [16], [4], [0], base=base_config(TINY_BUDGET))
    (tmp_path / "runs" / "again").mkdir(parents=True)
    (tmp_path / "runs" / "again" / "vqbench_sweep.json").write_text("{}")
    with pytest.raises(ValueError, match="--resume again"):
        start_sweep(grid, name="again", settings=settings(tmp_path, tracking_uri))
    with pytest.raises(ValueError, match="no sweep named 'missing'"):
        resume_sweep("missing", settings(tmp_path, tracking_uri))


@pytest.mark.slow
def test_a_killed_sweep_resumes_without_rerunning_or_duplicating(local_ray, tracking_uri, tmp_path):
    """Start the sweep in its own process (one CPU: trials run one after another), SIGKILL the whole
    process group once one trial is FINISHED and another RUNNING, then resume it here."""
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri).search_experiments()  # create the store's tables before two processes use it
    sweep_file = tmp_path / "sweep.yaml"
    # enough steps that a trial runs for seconds: the kill lands inside one
    budget = ", ".join(f"{k}: {v}" for k, v in {**TINY_BUDGET, "steps": 400}.items())
    # three trials (one CPU): at the kill, one is finished, one running and one still waiting
    sweep_file.write_text(f"quantizers: [vq, simvq, ema]\ncodebook_sizes: [16]\nlatent_dims: [4]\n"
                          f"seeds: [0]\nbudget: {{{budget}}}\n")
    storage = tmp_path / "runs"
    log = open(tmp_path / "sweep.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmark.cli", "sweep", "--config", str(sweep_file), "--name", "killed",
         "--experiment", "sweeps-test", "--storage-path", str(storage), "--num-cpus", "1",
         "--tracking-uri", tracking_uri, "--no-system-metrics", "--quiet"],
        cwd=REPO, env={**os.environ, "RAY_AUTH_MODE": "disabled"}, start_new_session=True,
        stdout=log, stderr=subprocess.STDOUT)
    finished_before, running_before = [], []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.3)
            runs = [r for r in all_runs(tracking_uri) if r.data.tags.get(keys.TAG_KIND) == "trial"]
            finished_before = [r.info.run_id for r in runs if r.info.status == "FINISHED"]
            # a run that started within the last second is far from its end when the kill lands
            running_before = [r.info.run_id for r in runs if r.info.status == "RUNNING"
                              and time.time() * 1000 - r.info.start_time < 1000]
            if finished_before and running_before:
                break
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.close()
    # What the store held at the kill (nothing can change it after SIGKILL; the poll above may be a
    # moment older).
    trial_runs = [r for r in all_runs(tracking_uri) if r.data.tags.get(keys.TAG_KIND) == "trial"]
    finished_before = [r.info.run_id for r in trial_runs if r.info.status == "FINISHED"]
    running_before = [r.info.run_id for r in trial_runs if r.info.status == "RUNNING"]
    assert finished_before and running_before, (tmp_path / "sweep.log").read_text()[-3000:]

    outcome = resume_sweep("killed", settings(tmp_path, tracking_uri))
    assert outcome.parent_status == "FINISHED" and outcome.counts == {"FINISHED": 3}
    runs = all_runs(tracking_uri)
    parents = [r for r in runs if r.data.tags.get(keys.TAG_KIND) == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", "the same parent run is reused"
    kids = children(runs, outcome.parent_run_id)
    assert len(kids) == 3 and all(r.info.status == "FINISHED" for r in kids)
    assert len({r.data.tags[keys.TAG_TRIAL_KEY] for r in kids}) == 3, "exactly one run per trial"
    live_ids = {r.info.run_id for r in kids}
    assert set(finished_before) <= live_ids, "a trial finished before the kill is not rerun"
    assert not set(running_before) & live_ids, "the killed attempt's run is retired"
    assert not [r for r in runs if r.info.status == "RUNNING"], "no run, deleted or not, is left RUNNING"
    reused = {o.run_id for o in outcome.outcomes if o.reused}
    assert set(finished_before) <= reused
