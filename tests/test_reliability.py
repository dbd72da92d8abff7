"""Reliability and security, round two: each test fails on the code before this round.

Real processes and stores, nothing mocked: a real `vqbench server` (MLflow) behind a real loopback HTTP
proxy that forwards ``runs/create`` and drops its reply; real SQLite stores; a real local Ray.
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.tracking import keys, store
from benchmark.tracking.ui import free_port, wait_until_serving
from sweeps import cluster
from sweeps.drill_proxy import CommitThenDieProxy, CreateFaultProxy

from .processes import stop

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false"}
ENV.pop("RAY_ADDRESS", None)
TINY_BUDGET = {"image_size": 16, "width": 8, "num_res_blocks": 0, "num_downsamples": 2, "steps": 12,
               "batch_size": 8, "warmup_steps": 2, "eval_samples": 32, "fid_samples": 0, "log_every": 4,
               "probe_every": 4, "dead_code_window": 8}
TRAIN_TINY = ["--codebook-size", "16", "--latent-dim", "4", "--image-size", "16", "--width", "8", "--steps", "6",
              "--batch-size", "8", "--eval-samples", "32", "--fid-samples", "0", "--log-every", "3",
              "--no-progress", "--no-system-metrics"]


# ---------------------------------------------------------------------------- a lossy path to a real server
class LossyProxy(CreateFaultProxy):
    """In front of a real MLflow server: while ``drop`` > 0, a ``runs/create`` is forwarded (the server
    commits the run) and its reply is dropped, as when a network or a server dies at the wrong moment."""

    def __init__(self, upstream_port: int):
        self.drop, self.creates, self.dropped = 0, 0, 0
        super().__init__(upstream_port)

    def on_create(self) -> bool:
        with self.lock:
            self.creates += 1
            lose = self.drop > 0
            if lose:
                self.drop -= 1
                self.dropped += 1
        return lose


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `vqbench server` on loopback; yields (uri, port)."""
    folder = tmp_path_factory.mktemp("server")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmark.cli", "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--port", str(port)], cwd=REPO, env=ENV, start_new_session=True,
        stdout=open(folder / "server.log", "a"), stderr=subprocess.STDOUT)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", process)
        yield f"http://127.0.0.1:{port}", port
    finally:
        stop(process)


@pytest.fixture
def lossy(mlflow_server):
    proxy = LossyProxy(mlflow_server[1])
    yield proxy
    proxy.close()


def every_run(uri: str, experiment: str):
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                              run_view_type=ViewType.ALL, max_results=1000)


def test_a_lost_create_reply_leaves_exactly_one_run_child_and_parent(lossy, mlflow_server, monkeypatch):
    from benchmark.tracking.runs import experiment_id
    from sweeps.mlflow_runs import create_parent_run

    monkeypatch.setattr(store, "FIRST_DELAY_S", 0.05)
    client = store.client(lossy.uri)
    exp = experiment_id(client, "lossy")
    lossy.drop = 1
    run = client.create_run(exp, run_name="child")
    lossy.drop = 1
    parent = create_parent_run(client, exp, name="sweep", preset=None, params={"a": 1}, description="d", tags={})
    assert lossy.dropped == 2 and lossy.creates >= 3, "the server committed a create whose reply was lost"
    runs = every_run(mlflow_server[0], "lossy")
    active = [r for r in runs if r.info.lifecycle_stage == "active"]
    assert sorted(r.info.run_id for r in active) == sorted([run.info.run_id, parent]), \
        "one run per create, whatever the retries"
    assert not [r for r in runs if r.info.status == "RUNNING" and r.info.lifecycle_stage == "deleted"], \
        "a retired duplicate is never left RUNNING"


def test_the_drills_commit_then_die_proxy_fires_after_the_commit_and_loses_that_reply_only(mlflow_server,
                                                                                            monkeypatch):
    from benchmark.tracking.runs import experiment_id

    monkeypatch.setattr(store, "FIRST_DELAY_S", 0.05)
    proxy = CommitThenDieProxy(mlflow_server[1])
    try:
        client = store.client(proxy.uri)
        exp = experiment_id(client, "commit-then-die")
        seen_at_fire = []
        proxy.arm(lambda: seen_at_fire.append(len(every_run(mlflow_server[0], "commit-then-die"))))
        run = client.create_run(exp, run_name="child")
        client.create_run(exp, run_name="second")  # disarmed: its reply arrives
        assert proxy.fired == 1 and seen_at_fire == [1], "the callback runs once, after the server committed"
        active = [r for r in every_run(mlflow_server[0], "commit-then-die") if r.info.lifecycle_stage == "active"]
        assert len(active) == 2 and run.info.run_id in {r.info.run_id for r in active}
    finally:
        proxy.close()


