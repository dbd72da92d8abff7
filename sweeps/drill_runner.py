"""The fault drill's processes and store: the tracking server and sweep drivers it starts and kills, the
tiny sweep they run, and the audit of each sweep's runs (lost, duplicated, stuck)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sweeps.drill_proxy import CommitThenDieProxy

TINY_BUDGET = {"image_size": 16, "width": 8, "num_res_blocks": 0, "num_downsamples": 2, "batch_size": 8,
               "warmup_steps": 2, "eval_samples": 32, "fid_samples": 0, "log_every": 10, "probe_every": 10,
               "dead_code_window": 20}
SIZES = [16, 32, 64, 128]


def sweep_file(path: Path, steps: int) -> Path:
    budget = ", ".join(f"{k}: {v}" for k, v in {**TINY_BUDGET, "steps": steps}.items())
    path.write_text(f"quantizers: [vq, simvq]\ncodebook_sizes: {SIZES}\nlatent_dims: [4]\nseeds: [0]\n"
                    f"budget: {{{budget}}}\n")
    return path


class Drill:
    def __init__(self, workdir: Path, steps: int, num_cpus: int):
        from benchmark.tracking.ui import free_port

        self.workdir = workdir
        self.port = free_port()
        self.proxy = CommitThenDieProxy(self.port)
        self.uri = f"http://127.0.0.1:{self.proxy.port}"   # every client goes through the proxy
        self.server_uri = f"http://127.0.0.1:{self.port}"
        self.store = f"sqlite:///{workdir / 'server' / 'mlflow.db'}"
        self.sweep_file = sweep_file(workdir / "sweep.yaml", steps)
        self.num_cpus = num_cpus
        self.env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
                    "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false"}
        self.env.pop("RAY_ADDRESS", None)
        self.server: subprocess.Popen | None = None
        self.invocations = 0
        self.orphans: list[str] = []

    # ------------------------------------------------------------------ processes
    def start_server(self) -> None:
        from benchmark.tracking.ui import wait_until_serving

        self.server = subprocess.Popen(
            [sys.executable, "-m", "benchmark.cli", "server", "--backend-store-uri", self.store, "--port",
             str(self.port)], env=self.env, start_new_session=True,
            stdout=open(self.workdir / "server.log", "a"), stderr=subprocess.STDOUT)
        wait_until_serving(self.server_uri, self.server)

    def kill_server(self) -> None:
        os.killpg(self.server.pid, signal.SIGKILL)
        self.server.wait()

    def start_sweep(self, name: str, *, default_store: bool = False, env: dict | None = None) -> subprocess.Popen:
        """``default_store``: no --tracking-uri; the sweep runs in workdir/default and logs to the default
        ./mlflow.db there."""
        folder = self.workdir / "default" if default_store else self.workdir
        folder.mkdir(exist_ok=True)
        state = folder / "runs" / name / "vqbench_sweep.json"
        what = ["--resume", name] if state.exists() else ["--config", str(self.sweep_file), "--name", name]
        store = [] if default_store else ["--tracking-uri", self.uri]
        self.invocations += 1
        environment = {**self.env, **(env or {})}
        if default_store:
            environment.pop("MLFLOW_TRACKING_URI", None)
        return subprocess.Popen(
            [sys.executable, "-m", "benchmark.cli", "sweep", *what, "--storage-path", str(folder / "runs"),
             *store, "--num-cpus", str(self.num_cpus), "--no-system-metrics"],
            cwd=folder, env=environment, start_new_session=True, stdout=open(self.workdir / f"{name}.log", "a"),
            stderr=subprocess.STDOUT)

    def trial_workers(self, driver: subprocess.Popen) -> list[int]:
        """Pids of the Ray worker processes running trials for ``driver``: children of its raylet (in the
        driver's session) titled ray::ImplicitFunc... (each worker is its own process group)."""
        listing = subprocess.run(["ps", "-eo", "pid=,ppid=,pgid=,args="], capture_output=True, text=True).stdout
        rows = [line.split(None, 3) for line in listing.splitlines() if len(line.split(None, 3)) == 4]
        session = {row[0] for row in rows if row[2] == str(driver.pid)}
        return [int(row[0]) for row in rows if row[1] in session and row[3].startswith("ray::")
                and "IDLE" not in row[3] and ("ImplicitFunc" in row[3] or "run_trial" in row[3])]

    def kill_driver(self, driver: subprocess.Popen) -> None:
        """SIGKILL the driver alone; what of its session outlives it by 3 s is recorded, then killed."""
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        time.sleep(3)
        listing = subprocess.run(["ps", "-eo", "pgid=,stat=,comm="], capture_output=True, text=True).stdout
        left = [line.split(None, 2)[2] for line in listing.splitlines()
                if line.split()[0] == str(driver.pid) and not line.split()[1].startswith("Z")]
        if left:
            self.orphans += left
            os.killpg(driver.pid, signal.SIGKILL)

    def run_to_end(self, name: str) -> tuple[float, int]:
        started = time.monotonic()
        code = self.start_sweep(name).wait()
        return time.monotonic() - started, code

    # ------------------------------------------------------------------ the store
    def store_of(self, name: str) -> str:
        return f"sqlite:///{self.workdir / 'default' / 'mlflow.db'}" if name.startswith("default") else self.server_uri

    def runs(self, name: str) -> tuple[list, list]:
        """(parent runs, child runs) of sweep ``name``, deleted ones included."""
        from mlflow.entities import ViewType
        from mlflow.tracking import MlflowClient

        from benchmark.tracking import keys
        from sweeps.mlflow_runs import PARENT_RUN_TAG

        client = MlflowClient(self.store_of(name))
        ids = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(ids, filter_string=f"tags.`{keys.TAG_SWEEP}` = '{name}'",
                                  run_view_type=ViewType.ALL, max_results=5000)
        parents = [r for r in runs if r.data.tags.get(keys.TAG_KIND) == "sweep"]
        parent_ids = {p.info.run_id for p in parents}
        return parents, [r for r in runs if r.data.tags.get(PARENT_RUN_TAG) in parent_ids]

    def finished_trials(self, name: str) -> int:
        try:
            return self._finished_trials(name)
        except Exception as error:  # noqa: BLE001 - a store a killed driver left mid-migration, say
            print(f"    (could not read {name}'s runs: {type(error).__name__}; the next resume repairs it)")
            return -1

    def _finished_trials(self, name: str) -> int:
        return sum(r.info.status == "FINISHED" and r.info.lifecycle_stage == "active" for r in self.runs(name)[1])

    def running_trials(self, name: str) -> int:
        return sum(r.info.status == "RUNNING" and r.info.lifecycle_stage == "active" for r in self.runs(name)[1])

    def audit(self, name: str) -> dict[str, int]:
        from benchmark.tracking import keys
        from sweeps.grid import SweepGrid, expand_grid
        from sweeps.launch import load_state

        folder = self.workdir / "default" if name.startswith("default") else self.workdir
        state = load_state(str(folder / "runs"), name)
        expected = {t.key for t in expand_grid(SweepGrid.from_dict(state.grid)).trials}
        parents, children = self.runs(name)
        live = [r for r in children if r.info.lifecycle_stage == "active"]
        by_key: dict[str, list] = {}
        for run in live:
            by_key.setdefault(run.data.tags.get(keys.TAG_TRIAL_KEY), []).append(run)
        finished_twice = sum(max(0, sum(r.info.status == "FINISHED" for r in children
                                        if r.data.tags.get(keys.TAG_TRIAL_KEY) == key) - 1) for key in expected)
        return {
            "trials": len(expected),
            "lost": sum(not any(r.info.status == "FINISHED" for r in by_key.get(key, [])) for key in expected),
            "duplicated": sum(max(0, len(runs) - 1) for runs in by_key.values()) + finished_twice
                          + max(0, len([p for p in parents if p.info.lifecycle_stage == "active"]) - 1),
            "stuck": sum(r.info.status == "RUNNING" for r in children + parents),
            "attempts": len(children),
            "died": sum("process died" in r.data.tags.get("mlflow.note.content", "")
                        or "earlier attempt of this trial stopped" in r.data.tags.get("mlflow.note.content", "")
                        for r in children),
        }
