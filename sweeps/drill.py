"""Fault drill: a small sweep must lose nothing when its driver or its trial workers are SIGKILLed again
and again, its tracking server dies mid-sweep (once right after committing a write, before replying),
the store stays down longer than the retry budget, and when it logs to the default SQLite file.

    python scripts/fault_drill.py [--kills 10] [--worker-kills 0.5] [--seed 0] [--workdir DIR]

1. starts a `vqbench server` (SQLite store in the work dir) and runs the sweep once untouched: the
   baseline wall time;
2. runs the same sweep again under another name and, at ``--kills`` random moments (uniform in
   ``--kill-window`` seconds after each start), SIGKILLs either its driver (then starts it again with
   ``--resume``; what Ray leaves behind is listed, then killed, not counted as time) or, a share
   ``--worker-kills`` of the time, one running trial's worker process (as the kernel's OOM killer
   would: Ray Tune retries the trial; the driver runs on). A sweep that ends between two kills is done;
   the next kills go to a new one;
3. resumes it once more and, while a trial runs, SIGKILLs the tracking server and restarts it on the same
   port and store ``--server-down`` seconds later; the trials' retries must carry them across;
3b. all clients talk to the server through a loopback proxy: once, the server commits a ``runs/create``
   and is SIGKILLed before its reply leaves (the proxy drops it), then restarted;
3c. the store stays down ``--long-outage`` seconds, longer than the retry budget (``VQBENCH_MLFLOW_RETRIES``
   = 3 for that sweep): trials fail with a clear error, the sweep is resumed once the server is back;
3d. a sweep with no --tracking-uri (the default ./mlflow.db in its folder), its driver SIGKILLed twice;
4. reads the stores and prints, per sweep, lost runs (a trial with no visible FINISHED run), duplicated
   runs (a trial with more than one visible run, or finished twice), stuck runs (RUNNING, deleted ones
   included, parent too), and the wall-time cost against the baseline. Exit status 0 when all are 0.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

# Absolute imports: `python sweeps/drill.py` runs this file as a script, outside its package.
from sweeps.drill_faults import kill_rounds, resume_until_done
from sweeps.drill_proxy import CommitThenDieProxy  # noqa: F401 - re-exported
from sweeps.drill_runner import SIZES, TINY_BUDGET, Drill, sweep_file  # noqa: F401 - re-exported


def drill(args) -> int:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="vqbench-drill-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    runner = Drill(workdir, args.steps, args.num_cpus)
    runner.start_server()
    notes: list[str] = []
    try:
        print(f"fault drill in {workdir}: sweeps of {len(SIZES) * 2} trials (vq, simvq x K {SIZES}, d 4, "
              f"{args.steps} steps), local Ray with {args.num_cpus} CPUs, tracking server {runner.server_uri} "
              f"behind the proxy {runner.uri}, seed {args.seed}", flush=True)
        baseline, code = runner.run_to_end("baseline")
        print(f"baseline, no faults: {baseline:.0f} s (exit {code})", flush=True)

        # 1. Driver and trial-worker kills.
        rounds, events, spent = kill_rounds(runner, rng, args.kills, args.kill_window, args.worker_kills, "drill")
        code, extra = resume_until_done(runner, rounds[-1])
        notes.append(f"kills: {events.count('driver')} of the driver, {events.count('worker')} of a trial worker; "
                     f"{rounds[-1]} then exited {code} after {extra} resume(s)")

        # 2. The server is SIGKILLed while a trial runs and restarted --server-down seconds later.
        name = "server-kill"
        driver = runner.start_sweep(name)
        phase = f"{name} ended before a trial ran: the server was not killed mid-sweep"
        deadline = time.monotonic() + 300
        while driver.poll() is None and time.monotonic() < deadline:
            if runner.running_trials(name):
                runner.kill_server()
                time.sleep(args.server_down)
                runner.start_server()
                phase = f"SIGKILLed while a trial of {name} ran, restarted {args.server_down:.0f} s later"
                break
            time.sleep(0.5)
        code = driver.wait()
        more = resume_until_done(runner, name)[1] if code else 0
        notes.append(f"tracking server {phase}; the sweep exited {code}" + (f", then {more} resume(s)" if more else ""))
        rounds.append(name)

        # 3. The server commits a runs/create and dies before its reply leaves.
        name = "commit-then-die"
        died = threading.Event()

        def die():
            runner.kill_server()
            died.set()

        runner.proxy.arm(die)
        driver = runner.start_sweep(name)
        while driver.poll() is None and not died.wait(0.5):
            pass
        if died.is_set():
            time.sleep(args.server_down)
            runner.start_server()
        code = driver.wait()
        more = resume_until_done(runner, name)[1] if code else 0
        notes.append(f"server committed a runs/create and died before replying ({runner.proxy.fired} time(s)), "
                     f"restarted {args.server_down:.0f} s later; {name} exited {code}"
                     + (f", then {more} resume(s)" if more else ""))
        rounds.append(name)

        # 4. An outage longer than the retry budget (3 tries, a few seconds).
        name = "long-outage"
        short = {"VQBENCH_MLFLOW_RETRIES": "3"}
        driver = runner.start_sweep(name, env=short)
        deadline = time.monotonic() + 300
        outage = False
        while driver.poll() is None and time.monotonic() < deadline:
            if runner.running_trials(name):
                runner.kill_server()
                outage = True
                break
            time.sleep(0.5)
        during = None
        if outage:
            try:
                code = during = driver.wait(timeout=args.long_outage)
            except subprocess.TimeoutExpired:
                code = None
            runner.start_server()
        code = driver.wait() if code is None else code
        finished_code, more = resume_until_done(runner, name, env=short) if code else (0, 0)
        notes.append(f"store down {args.long_outage:.0f} s (retry budget: 3 tries): {name} exited {code} "
                     + ("during the outage" if during is not None else "after it (Tune retried the trials the outage "
                        "failed)") + (f"; {more} resume(s) after it, last exit {finished_code}" if more else ""))
        rounds.append(name)

        # 5. The default SQLite store (./mlflow.db beside the sweep), its driver killed twice.
        default_rounds, default_events, _ = kill_rounds(runner, rng, 2, args.kill_window, 0.0, "default",
                                                        default_store=True)
        code, more = resume_until_done(runner, default_rounds[-1], default_store=True)
        notes.append(f"default ./mlflow.db: {len(default_events)} driver kills; {default_rounds[-1]} exited {code} "
                     f"after {more} resume(s)")
        rounds += default_rounds
        total = spent
        figures = {name: runner.audit(name) for name in ["baseline", *rounds]
                   if (runner.workdir / ("default" if name.startswith("default") else "") / "runs" / name).exists()}
    finally:
        if runner.server is not None and runner.server.poll() is None:
            os.killpg(runner.server.pid, signal.SIGTERM)
            runner.server.wait()
        runner.proxy.close()

    names = sorted(set(runner.orphans))
    print(f"\nprocesses a SIGKILLed driver left alive (3 s later; killed by the drill): {len(runner.orphans)}"
          + (f" ({', '.join(names)})" if names else ""))
    for note in notes:
        print(note)
    print(f"wall time: baseline {baseline:.0f} s per sweep; the kill rounds took {total:.0f} s; "
          f"{runner.invocations} sweep invocations in all")
    print(f"\n{'sweep':16s} {'trials':>6s} {'lost':>5s} {'duplicated':>10s} {'stuck RUNNING':>13s} {'runs made':>9s} "
          f"{'died (labelled)':>15s}")
    for name, audit in figures.items():
        print(f"{name:16s} {audit['trials']:>6d} {audit['lost']:>5d} {audit['duplicated']:>10d} "
              f"{audit['stuck']:>13d} {audit['attempts']:>9d} {audit['died']:>15d}")
    bad = sum(a[k] for a in figures.values() for k in ("lost", "duplicated", "stuck"))
    print("\nPASS: nothing lost, duplicated or stuck" if bad == 0 else f"\nFAIL: {bad} problem run(s)")
    return 0 if bad == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10, help="driver SIGKILLs (default 10)")
    parser.add_argument("--kill-window", type=float, nargs=2, default=(2.0, 20.0), metavar=("LOW", "HIGH"),
                        help="each kill lands uniformly in LOW..HIGH s after the driver starts (default 2 20)")
    parser.add_argument("--server-down", type=float, default=3.0, help="seconds the tracking server stays dead")
    parser.add_argument("--worker-kills", type=float, default=0.5,
                        help="share of the kills aimed at a running trial's worker instead of the driver (default 0.5)")
    parser.add_argument("--long-outage", type=float, default=45.0,
                        help="seconds the store stays down in the outage longer than the retry budget (default 45)")
    parser.add_argument("--steps", type=int, default=150, help="steps per trial (default 150)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--workdir", help="where the store, logs and Tune results go (default: a new temp dir)")
    return drill(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
