"""A sweep on a real multi-node Ray cluster, logging to a real `vqbench server` (issue 14).

Two Ray nodes on this machine, each its own `ray start --block` process (head and worker, one CPU each,
their own temporary directories so no other Ray on the machine sees them), a tracking server bound to
all interfaces, and `vqbench sweep --address`: every trial's run must reach the server's store FINISHED
with its artifacts, and the trials must have run on both nodes. Ray binds to the machine's own interface
address, not loopback, and so does the URI the server prints: the path is the one a real cluster takes.
Everything started here is stopped by its process group, never with `ray stop`.
"""
from __future__ import annotations

import base64
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from benchmark.tracking import keys
from benchmark.tracking.server import machine_address
from benchmark.tracking.ui import free_port, wait_until_serving
from sweeps.mlflow_runs import HOST_TAG, NODE_TAG, PARENT_RUN_TAG

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false"}
ENV.pop("RAY_ADDRESS", None)
ENV.pop("MLFLOW_TRACKING_URI", None)
TINY = ["--steps", "12", "--image-size", "16", "--width", "8", "--batch-size", "8", "--eval-samples", "32",
        "--fid-samples", "0", "--set", "num_res_blocks=0", "--set", "warmup_steps=2", "--set", "log_every=4",
        "--set", "probe_every=4", "--set", "dead_code_window=8"]


#: Seconds between SIGTERM and SIGKILL. A `ray start --block` whose whole group got SIGTERM asks its
#: (already stopping) GCS to drain the node and waits about 30 s for the RPC to time out; nothing it does
#: in that time matters here, so what is left after this grace is killed.
GRACE_S = 5


def stop(*processes: subprocess.Popen) -> None:
    """Stop processes this test started and everything in their sessions: SIGTERM, then SIGKILL to
    whatever is left after GRACE_S. All of them at once, so they shut down side by side."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for process in processes:
            try:
                os.killpg(process.pid, sig)
                alive.append(process)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (GRACE_S if sig == signal.SIGTERM else 30)
        while alive and time.monotonic() < deadline:
            for process in list(alive):
                process.poll()  # reap the leader, so that only live members keep the group
                try:
                    os.killpg(process.pid, 0)
                except ProcessLookupError:
                    alive.remove(process)
            if alive:
                time.sleep(0.1)
        if not alive:
            return
        processes = tuple(alive)


def wait_for_line(log: Path, text: str, process: subprocess.Popen, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text() if log.exists() else ""
        if text in content:
            return content
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:3]} exited with {process.returncode}:\n{content[-3000:]}")
        time.sleep(0.1)
    raise TimeoutError(f"{text!r} not in {log} after {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def cluster_and_server(tmp_path):
    """`vqbench server` on all interfaces, a Ray head node and a second node (one CPU each); yields the
    head's address and the URI the server prints for workers. The server starts first and loads MLflow
    while Ray starts; all of them are stopped together."""
    temp = Path(tempfile.mkdtemp(prefix="vqr", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    processes = []
    server_log = tmp_path / "server.log"

    def ray_start(name: str, *args: str) -> None:
        log = tmp_path / f"ray-{name}.log"
        processes.append(subprocess.Popen(
            [RAY, "start", "--block", "--num-cpus=1", "--disable-usage-stats", f"--temp-dir={temp / name}",
             f"--dashboard-agent-listen-port={free_port()}", *args],
            env=ENV, start_new_session=True, stdout=open(log, "w"), stderr=subprocess.STDOUT))
        wait_for_line(log, "Ray runtime started", processes[-1])

    try:
        server = subprocess.Popen(
            [sys.executable, "-m", "benchmark.cli", "server", "--host", "0.0.0.0", "--port", str(free_port()),
             "--backend-store-uri", f"sqlite:///{tmp_path / 'server' / 'mlflow.db'}"],
            cwd=tmp_path, env=ENV, start_new_session=True, stdout=open(server_log, "w"), stderr=subprocess.STDOUT)
        processes.append(server)
        port = free_port()
        ray_start("head", "--head", f"--port={port}", "--include-dashboard=false")
        address = f"{machine_address()}:{port}"
        ray_start("node", f"--address={address}")
        content = wait_for_line(server_log, "export MLFLOW_TRACKING_URI=", server)
        uri = content.split("export MLFLOW_TRACKING_URI=")[1].split()[0]
        assert uri.startswith("http://") and "127.0.0.1" not in uri, "workers get an address they can reach"
        yield address, uri
    finally:
        stop(*processes)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def ray_cluster(cluster_and_server):
    """A head node and a second node, one CPU each; the head's address."""
    return cluster_and_server[0]