def test_vqbench_train_through_a_lossy_path_leaves_one_finished_run(lossy, mlflow_server, capsys):
    lossy.drop = 1
    code = main(["train", "--quantizer", "vq", *TRAIN_TINY, "--experiment", "lossy-train",
                 "--tracking-uri", lossy.uri])
    assert code == 0, capsys.readouterr().err
    assert lossy.dropped == 1
    runs = every_run(mlflow_server[0], "lossy-train")
    assert [r.info.status for r in runs if r.info.lifecycle_stage == "active"] == ["FINISHED"]
    assert not [r for r in runs if r.info.status == "RUNNING"], "no run left RUNNING"


# ---------------------------------------------------------------------------- permanent OS errors
def test_a_permanent_os_error_is_not_retried_and_names_the_path_and_errno(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "FIRST_DELAY_S", 1.0)
    calls = []

    def full_disk(attempt):
        calls.append(attempt)
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "mlflow.db"))

    with pytest.raises(store.PermanentStoreError) as raised:
        store.retry(full_disk, what="log_batch", uri=f"sqlite:///{tmp_path / 'mlflow.db'}", tries=8)
    assert calls == [1], "raised at once, not retried"
    message = str(raised.value)
    assert "ENOSPC" in message and str(tmp_path / "mlflow.db") in message and "\n" not in message

    def read_only(attempt):  # SQLite's own words, wrapped without an errno
        calls.append(attempt)
        raise RuntimeError("(sqlite3.OperationalError) attempt to write a readonly database")

    with pytest.raises(store.PermanentStoreError, match="EROFS"):
        store.retry(read_only, what="set_tag", uri=f"sqlite:///{tmp_path / 'ro.db'}", tries=8)

    # a store path through a file: ENOTDIR, one line from the CLI, exit 1, no traceback
    (tmp_path / "afile").write_text("x")
    uri = f"sqlite:///{tmp_path / 'afile' / 'mlflow.db'}"
    with pytest.raises(store.PermanentStoreError, match="ENOTDIR"):
        store.client(uri)


