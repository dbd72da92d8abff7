"""Start the MLflow UI on 127.0.0.1 for the store vqbench writes to.

The store is --backend-store-uri, else $MLFLOW_TRACKING_URI, else ./mlflow.db (the same default as
`vqbench train` and `vqbench sweep`). The server listens on loopback only; to view it from another
machine, forward the port (ssh -L 5000:127.0.0.1:5000 host). Ctrl-C stops it.

In the UI: the experiment "vqbench" lists one run per trial, named like "simvq K=4096 d=32 seed=0",
nested under its sweep's run; filter with e.g.  tags.quantizer = 'simvq' and tags.codebook_size = '4096'.
"""
from __future__ import annotations

import argparse

HOST = "127.0.0.1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 [5000]")
    parser.add_argument("--backend-store-uri", default=None,
                        help="MLflow store [$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in this folder]")


def port_is_free(port: int, host: str = HOST) -> bool:
    """True when nothing listens on host:port (checked by binding it, then releasing it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    """A port on ``host`` that nothing listens on right now (the OS picks it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def wait_until_serving(url: str, process, timeout: float = 90.0) -> None:
    """Block until the MLflow server ``process`` answers ``url``/health; raise if it exits or times out."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"`vqbench ui` exited with {process.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"MLflow UI did not answer at {url} within {timeout} s")


def server_command(store_uri: str, port: int) -> list[str]:
    """The UI server's argv; the store's URI (it may hold a password) travels in its environment
    ($MLFLOW_BACKEND_STORE_URI), not in argv, which `ps` shows to every user."""
    import sys

    # One worker: the UI needs no parallelism here and starts in seconds instead of ~25 s.
    return [sys.executable, "-m", "mlflow", "server", "--host", HOST, "--port", str(port), "--workers", "1"]


def server_environment() -> dict[str, str]:
    import os

    # MLflow 3's job-execution backend (for GenAI jobs) slows the start and is unused by vqbench.
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def run(args: argparse.Namespace) -> int:
    import signal
    import subprocess
    from pathlib import Path

    from benchmark.tracking.runs import resolve_tracking_uri
    from benchmark.tracking.store import redact

    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be in [1, 65535]; got {args.port}")
    store_uri = resolve_tracking_uri(args.backend_store_uri)
    if not port_is_free(args.port):
        raise ValueError(f"port {args.port} on {HOST} is already in use (another MLflow UI?); "
                         f"stop it or pick another with --port")
    if store_uri.startswith("sqlite:///") and not Path(store_uri[len("sqlite:///"):]).exists():
        print(f"note: {redact(store_uri)} does not exist yet; it will be created empty "
              "(run `vqbench train` or `vqbench sweep` in this folder, or pass --backend-store-uri)")
    from benchmark.tracking.store import create_private, sqlite_path

    database = sqlite_path(store_uri)
    if database is not None and database.parent.is_dir():
        create_private(database)  # a new store is owner-only from its first byte
    print(f"MLflow UI for {redact(store_uri)}\n  http://{HOST}:{args.port}   (starting; Ctrl-C to stop)", flush=True)
    server = subprocess.Popen(server_command(store_uri, args.port),
                              env={**server_environment(), "MLFLOW_BACKEND_STORE_URI": store_uri})
    # Stopping vqbench stops the server too: Ctrl-C, or SIGTERM from a supervisor or `kill`.
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    try:
        return server.wait()
    except KeyboardInterrupt:
        stop_process(server)
        raise


def stop_process(process, timeout: float = 10.0) -> None:
    """Terminate a server process, and kill it if it has not exited within ``timeout`` seconds."""
    import subprocess

    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
