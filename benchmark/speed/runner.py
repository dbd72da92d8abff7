"""In the parent process: run each configuration in a fresh child process, so that its peak memory is
its own, kill it past the per-configuration timeout or memory limit, and turn whatever happened (a
result, a timeout, an out-of-memory kill, a crash) into one record; then walk the whole grid, skipping
larger K after a timeout."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from benchmark.speed.config import RESULT_MARKER, BenchCase, BenchSettings
from benchmark.speed.reference import REFERENCE_KWARGS
from benchmark.speed.report import cell_memory, cell_time

#: The repository root: the child's working directory (``python -m benchmark.speed`` finds the package).
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def _rss_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_case(case: BenchCase, *, timeout_s: float, memory_limit_bytes: int | None) -> dict:
    """Measure ``case`` in a fresh child process. The child is killed when it passes ``timeout_s``
    or its resident memory passes ``memory_limit_bytes`` (polled; protects the other processes on a
    shared machine), and the record says so. Always returns a record, never raises for the case."""
    record = {"implementation": case.implementation, "method": case.method, "source": case.source,
              "codebook_size": case.codebook_size, "dim": case.dim, "tokens": case.tokens,
              "device": case.device, "threads": case.threads, "warmup": case.warmup,
              "repeats": case.repeats}
    if case.implementation in REFERENCE_KWARGS:
        record["reference_kwargs"] = REFERENCE_KWARGS[case.implementation]
    command = [sys.executable, "-m", "benchmark.speed", "--worker", json.dumps(asdict(case))]
    environment = dict(os.environ, OMP_NUM_THREADS=str(case.threads), MKL_NUM_THREADS=str(case.threads))
    started = time.perf_counter()
    killed_for = None
    max_rss_seen = 0
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        child = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=environment, cwd=REPOSITORY_ROOT)
        while child.poll() is None:
            max_rss_seen = max(max_rss_seen, _rss_of(child.pid))
            if time.perf_counter() - started > timeout_s:
                killed_for = "timeout"
            elif memory_limit_bytes and max_rss_seen > memory_limit_bytes:
                killed_for = "out_of_memory"
            if killed_for:
                child.kill()
                child.wait()
                break
            time.sleep(0.05)
        stdout.seek(0)
        stderr.seek(0)
        output, errors = stdout.read(), stderr.read()
    record["wall_time_s"] = time.perf_counter() - started
    result_lines = [line for line in output.splitlines() if line.startswith(RESULT_MARKER)]
    if killed_for == "timeout":
        record.update(status="timeout", error=f"killed after the per-configuration timeout of {timeout_s:g} s")
    elif killed_for == "out_of_memory":
        record.update(status="out_of_memory", peak_memory_bytes=max_rss_seen,
                      error=f"killed: resident memory passed the limit of {memory_limit_bytes / 2**30:.1f} GiB")
    elif result_lines:
        record.update(json.loads(result_lines[-1][len(RESULT_MARKER):]))
    elif child.returncode is not None and child.returncode < 0:
        # SIGKILL we did not send: almost always the kernel's OOM killer
        status = "out_of_memory" if child.returncode == -9 else "killed"
        record.update(status=status, peak_memory_bytes=max_rss_seen,
                      error=f"child killed by signal {-child.returncode}")
    else:
        tail = errors.strip().splitlines()[-5:]
        record.update(status="error", error=f"child exited {child.returncode}: " + " | ".join(tail))
    return record


def run_benchmark(settings: BenchSettings, *, progress=print) -> list[dict]:
    """Measure every case of ``settings``; returns one record per case. After a timeout, the same
    implementation at larger K (same dim) is recorded as skipped rather than waited for again."""
    records = []
    timed_out: dict[tuple[str, int], int] = {}
    cases = settings.cases()
    for number, case in enumerate(cases, 1):
        key = (case.implementation, case.dim)
        if key in timed_out and case.codebook_size > timed_out[key]:
            record = {"implementation": case.implementation, "method": case.method, "source": case.source,
                      "codebook_size": case.codebook_size, "dim": case.dim, "tokens": case.tokens,
                      "device": case.device, "threads": case.threads, "status": "skipped",
                      "error": f"timed out at K={timed_out[key]}, so larger K was not attempted"}
        else:
            record = run_case(case, timeout_s=settings.timeout_s, memory_limit_bytes=settings.memory_limit_bytes)
            if record["status"] == "timeout":
                timed_out[key] = case.codebook_size
        records.append(record)
        progress(f"[{number}/{len(cases)}] {case.implementation:24s} K={case.codebook_size:<7d} "
                 f"dim={case.dim:<3d} {cell_time(record):>10s} {cell_memory(record):>9s}")
    return records
