"""A sweep loses nothing whatever goes wrong (issue 14): real processes, a real `vqbench server`, real
SQLite stores, real signals; nothing is mocked.

- a trial's key survives a new TrainConfig field; CPUs per trial set torch threads, not the key;
- a cluster sweep with a store its workers cannot reach is refused at once, with nothing created;
- MLflow calls are retried with back-off, a restarting tracking server loses no write, and a store that
  stays down ends in a clear error (never a traceback from the clean-up);
- two first writers of a fresh store both succeed;
- a second driver of a running sweep is refused with the holder's pid; SIGTERM ends a sweep KILLED
  with the resume command; a finished trial whose run went missing is rerun on resume.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from benchmark.tracking import keys
from benchmark.tracking import store
from benchmark.training.config import TrainConfig
from benchmark.tracking.ui import free_port, wait_until_serving
from sweeps.grid import SweepGrid, base_config, expand_grid
from sweeps.launch import SweepSettings, resume_sweep, start_sweep
from sweeps.mlflow_runs import PARENT_RUN_TAG

from .processes import stop

REPO = Path(__file__).resolve().parents[1]
TINY_BUDGET = {"image_size": 16, "width": 8, "num_res_blocks": 0, "num_downsamples": 2, "steps": 12,
               "batch_size": 8, "warmup_steps": 2, "eval_samples": 32, "fid_samples": 0, "log_every": 4,
               "probe_every": 4, "dead_code_window": 8}
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false"}


# ------------------------------------------------------------------------------------- no process needed
def test_trial_key_is_stable_when_a_field_is_added_with_its_default():
    config = TrainConfig(quantizer="simvq", codebook_size=4096, latent_dim=32, steps=200, seed=1)
    Newer = dataclasses.make_dataclass("Newer", [("new_option", float, dataclasses.field(default=0.5))],
                                       bases=(TrainConfig,))
    newer = Newer(**dataclasses.asdict(config))
    assert newer.trial_key() == config.trial_key(), "a field added with its default changes no key"
    assert Newer(**dataclasses.asdict(config), new_option=0.7).trial_key() != config.trial_key()
    assert dataclasses.replace(config, device="cuda", threads=4).trial_key() == config.trial_key()
    assert dataclasses.replace(config, seed=2).trial_key() != config.trial_key()


def test_cpus_per_trial_set_torch_threads_but_not_the_trial_key():
    grid = SweepGrid(["vq", "simvq"], [16], [4], [0], base=base_config(TINY_BUDGET))
    one, four = expand_grid(grid), expand_grid(grid, threads=4)
    assert [t.config.threads for t in four.trials] == [4, 4]
    assert [t.key for t in four.trials] == [t.key for t in one.trials]


def test_a_relative_data_dir_is_resolved_on_the_driver(tmp_path, monkeypatch):
    from sweeps.cluster import with_driver_paths

    monkeypatch.chdir(tmp_path)
    grid = SweepGrid(["vq"], [16], [4], [0], base=base_config({**TINY_BUDGET, "data_dir": "data/images"}))
    assert with_driver_paths(grid).base.data_dir == str(tmp_path / "data" / "images")


REFUSALS = [
    # (extra argv, extra env, what the message must name)
    (["--address", "10.1.2.3:6379", "--tracking-uri", "sqlite:///runs.db"], {}, "SQLite file"),
    (["--address", "10.1.2.3:6379", "--tracking-uri", "./mlruns"], {}, "folder on this machine"),
    (["--tracking-uri", "http://127.0.0.1:5000"], {"RAY_ADDRESS": "10.1.2.3:6379"}, "from RAY_ADDRESS"),
    (["--address", "10.1.2.3:6379", "--tracking-uri", "http://10.1.2.4:5000", "--num-cpus", "2"], {},
     "--num-cpus sizes a private local Ray"),
]


@pytest.mark.parametrize("argv, env, named", REFUSALS)
def test_a_cluster_sweep_that_cannot_work_is_refused_at_once_with_nothing_created(tmp_path, argv, env, named):
    """Refused before Ray, torch or MLflow are even imported (well under a second), nothing on disk."""
    code = ("import sys; from benchmark.cli import main; code = main(sys.argv[1:]); "
            "heavy = [m for m in ('torch', 'ray', 'mlflow') if m in sys.modules]; "
            "print('HEAVY', heavy); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, "sweep", "--name", "refused", "--storage-path", "runs",
                           "--quantizers", "vq", *argv], cwd=tmp_path, env={**ENV, **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert named in done.stderr
    if "--num-cpus" not in named:
        assert "Nothing was created" in done.stderr and "vqbench server" in done.stderr, "it names the fix"
    assert "HEAVY []" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "no store, no sweep directory"


def test_mlflow_calls_are_retried_then_end_in_one_clear_error(monkeypatch):
    monkeypatch.setattr(store, "FIRST_DELAY_S", 0.05)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own retries: off for speed
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = store.client(uri, tries=3)
    started = time.monotonic()
    with pytest.raises(store.MlflowStoreError) as raised:
        client.set_tag("0" * 32, "k", "v")
    message = str(raised.value)
    assert uri in message and "set_tag" in message and "after 3 tries" in message and "vqbench server" in message
    assert time.monotonic() - started < 30
    with pytest.raises(ValueError):  # bad input is not retried: it fails at once, as MLflow raised it
        store.retry(lambda attempt: int("x"), what="parse", uri=uri, tries=5)


def test_closing_a_sweep_on_a_dead_store_reports_the_error_instead_of_raising(monkeypatch):
    from sweeps.outcomes import close_sweep
    from sweeps.state import SweepState

    monkeypatch.setattr(store, "FIRST_DELAY_S", 0.05)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://127.0.0.1:{free_port()}"
    state = SweepState(name="s", preset=None, experiment="e", tracking_uri=uri, grid={}, created="now",
                       experiment_id="1", parent_run_id="a" * 32)
    grid = SweepGrid(["vq"], [16], [4], [0], base=base_config(TINY_BUDGET))
    error = close_sweep(store.client(uri, tries=2), state, grid, expand_grid(grid), [], "KILLED", 1.0)
    assert "could not mark the parent run" in error and "KILLED" in error


# ------------------------------------------------------------------------------------- real processes
def start_server(store_uri: str, port: int, log: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmark.cli", "server", "--backend-store-uri", store_uri, "--port", str(port)],
        cwd=REPO, env=ENV, start_new_session=True, stdout=open(log, "a"), stderr=subprocess.STDOUT)
    wait_until_serving(f"http://127.0.0.1:{port}", process)
    return process


@pytest.mark.slow
def test_a_tracking_server_killed_and_restarted_mid_write_loses_nothing(tmp_path):
    store_uri, port = f"sqlite:///{tmp_path / 'server.db'}", free_port()
    server = start_server(store_uri, port, tmp_path / "server.log")
    uri = f"http://127.0.0.1:{port}"
    client = store.client(uri)
    from benchmark.tracking.runs import experiment_id

    run = client.create_run(experiment_id(client, "restart"), run_name="survives")
    stop(server, signal.SIGKILL)
    written: list = []
    writer = threading.Thread(target=lambda: written.append(client.log_metric(run.info.run_id, "m", 1.0)))
    writer.start()  # retries while the server is down
    time.sleep(2)
    server = start_server(store_uri, port, tmp_path / "server.log")
    try:
        writer.join(timeout=120)
        assert written, "the write completed once the server was back"
        assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}
    finally:
        stop(server)


FIRST_WRITER = """
import pathlib, sys, time
from benchmark.training.config import TrainConfig
from benchmark.tracking.runs import RunTracking
from benchmark.training.trainer import train
# A barrier: once both processes have imported torch and MLflow, both reach the fresh store at the same moment.
ready = pathlib.Path(sys.argv[2])
(ready / sys.argv[3]).touch()
deadline = time.monotonic() + 240
while len(list(ready.iterdir())) < 2 and time.monotonic() < deadline:
    time.sleep(0.002)
