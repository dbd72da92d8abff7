"""Fault drill: a small sweep must lose nothing when its driver is SIGKILLed again and again and its
tracking server dies mid-sweep.

    python scripts/fault_drill.py [--kills 10] [--seed 0] [--workdir DIR]

1. starts a `vqbench server` (SQLite store in the work dir) and runs the sweep once untouched: the
   baseline wall time;
2. runs the same sweep again under another name and SIGKILLs its driver at ``--kills`` random moments
   (uniform in ``--kill-window`` seconds after each start), each time starting it again with
   ``--resume`` (a sweep that ends between two kills is done; the next kills go to a new one). Only the
   driver is killed, as when its job is OOM-killed: the local Ray it started goes down with it, except
   what Ray leaves behind (its agents: listed, then killed; not counted as time);
3. resumes it once more and, while a trial runs, SIGKILLs the tracking server and restarts it on the same
   port and store ``--server-down`` seconds later; the trials' retries must carry them across;
4. reads the store and prints, per sweep, lost runs (a trial with no visible FINISHED run), duplicated
   runs (a trial with more than one visible run, or finished twice), stuck runs (RUNNING, deleted ones
   included, parent too), and the wall-time cost against the baseline. Exit status 0 when all are 0.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
        self.uri = f"http://127.0.0.1:{self.port}"
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
        wait_until_serving(self.uri, self.server)

    def kill_server(self) -> None:
        os.killpg(self.server.pid, signal.SIGKILL)
        self.server.wait()

    def start_sweep(self, name: str) -> subprocess.Popen:
        state = self.workdir / "runs" / name / "vqbench_sweep.json"
        what = ["--resume", name] if state.exists() else ["--config", str(self.sweep_file), "--name", name]
        self.invocations += 1
        return subprocess.Popen(
            [sys.executable, "-m", "benchmark.cli", "sweep", *what, "--storage-path", str(self.workdir / "runs"),
             "--tracking-uri", self.uri, "--num-cpus", str(self.num_cpus), "--no-system-metrics"],
            env=self.env, start_new_session=True, stdout=open(self.workdir / f"{name}.log", "a"),
            stderr=subprocess.STDOUT)

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
    def runs(self, name: str) -> tuple[list, list]:
        """(parent runs, child runs) of sweep ``name``, deleted ones included."""
        from mlflow.entities import ViewType
        from mlflow.tracking import MlflowClient

        from benchmark.tracking import keys
        from sweeps.mlflow_runs import PARENT_RUN_TAG

        client = MlflowClient(self.uri)
        ids = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(ids, filter_string=f"tags.`{keys.TAG_SWEEP}` = '{name}'",
                                  run_view_type=ViewType.ALL, max_results=5000)
        parents = [r for r in runs if r.data.tags.get(keys.TAG_KIND) == "sweep"]
        parent_ids = {p.info.run_id for p in parents}
        return parents, [r for r in runs if r.data.tags.get(PARENT_RUN_TAG) in parent_ids]

    def finished_trials(self, name: str) -> int:
        return sum(r.info.status == "FINISHED" and r.info.lifecycle_stage == "active" for r in self.runs(name)[1])

    def running_trials(self, name: str) -> int:
        return sum(r.info.status == "RUNNING" and r.info.lifecycle_stage == "active" for r in self.runs(name)[1])

    def audit(self, name: str) -> dict[str, int]:
        from benchmark.tracking import keys
        from sweeps.grid import SweepGrid, expand_grid
        from sweeps.launch import load_state

        state = load_state(str(self.workdir / "runs"), name)
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
        }


def drill(args) -> int:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="vqbench-drill-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    runner = Drill(workdir, args.steps, args.num_cpus)
    runner.start_server()
    try:
        print(f"fault drill in {workdir}: sweeps of {len(SIZES) * 2} trials (vq, simvq x K {SIZES}, d 4, "
              f"{args.steps} steps), local Ray with {args.num_cpus} CPUs, tracking server {runner.uri}, "
              f"seed {args.seed}", flush=True)
        baseline, code = runner.run_to_end("baseline")
        print(f"baseline, no faults: {baseline:.0f} s (exit {code})", flush=True)

        # Driver kills. A sweep that ends before its next kill lands is done: the next kills go to a new
        # sweep (drill-2, ...), so that every kill hits a driver at work.
        spent, moments, rounds = 0.0, [], ["drill-1"]
        low, high = args.kill_window
        while len(moments) < args.kills:
            moment = rng.uniform(low, high)
            started = time.monotonic()
            driver = runner.start_sweep(rounds[-1])
            try:
                code = driver.wait(timeout=moment)
                spent += time.monotonic() - started
                print(f"  {rounds[-1]} ended (exit {code}) before a kill at {moment:.1f} s", flush=True)
                rounds.append(f"drill-{len(rounds) + 1}")
            except subprocess.TimeoutExpired:
                driver.send_signal(signal.SIGKILL)
                driver.wait()
                spent += time.monotonic() - started
                moments.append(moment)
                print(f"  kill {len(moments):2d}/{args.kills}: {rounds[-1]} at {moment:4.1f} s after its start; "
                      f"trials finished: {runner.finished_trials(rounds[-1])}", flush=True)
            runner.kill_driver(driver)  # reap what the driver left behind, outside the timing

        # The server dies while a trial runs: resume the last sweep (a new one if it is done), wait for a
        # RUNNING trial, SIGKILL the server, restart it on the same port and store.
        started = time.monotonic()
        if runner.finished_trials(rounds[-1]) == len(SIZES) * 2:
            rounds.append(f"drill-{len(rounds) + 1}")
        driver = runner.start_sweep(rounds[-1])
        server_phase = f"{rounds[-1]} ended before a trial ran: the server was not killed mid-sweep"
        deadline = time.monotonic() + 300
        while driver.poll() is None and time.monotonic() < deadline:
            if runner.running_trials(rounds[-1]):
                runner.kill_server()
                time.sleep(args.server_down)
                runner.start_server()
                server_phase = (f"SIGKILLed while a trial of {rounds[-1]} ran, restarted {args.server_down:.0f} s "
                                "later (plus its start-up)")
                break
            time.sleep(0.5)
        code = driver.wait()
        extra = 0
        while code != 0 and extra < 3:  # a sweep that did not survive the server's death is resumed
            extra += 1
            code = runner.start_sweep(rounds[-1]).wait()
        spent += time.monotonic() - started
        figures = {name: runner.audit(name) for name in ["baseline", *rounds]}
    finally:
        if runner.server is not None and runner.server.poll() is None:
            os.killpg(runner.server.pid, signal.SIGTERM)
            runner.server.wait()

    cost = spent - baseline * len(rounds)
    names = sorted(set(runner.orphans))
    print(f"\ndriver SIGKILLs: {len(moments)}, at {', '.join(f'{m:.1f}' for m in moments)} s after each start")
    print(f"processes a SIGKILLed driver left alive (3 s later; killed by the drill): {len(runner.orphans)}"
          + (f" ({', '.join(names)})" if names else ""))
    print(f"tracking server: {server_phase}; the sweep then exited {code}"
          + (f" after {extra} more resume(s)" if extra else " with no further resume"))
    print(f"wall time: baseline {baseline:.0f} s per sweep; the {len(rounds)} drilled sweep(s) took {spent:.0f} s "
          f"over {runner.invocations - 1} invocations: +{cost:.0f} s, {cost / max(len(moments), 1):.1f} s per "
          "driver kill")
    print(f"\n{'sweep':10s} {'trials':>6s} {'lost':>5s} {'duplicated':>10s} {'stuck RUNNING':>13s} {'runs made':>9s}")
    for name, audit in figures.items():
        print(f"{name:10s} {audit['trials']:>6d} {audit['lost']:>5d} {audit['duplicated']:>10d} "
              f"{audit['stuck']:>13d} {audit['attempts']:>9d}")
    bad = sum(a[k] for a in figures.values() for k in ("lost", "duplicated", "stuck"))
    print("\nPASS: nothing lost, duplicated or stuck" if bad == 0 else f"\nFAIL: {bad} problem run(s)")
    return 0 if bad == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10, help="driver SIGKILLs (default 10)")
    parser.add_argument("--kill-window", type=float, nargs=2, default=(2.0, 20.0), metavar=("LOW", "HIGH"),
                        help="each kill lands uniformly in LOW..HIGH s after the driver starts (default 2 20)")
    parser.add_argument("--server-down", type=float, default=3.0, help="seconds the tracking server stays dead")
    parser.add_argument("--steps", type=int, default=150, help="steps per trial (default 150)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--workdir", help="where the store, logs and Tune results go (default: a new temp dir)")
    return drill(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