@pytest.fixture
def tracking_server(cluster_and_server):
    """`vqbench server` on all interfaces; the URI it prints for workers."""
    return cluster_and_server[1]


@pytest.mark.slow
def test_a_sweep_on_a_two_node_cluster_logs_every_trial_to_the_server(ray_cluster, tracking_server, tmp_path):
    from mlflow.tracking import MlflowClient

    done = subprocess.run(
        [sys.executable, "-m", "benchmark.cli", "sweep", "--address", ray_cluster, "--tracking-uri", tracking_server,
         "--quantizers", "vq,simvq", "--codebook-sizes", "16,32", "--latent-dims", "4", "--seeds", "0", *TINY,
         "--name", "cluster", "--experiment", "cluster-test", "--storage-path", str(tmp_path / "runs"),
         "--no-system-metrics"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 node(s)" in done.stdout and "code shipped" in done.stdout, done.stdout
    assert done.stdout.count("utilization") >= 4, "one line per trial"

    client = MlflowClient(tracking_server)
    experiment = client.get_experiment_by_name("cluster-test")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get(keys.TAG_KIND) == "sweep"]
    assert parent.info.status == "FINISHED"
    kids = [r for r in runs if r.data.tags.get(PARENT_RUN_TAG) == parent.info.run_id]
    assert sorted(r.info.run_name for r in kids) == ["simvq K=16 d=4 seed=0", "simvq K=32 d=4 seed=0",
                                                     "vq K=16 d=4 seed=0", "vq K=32 d=4 seed=0"]
    assert all(r.info.status == "FINISHED" for r in kids)
    for run in kids:
        assert run.info.artifact_uri.startswith("mlflow-artifacts:"), "artifacts go through the server"
        assert {"config.json", "reconstructions.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    assert len({r.data.tags[NODE_TAG] for r in kids}) == 2, "trials ran on both nodes"
    assert all(r.data.tags[HOST_TAG] == socket.gethostname() for r in kids)
    assert (tmp_path / "server" / "mlartifacts").is_dir(), "the server stored the artifacts on its disk"


def test_server_auth_needs_the_admin_password_to_start_and_a_login_to_read(tmp_path):
    from benchmark.cli import main

    env_without = {k: v for k, v in ENV.items() if k != "MLFLOW_AUTH_ADMIN_PASSWORD"}
    refused = subprocess.run([sys.executable, "-m", "benchmark.cli", "server", "--auth", "--backend-store-uri",
                              f"sqlite:///{tmp_path / 'auth.db'}", "--port", str(free_port())],
                             cwd=tmp_path, env=env_without, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "MLFLOW_AUTH_ADMIN_PASSWORD" in refused.stderr
    assert main(["server", "--backend-store-uri", "http://somewhere:5000"]) == 2
    if importlib.util.find_spec("flask_wtf") is None:
        pytest.skip("MLflow's basic-auth app needs its auth extra: pip install 'mlflow[auth]'")

    port, password = free_port(), "vqbench-Test-2026!"
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmark.cli", "server", "--auth", "--backend-store-uri",
         f"sqlite:///{tmp_path / 'auth.db'}", "--port", str(port)],
        cwd=tmp_path, env={**ENV, "MLFLOW_AUTH_ADMIN_PASSWORD": password}, start_new_session=True,
        stdout=open(tmp_path / "server.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", process)
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            urllib.request.urlopen(url, timeout=10)
        assert anonymous.value.code == 401
        login = base64.b64encode(f"admin:{password}".encode()).decode()
        request = urllib.request.Request(url, headers={"Authorization": f"Basic {login}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
    finally:
        stop(process)