config = TrainConfig(quantizer="vq", codebook_size=16, latent_dim=4, image_size=16, width=4, num_res_blocks=0,
                     steps=8, batch_size=8, warmup_steps=2, eval_samples=16, fid_samples=0, log_every=4,
                     probe_every=4, dead_code_window=8, seed=int(sys.argv[3]))
train(config, tracking=RunTracking(tracking_uri=sys.argv[1], experiment="first", log_system_metrics=False),
      progress=False)
"""


@pytest.mark.slow
def test_two_first_writers_of_a_fresh_store_both_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    ready = tmp_path / "ready"
    ready.mkdir()
    processes = [subprocess.Popen([sys.executable, "-c", FIRST_WRITER, uri, str(ready), str(seed)], cwd=REPO,
                                  env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for seed in (0, 1)]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("first").experiment_id])
    assert sorted(r.data.tags[keys.TAG_SEED] for r in runs) == ["0", "1"]
    assert all(r.info.status == "FINISHED" for r in runs)


def all_runs(uri: str):
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, run_view_type=ViewType.ALL, max_results=1000)


def sweep_argv(tmp_path, uri: str, *argv: str) -> list[str]:
    """`vqbench sweep`'s arguments (after the program name)."""
    return ["sweep", *argv, "--storage-path", str(tmp_path / "runs"), "--tracking-uri", uri, "--no-system-metrics",
            "--num-cpus", "1"]