def test_the_cli_prints_one_line_for_a_store_path_through_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    done = subprocess.run([sys.executable, "-m", "benchmark.cli", "train", "--quantizer", "vq", *TRAIN_TINY,
                           "--tracking-uri", f"sqlite:///{tmp_path / 'afile' / 'mlflow.db'}"],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (line,) = [l for l in done.stderr.splitlines() if "error" in l]
    assert "ENOTDIR" in line and "afile" in line


# ---------------------------------------------------------------------------- one-line errors
def test_nan_loss_and_impossible_codebook_are_one_line_errors(tmp_path):
    nan = subprocess.run([sys.executable, "-m", "benchmark.cli", "train", "--quantizer", "vq", *TRAIN_TINY,
                          "--lr", "1e30", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
                         cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert nan.returncode in (1, 2) and "Traceback" not in nan.stderr, nan.stderr[-2000:]
    (line,) = [l for l in nan.stderr.splitlines() if "error:" in l]
    assert "--lr" in line
    huge = subprocess.run([sys.executable, "-m", "benchmark.cli", "train", "--quantizer", "vq", "--codebook-size",
                           str(2**30), "--latent-dim", "32", "--tracking-uri", f"sqlite:///{tmp_path / 'big.db'}"],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert huge.returncode == 2 and len(huge.stderr.strip().splitlines()) == 1, huge.stderr
    assert "GiB" in huge.stderr and "--codebook-size" in huge.stderr
    assert not (tmp_path / "big.db").exists(), "refused before the store was created"


def test_a_malformed_sweep_file_and_an_impossible_sweep_are_refused_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("quantizers: [vq\nseeds: {a: [1,\n")
    assert main(["sweep", "--config", str(bad), "--dry-run"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["sweep", "--quantizers", "vq", "--codebook-sizes", "2^30", "--latent-dims", "32", "--dry-run"]) == 2
    assert "GiB" in capsys.readouterr().err


# ---------------------------------------------------------------------------- data validated first
@pytest.mark.parametrize("content", ["empty", "corrupt"])
def test_bad_data_is_refused_in_a_dry_run_and_before_anything_is_created(tmp_path, capsys, monkeypatch, content):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "images"
    data.mkdir()
    if content == "corrupt":
        for number in range(30):
            (data / f"img{number}.png").write_bytes(b"not an image")
    common = ["sweep", "--quantizers", "vq", "--codebook-sizes", "16", "--latent-dims", "4", "--dataset", "folder",
              "--data-dir", str(data)]
    assert main([*common, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert str(data) in err and ("0 image file" in err if content == "empty" else "cannot read image" in err)
    assert main([*common, "--storage-path", str(tmp_path / "runs"),
                 "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--address", "local"]) == 2
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists(), "nothing was created"


# ---------------------------------------------------------------------------- cluster checks
@pytest.mark.parametrize("uri", ["http://127.1:5000", "http://0:5000", "http://[::ffff:127.0.0.1]:5000",
                                 "http://localhost:5000", "postgresql://vq@127.0.0.2/db", "http://[::1]:5000"])
def test_loopback_stores_are_refused_by_resolving_their_address(uri):
    assert "loopback" in (cluster.unreachable_reason(uri) or "")


def test_a_host_name_resolving_to_loopback_is_refused_and_databricks_is_not_a_folder():
    loopback_names = [name for name in (socket.gethostname(), "localhost.localdomain", "ip6-localhost")
                      if cluster.loopback_addresses(name)]
    names = [name for name in loopback_names if name != "localhost"]
    if names:
        assert "resolves to" in cluster.unreachable_reason(f"http://{names[0]}:5000")
    assert cluster.unreachable_reason("databricks") is None
    assert cluster.unreachable_reason("databricks://profile") is None
    assert cluster.unreachable_reason("http://10.1.2.3:5000") is None


def test_an_experiment_with_a_local_artifact_location_is_refused_on_a_cluster(tracking_uri):
    from benchmark.tracking.runs import experiment_id

    client = store.client(tracking_uri)
    created = experiment_id(client, "made-before-the-server")
    with pytest.raises(ValueError, match="local folder"):
        cluster.check_artifact_location(client, created, "made-before-the-server")


def test_every_node_checks_the_store_answers_before_the_first_trial(local_ray, mlflow_server):
    assert cluster.check_nodes_reach_store(mlflow_server[0]) == 1
    with pytest.raises(ValueError, match="does not answer from every Ray node"):
        cluster.check_nodes_reach_store(f"http://127.0.0.1:{free_port()}", timeout_s=3)


# ---------------------------------------------------------------------------- deterministic trial failures
def test_a_deterministic_trial_failure_is_recorded_once_not_retried_and_fails_the_parent(local_ray, tracking_uri,
                                                                                         tmp_path):
    from mlflow.tracking import MlflowClient

    from sweeps.grid import SweepGrid, base_config
    from sweeps.launch import SweepSettings, start_sweep
    from sweeps.mlflow_runs import OUTCOME_TAG

    grid = SweepGrid(["vq", "simvq"], [16], [4], [0], base=base_config(TINY_BUDGET),
                     quantizer_options={"simvq": {"beta": -1.0}})  # SimVQ refuses it when built, every time
    settings = SweepSettings(storage_path=str(tmp_path / "runs"), tracking_uri=tracking_uri,
                             log_system_metrics=False, verbose=0, max_failures=2)
    outcome = start_sweep(grid, name="deterministic", experiment="failures", settings=settings)
    assert outcome.counts == {"FINISHED": 1, "FAILED": 1}
    (failed,) = [o for o in outcome.outcomes if o.status == "FAILED"]
    assert failed.attempts == 1, "trained once, not 1 + max_failures times"
    assert "beta" in failed.error
    assert outcome.parent_status == "FAILED"
    client = MlflowClient(tracking_uri)
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FAILED" and "finished with failures" in parent.data.tags[OUTCOME_TAG]
    run = client.get_run(failed.run_id)
    assert run.info.status == "FAILED" and "beta" in run.data.tags["mlflow.note.content"]


# ---------------------------------------------------------------------------- locks
def test_the_store_lock_lives_beside_the_store_and_times_out_clearly(tmp_path, monkeypatch):
    database = tmp_path / "locked" / "mlflow.db"
    lock_path = store.store_lock_path(database)
    assert lock_path.parent == database.parent, "never a predictable name in /tmp"
    database.parent.mkdir()
    monkeypatch.setenv(store.LOCK_TIMEOUT_ENV, "0.5")
    with open(lock_path, "a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(store.StoreLockTimeout, match=str(lock_path)):
            store.ensure_store(f"sqlite:///{database}")
    store.ensure_store(f"sqlite:///{database}")
    assert stat.S_IMODE(database.stat().st_mode) == 0o600, "the store is owner-only"


def test_a_trial_whose_process_died_is_not_labelled_as_a_stopped_sweep(tracking_uri):
    from benchmark.tracking.runs import experiment_id
    from sweeps import mlflow_runs

    client = store.client(tracking_uri)
    exp = experiment_id(client, "died")
    parent = client.create_run(exp, run_name="sweep").info.run_id
    tags = {mlflow_runs.PARENT_RUN_TAG: parent}
    oom = client.create_run(exp, tags={**tags, keys.TAG_TRIAL_KEY: "a"}).info.run_id
    stopped = client.create_run(exp, tags={**tags, keys.TAG_TRIAL_KEY: "b"}).info.run_id
    mlflow_runs.kill_orphaned_children(client, exp, parent, died={"a": "The actor died unexpectedly (SIGKILL)"})
    note = client.get_run(oom).data.tags["mlflow.note.content"]
    assert "process died" in note and "SIGKILL" in note and "sweep stopped" not in note
    assert "sweep stopped" in client.get_run(stopped).data.tags["mlflow.note.content"]


# ---------------------------------------------------------------------------- server and secrets
def test_the_server_refuses_in_memory_sqlite_and_a_password_on_the_command_line(capsys):
    for uri in ("sqlite:///:memory:", "sqlite://"):
        assert main(["server", "--backend-store-uri", uri, "--port", str(free_port())]) == 2
        assert "in-memory" in capsys.readouterr().err
    assert main(["server", "--backend-store-uri", "postgresql://vq:secret@db.example/vq",
                 "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "VQBENCH_DB_PASSWORD" in err and "secret" not in err
    from benchmark.tracking.server import server_command

    assert not [a for a in server_command("sqlite:////x/mlflow.db", Path("/a"), "127.0.0.1", 5000, 1, False)
                if "mlflow.db" in a], "the store's URI is not in argv (ps)"


def test_server_auth_with_a_new_store_folder_starts_and_its_files_are_owner_only(tmp_path):
    import importlib.util

    if importlib.util.find_spec("flask_wtf") is None:
        pytest.skip("MLflow's basic-auth app needs its auth extra: pip install 'mlflow[auth]'")
    folder = tmp_path / "new" / "store"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmark.cli", "server", "--auth", "--backend-store-uri",
         f"sqlite:///{folder / 'mlflow.db'}", "--port", str(port)], cwd=tmp_path,
        env={**ENV, "MLFLOW_AUTH_ADMIN_PASSWORD": "vqbench-Test-2026!"}, start_new_session=True,
        stdout=open(tmp_path / "server.log", "w"), stderr=subprocess.STDOUT)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", process)
    except RuntimeError:
        pytest.fail((tmp_path / "server.log").read_text()[-3000:])
    finally:
        stop(process)
    for name in ("mlflow.db", "basic_auth.db"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name


def test_secrets_stay_out_of_rays_runtime_env_and_the_state_file(tmp_path, monkeypatch):
    from sweeps.state import SweepState, load_state, save_state

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "vq")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-123")
    env_vars = cluster.runtime_env("http://10.1.2.3:5000", cluster=False)["env_vars"]
    assert "hunter2" not in str(env_vars) and "tok-123" not in str(env_vars)
    assert env_vars["MLFLOW_TRACKING_USERNAME"] == "vq"
    state = SweepState(name="s", preset=None, experiment="e", tracking_uri="http://vq:hunter2@10.1.2.3:5000",
                       grid={}, created="now")
    save_state(str(tmp_path), state)
    assert "hunter2" not in (tmp_path / "s" / "vqbench_sweep.json").read_text()
    assert load_state(str(tmp_path), "s").tracking_uri == "http://vq@10.1.2.3:5000"


def test_workers_read_the_password_from_an_owner_only_file(tmp_path, monkeypatch):
    secret = tmp_path / "password"
    secret.write_text("hunter2\n")
    secret.chmod(0o644)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.setenv(store.PASSWORD_FILE_ENV, str(secret))
    with pytest.raises(ValueError, match="chmod 600"):
        store.load_password_file()
    secret.chmod(0o600)
    store.load_password_file()
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "hunter2"