def sweep_command(tmp_path, uri: str, *argv: str) -> list[str]:
    return [sys.executable, "-m", "benchmark.cli", *sweep_argv(tmp_path, uri, *argv)]


@pytest.mark.slow
def test_a_second_driver_is_refused_with_the_holders_pid_and_sigterm_ends_the_sweep_killed(
        local_ray, tracking_uri, tmp_path, capsys):
    """The first driver is its own process; the second driver and the resume are `vqbench sweep` run in
    this process (another pid than the holder's; the resume uses the session's local Ray)."""
    from mlflow.tracking import MlflowClient

    from benchmark.cli import main

    MlflowClient(tracking_uri).search_experiments()
    sweep_file = tmp_path / "sweep.yaml"
    budget = ", ".join(f"{k}: {v}" for k, v in {**TINY_BUDGET, "steps": 400}.items())  # trials last seconds
    sweep_file.write_text("quantizers: [vq, simvq]\ncodebook_sizes: [16]\nlatent_dims: [4]\nseeds: [0]\n"
                          f"budget: {{{budget}}}\n")
    log = tmp_path / "first.log"
    first = subprocess.Popen(sweep_command(tmp_path, tracking_uri, "--config", str(sweep_file), "--name", "held"),
                             cwd=REPO, env=ENV, start_new_session=True, stdout=open(log, "w"),
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and first.poll() is None:
            if any(r.info.status == "RUNNING" and r.data.tags.get(keys.TAG_KIND) == "trial"
                   for r in all_runs(tracking_uri)):
                break
            time.sleep(0.5)
        assert first.poll() is None, log.read_text()[-3000:]
        capsys.readouterr()
        assert main(sweep_argv(tmp_path, tracking_uri, "--resume", "held")) == 2
        refused = capsys.readouterr().err
        assert f"pid {first.pid}" in refused and "--resume held" in refused
        first.send_signal(signal.SIGTERM)  # the driver only (a scheduler stopping the job)
        assert first.wait(timeout=180) == 130
    finally:
        stop(first, signal.SIGKILL)
    output = log.read_text()
    assert "vqbench sweep --resume held" in output, output[-3000:]
    runs = all_runs(tracking_uri)
    (parent,) = [r for r in runs if r.data.tags.get(keys.TAG_KIND) == "sweep"]
    assert parent.info.status == "KILLED"
    assert not [r for r in runs if r.info.status == "RUNNING"], "no run is left RUNNING"
    killed = [r for r in runs if r.info.status == "KILLED" and r.data.tags.get(keys.TAG_KIND) == "trial"]
    assert all("resumed sweep reruns it" in r.data.tags["mlflow.note.content"] for r in killed), "KILLED, with why"

    assert main(sweep_argv(tmp_path, tracking_uri, "--resume", "held")) == 0, capsys.readouterr()
    kids = [r for r in all_runs(tracking_uri) if r.data.tags.get(PARENT_RUN_TAG) == parent.info.run_id
            and r.info.lifecycle_stage == "active"]
    assert sorted(r.info.status for r in kids) == ["FINISHED", "FINISHED"]


def test_a_finished_trial_whose_run_went_missing_is_rerun_on_resume_and_a_diverged_one_is_not(
        local_ray, tracking_uri, tmp_path):
    from mlflow.tracking import MlflowClient

    grid = SweepGrid(["vq", "simvq"], [16], [4], [0], base=base_config(TINY_BUDGET),
                     quantizer_options={"simvq": {"beta": 1e300}})  # SimVQ's loss is infinite at step 1
    settings = SweepSettings(storage_path=str(tmp_path / "runs"), tracking_uri=tracking_uri,
                             log_system_metrics=False, verbose=0, max_failures=0)
    first = start_sweep(grid, name="missing", experiment="faults", settings=settings)
    assert first.counts == {"FINISHED": 1, "NAN": 1}
    (vq,) = [o for o in first.outcomes if o.trial.config.quantizer == "vq"]
    MlflowClient(tracking_uri).delete_run(vq.run_id)  # the store lost the finished trial's run

    again = resume_sweep("missing", settings)
    assert again.parent_status == "FINISHED" and again.counts == {"FINISHED": 1, "NAN": 1}
    by_quantizer = {o.trial.config.quantizer: o for o in again.outcomes}
    assert by_quantizer["vq"].run_id != vq.run_id and not by_quantizer["vq"].reused, "rerun, not a dead end"
    assert by_quantizer["simvq"].reused and by_quantizer["simvq"].attempts == 1, "a diverged trial is not rerun"
