"""Time one training step and measure peak memory of every quantizer, beside vector-quantize-pytorch
and the matrix-multiply floor (issue 7).

Each configuration (implementation x codebook size K x dim) runs in a fresh Python process, so its
peak memory is its own: on CPU the child's peak resident set (VmHWM), on CUDA
torch.cuda.max_memory_allocated. A step is forward + backward of
``quantized.square().mean() + aux_loss`` on ``(1, tokens, dim)`` Gaussian latents that require grad;
the time is the median over repeats after warm-up (synchronised on CUDA). The floor is the
``N x K x d`` product ``z @ C^T`` alone (forward, no autograd) that any exact nearest-code search
must compute. A configuration that runs out of memory, crashes, cannot be configured, or passes the
per-configuration timeout is recorded with that status; the benchmark goes on.

Writes ``speed.json`` (raw records + machine), ``speed.md`` (the table) and ``speed_vs_K.png`` to
``--out``.

examples:
  vqbench bench --quick
  vqbench bench --quantizers vq,simvq --sizes 2^10,2^16 --dims 64 --timeout 120
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmark.speed.reference import REFERENCE_FOR_METHOD, REFERENCE_KWARGS

FLOOR = "floor:matmul"
RESULT_MARKER = "VQBENCH_SPEED_RESULT "
DEFAULT_SIZES = (1 << 10, 1 << 13, 1 << 16, 1 << 18)
DEFAULT_DIMS = (8, 64)
QUICK_SIZES = (64, 256)
QUICK_DIMS = (8,)
#: Tile edge of the floor's blocked product (1024 x 1024 fp32 scores = 4 MiB, cache-sized).
FLOOR_BLOCK = 1024
STATUSES = ("ok", "out_of_memory", "timeout", "unsupported", "error", "killed", "skipped")


# ============================================================================ one configuration
@dataclass(frozen=True)
class BenchCase:
    """One configuration, measured in its own process.

    implementation: a registered quantizer name (ours), a ``ref:...`` id from
    :data:`benchmark.speed.reference.REFERENCE_KWARGS`, or ``floor:matmul``.
    time_budget_s: after warm-up, stop repeating once this much time is spent (at least one repeat).
    """

    implementation: str
    codebook_size: int
    dim: int
    tokens: int
    repeats: int = 3
    warmup: int = 1
    threads: int = 1
    device: str = "cpu"
    time_budget_s: float = 60.0

    @property
    def source(self) -> str:
        if self.implementation == FLOOR:
            return "floor"
        return "vector-quantize-pytorch" if self.implementation.startswith("ref:") else "vqbench"

    @property
    def method(self) -> str:
        """The method this row belongs to (our registry name), ``floor`` for the matmul floor."""
        if self.implementation == FLOOR:
            return "floor"
        for method, reference in REFERENCE_FOR_METHOD.items():
            if reference == self.implementation:
                return method
        return self.implementation


def measure(case: BenchCase) -> dict:
    """Run ``case`` in this process and return its measurements. Meant for a fresh child process
    (see :func:`run_case`): peak memory is the whole process's."""
    import torch

    torch.set_num_threads(case.threads)
    device = torch.device(case.device)
    on_cuda = device.type == "cuda"
    generator = torch.Generator(device="cpu").manual_seed(0)
    torch.manual_seed(0)
    latents = torch.randn(1, case.tokens, case.dim, generator=generator).to(device)

    stage = "build"
    try:
        step, parameters, effective_codebook_size, note = _build_step(case, latents)
        stage = "run"
        if on_cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            baseline = torch.cuda.memory_allocated(device)
        else:
            baseline = _proc_status_bytes("VmRSS")
        for _ in range(case.warmup):
            step()
        times: list[float] = []
        spent = 0.0
        while len(times) < case.repeats and (not times or spent < case.time_budget_s):
            if on_cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            step()
            if on_cuda:
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
            spent += times[-1]
        peak = torch.cuda.max_memory_allocated(device) if on_cuda else _proc_status_bytes("VmHWM")
    except Exception as error:  # recorded, not raised: one bad configuration must not end the run
        return {"status": _classify(error, stage), "error": f"{type(error).__name__}: {error}"[:2000]}

    median = statistics.median(times)
    record = {
        "status": "ok",
        "step_time_s": median,
        "step_times_s": times,
        "repeats_done": len(times),
        "peak_memory_bytes": int(peak),
        "baseline_memory_bytes": int(baseline),
        "extra_memory_bytes": int(peak - baseline),
        "memory_kind": "cuda_max_memory_allocated" if on_cuda else "process_peak_rss (VmHWM)",
        "process_peak_rss_bytes": _proc_status_bytes("VmHWM"),
        "parameters": parameters,
        "effective_codebook_size": effective_codebook_size,
    }
    if note:
        record["note"] = note
    if case.implementation == FLOOR:
        record["gflops_per_s"] = 2.0 * case.tokens * case.codebook_size * case.dim / median / 1e9
    return record


def _build_step(case: BenchCase, latents):
    """Return ``(step, parameter_count, effective_codebook_size, note)``: ``step()`` does one forward +
    backward (or the floor's forward product); the size is the number of codes the implementation can
    emit (FSQ's level product can differ slightly from the requested K); the note says how the
    configuration differs from a plain build at (dim, K), if it does."""
    import torch

    device = latents.device
    note = ""
    if case.implementation == FLOOR:
        codebook = torch.randn(case.codebook_size, case.dim, device=device)

        def floor_step():
            matmul_floor(latents[0], codebook)

        return floor_step, 0, case.codebook_size, ""

    if case.implementation.startswith("ref:"):
        from benchmark.speed.reference import build_reference

        reference = build_reference(case.implementation, case.dim, case.codebook_size)
        module, call = reference.module.to(device), reference.call
        effective_codebook_size = reference.effective_codebook_size
    else:
        module, note = build_ours(case.implementation, case.dim, case.codebook_size)
        module = module.to(device).train()
        effective_codebook_size = module.codebook_size

        def call(z):
            output = module(z)
            return output.quantized, output.loss

    z = latents.clone().requires_grad_(True)

    def train_step():
        module.zero_grad(set_to_none=True)
        z.grad = None
        quantized, aux_loss = call(z)
        (quantized.square().mean() + aux_loss).backward()

    return train_step, sum(p.numel() for p in module.parameters()), effective_codebook_size, note


def build_ours(name: str, dim: int, codebook_size: int):
    """Our quantizer ``name`` at ``(dim, codebook_size)`` and a note (empty when built as asked).

    A quantizer whose latent dim is set by K and that has no projections of its own (``bsq``: K = 2**dim,
    see ``sweeps.grid.own_latent_dim``) is measured at its own dim between ``Linear(dim -> own)`` and
    ``Linear(own -> dim)``: what the backbone's 1x1 projections do around it in training, and what FSQ,
    LFQ and the reference's LFQ do inside themselves. Other refusals are raised (recorded unsupported)."""
    from dataclasses import replace

    from torch import nn

    import quantizers
    from sweeps.grid import OWN_DIM_QUANTIZERS, own_latent_dim

    try:
        return quantizers.build(name, dim=dim, codebook_size=codebook_size), ""
    except ValueError:
        own_dim = own_latent_dim(name, codebook_size)[0] if name in OWN_DIM_QUANTIZERS else dim
        if own_dim == dim:
            raise

    class Projected(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.codebook_size = inner, inner.codebook_size
            self.project_in, self.project_out = nn.Linear(dim, own_dim), nn.Linear(own_dim, dim)

        def forward(self, z):
            output = self.inner(self.project_in(z))
            return replace(output, quantized=self.project_out(output.quantized))

    note = f"{name} at its own latent dim {own_dim}, between Linear({dim}->{own_dim}) and Linear({own_dim}->{dim})"
    return Projected(quantizers.build(name, dim=own_dim, codebook_size=codebook_size)), note


def matmul_floor(z, codebook, *, block_rows: int = FLOOR_BLOCK, block_codes: int = FLOOR_BLOCK):
    """``z @ C^T`` for ``z`` ``(N, d)`` and ``C`` ``(K, d)``: the ``2 N K d`` FLOPs every exact
    nearest-code search pays, and nothing else. The product is computed in ``block_rows x block_codes``
    tiles written into one reused buffer, because that is the fastest layout measured for it: on the
    2-core dev machine (N = 8192, K = 2^16, d = 64, 2 threads) one-shot ``z @ C.t()`` took 1.2 s, row
    chunks of 2^24 scores 0.71 s, 1024 x 1024 tiles 0.39 s (1024 x 4096: 0.44 s). A floor must be the
    fastest way to do the unavoidable work, else a quantizer could "beat" it. Returns the buffer so
    the work cannot be skipped."""
    import torch

    rows = max(1, min(z.shape[0], block_rows))
    codes = max(1, min(codebook.shape[0], block_codes))
    buffer = torch.empty(rows * codes, dtype=z.dtype, device=z.device)
    code_blocks = [codebook[start:start + codes].t() for start in range(0, codebook.shape[0], codes)]
    with torch.no_grad():
        for start in range(0, z.shape[0], rows):
            z_block = z[start:start + rows]
            for codes_t in code_blocks:
                out = buffer[: z_block.shape[0] * codes_t.shape[1]].view(z_block.shape[0], codes_t.shape[1])
                torch.mm(z_block, codes_t, out=out)
    return buffer


def _classify(error: BaseException, stage: str) -> str:
    message = str(error).lower()
    if isinstance(error, MemoryError) or any(
        phrase in message for phrase in ("out of memory", "can't allocate memory", "not enough memory")
    ):
        return "out_of_memory"
    if stage == "build" and isinstance(error, (ValueError, AssertionError)):
        return "unsupported"  # the implementation cannot be configured at this (dim, K)
    return "error"


def _proc_status_bytes(key: str) -> int:
    """A ``/proc/self/status`` memory field in bytes (Linux); ru_maxrss elsewhere."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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
        child = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=environment,
                                 cwd=Path(__file__).resolve().parent.parent)
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


def _worker_main(case_json: str) -> int:
    case = BenchCase(**json.loads(case_json))
    print(RESULT_MARKER + json.dumps(measure(case)), flush=True)
    return 0


# ============================================================================ the grid
@dataclass
class BenchSettings:
    """The whole run: our quantizers x sizes x dims, with references and the floor beside them."""

    quantizers: list[str]
    sizes: list[int]
    dims: list[int]
    tokens: int
    repeats: int = 3
    warmup: int = 1
    timeout_s: float = 120.0
    threads: int = 1
    device: str = "cpu"
    memory_limit_bytes: int | None = None
    include_reference: bool = True
    include_floor: bool = True

    def implementations(self) -> list[str]:
        from benchmark.speed.reference import reference_available

        names = list(self.quantizers)
        if self.include_reference and reference_available():
            names += [REFERENCE_FOR_METHOD[name] for name in self.quantizers if name in REFERENCE_FOR_METHOD]
        if self.include_floor:
            names.append(FLOOR)
        return names

    def cases(self) -> list[BenchCase]:
        """Small K first, so that a timeout at one K can skip the larger ones."""
        return [
            BenchCase(implementation=name, codebook_size=size, dim=dim, tokens=self.tokens,
                      repeats=self.repeats, warmup=self.warmup, threads=self.threads, device=self.device,
                      time_budget_s=self.timeout_s / 4)
            for dim in self.dims for size in sorted(self.sizes) for name in self.implementations()
        ]

    def command(self) -> str:
        """The command line that reproduces this run."""
        parts = ["vqbench", "bench", "--quantizers", ",".join(self.quantizers),
                 "--sizes", ",".join(str(s) for s in self.sizes), "--dims", ",".join(str(d) for d in self.dims),
                 "--tokens", str(self.tokens), "--repeats", str(self.repeats), "--warmup", str(self.warmup),
                 "--timeout", f"{self.timeout_s:g}", "--threads", str(self.threads), "--device", self.device]
        if self.memory_limit_bytes:
            parts += ["--memory-limit", f"{self.memory_limit_bytes / 2**30:.1f}"]
        if not self.include_reference:
            parts.append("--no-reference")
        if not self.include_floor:
            parts.append("--no-floor")
        return shlex.join(parts)


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
                 f"dim={case.dim:<3d} {_cell_time(record):>10s} {_cell_memory(record):>9s}")
    return records


def machine_info(settings: BenchSettings) -> dict:
    import platform

    import torch

    from benchmark.speed.reference import reference_version

    info = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": settings.command(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": settings.threads,
        "device": settings.device,
        "vector_quantize_pytorch": reference_version(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "memory_total_bytes": _meminfo_bytes("MemTotal"),
        "memory_available_at_start_bytes": _meminfo_bytes("MemAvailable"),
        "memory_limit_bytes": settings.memory_limit_bytes,
        "timeout_s": settings.timeout_s,
        "step": "forward + backward of quantized.square().mean() + aux_loss; floor: forward z @ C^T only",
    }
    if settings.device.startswith("cuda"):
        info["cuda_device"] = torch.cuda.get_device_name(torch.device(settings.device))
    return info


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor()


def _meminfo_bytes(key: str) -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# ============================================================================ reporting
_STATUS_LABEL = {"out_of_memory": "OOM", "timeout": "timeout", "unsupported": "n/a", "error": "error",
                 "killed": "killed", "skipped": "skipped"}


def _cell_time(record: dict | None) -> str:
    if record is None:
        return "—"
    if record.get("status") != "ok":
        return _STATUS_LABEL.get(record.get("status"), str(record.get("status")))
    seconds = record["step_time_s"]
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def _cell_memory(record: dict | None) -> str:
    if record is None or not record.get("peak_memory_bytes"):
        return "—"
    size = record["peak_memory_bytes"]
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def _ratio(numerator: dict | None, denominator: dict | None, key: str) -> str:
    if not numerator or not denominator or numerator.get("status") != "ok" or denominator.get("status") != "ok":
        return "—"
    top, bottom = numerator.get(key), denominator.get(key)
    if top is None or not bottom or bottom <= 0:
        return "—"
    ratio = top / bottom
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}"  # keep two significant digits when small


def markdown_table(records: list[dict], info: dict | None = None) -> str:
    """One table per dim: each of our methods at each K beside its reference and the floor."""
    lookup = {(r["implementation"], r["codebook_size"], r["dim"]): r for r in records}
    methods = [m for m in dict.fromkeys(r["method"] for r in records if r["source"] == "vqbench")]
    lines = []
    if info:
        lines += [
            f"Command: `{info['command']}`  ",
            f"Machine: {info['cpu']} ({info['cpu_count']} cores), torch {info['torch']}, "
            f"{info['torch_threads']} thread(s), device {info['device']}"
            + (f" ({info['cuda_device']})" if info.get("cuda_device") else "")
            + f", vector-quantize-pytorch {info['vector_quantize_pytorch'] or 'not installed'}, "
            f"{info['date_utc']}, load average at start {info['load_average_at_start']}.  ",
            f"Step: {info['step']}; median of up to {records[0].get('repeats', '?') if records else '?'} "
            f"repeats after warm-up. Memory: peak resident set of the configuration's own process "
            f"(CUDA: max_memory_allocated). Memory ratio: extra memory above the process's baseline "
            f"before the first step (imports, inputs and parameters excluded).",
            "",
        ]
    for dim in sorted({r["dim"] for r in records}):
        lines += [f"### dim = {dim}", "",
                  "| method | K | ours | reference | floor | ours / floor | ours / reference "
                  "| ours peak mem | reference peak mem | memory ratio |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for method in methods:
            for size in sorted({r["codebook_size"] for r in records if r["dim"] == dim}):
                ours = lookup.get((method, size, dim))
                if ours is None:
                    continue
                reference = lookup.get((REFERENCE_FOR_METHOD.get(method, ""), size, dim))
                floor = lookup.get((FLOOR, size, dim))
                lines.append(
                    f"| {method} | {size:,} | {_cell_time(ours)} | {_cell_time(reference)} | {_cell_time(floor)} "
                    f"| {_ratio(ours, floor, 'step_time_s')} | {_ratio(ours, reference, 'step_time_s')} "
                    f"| {_cell_memory(ours)} | {_cell_memory(reference)} "
                    f"| {_ratio(ours, reference, 'extra_memory_bytes')} |"
                )
        lines.append("")
    notes = [r for r in records if r.get("note")]
    if notes:
        lines += ["Notes:", ""]
        lines += [f"- {r['implementation']} K={r['codebook_size']:,} dim={r['dim']}: {r['note']}" for r in notes]
        lines.append("")
    failures = [r for r in records if r.get("status") != "ok"]
    if failures:
        lines += ["Not measured:", ""]
        lines += [f"- {r['implementation']} K={r['codebook_size']:,} dim={r['dim']}: {r['status']} "
                  f"({r.get('error', '')})".replace("|", "/") for r in failures]
        lines.append("")
    return "\n".join(lines)


def plot_step_times(records: list[dict], path: Path) -> None:
    """Step time vs K, log-log, one panel per dim: ours solid, reference dashed, floor dotted black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = sorted({r["dim"] for r in records})
    figure, axes = plt.subplots(1, len(dims), figsize=(6 * len(dims), 4.5), squeeze=False)
    colours = {}
    for axis, dim in zip(axes[0], dims):
        for implementation in dict.fromkeys(r["implementation"] for r in records):
            points = sorted((r["codebook_size"], r["step_time_s"]) for r in records
                            if r["implementation"] == implementation and r["dim"] == dim and r.get("status") == "ok")
            if not points:
                continue
            method = next(r["method"] for r in records if r["implementation"] == implementation)
            style = {"vqbench": "-", "vector-quantize-pytorch": "--", "floor": ":"}[
                next(r["source"] for r in records if r["implementation"] == implementation)]
            colour = "black" if method == "floor" else colours.setdefault(method, f"C{len(colours)}")
            label = implementation.replace("ref:", "vector-quantize-pytorch ")
            axis.plot(*zip(*points), style, marker="o", color=colour, label=label)
        axis.set(xscale="log", yscale="log", xlabel="codebook size K", ylabel="step time (s)",
                 title=f"dim = {dim}")
        sizes = sorted({r["codebook_size"] for r in records if r["dim"] == dim})
        axis.set_xticks(sizes, [_power_of_two_label(size) for size in sizes])
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _power_of_two_label(size: int) -> str:
    exponent = size.bit_length() - 1
    return f"$2^{{{exponent}}}$" if size == 1 << exponent else f"{size:,}"


def write_results(records: list[dict], info: dict, out_dir: Path) -> dict[str, Path]:
    """Write speed.json, speed.md and speed_vs_K.png to ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "speed.json", "markdown": out_dir / "speed.md", "figure": out_dir / "speed_vs_K.png"}
    paths["json"].write_text(json.dumps({"machine": info, "records": records}, indent=2) + "\n")
    paths["markdown"].write_text("# Quantizer step time and memory\n\n" + markdown_table(records, info) + "\n")
    if any(r.get("status") == "ok" for r in records):
        plot_step_times(records, paths["figure"])
    else:
        del paths["figure"]
    return paths


# ============================================================================ the command
def _parse_ints(name: str, text: str) -> list[int]:
    """``"1024,2^13"`` -> ``[1024, 8192]``."""
    values = []
    for item in text.split(","):
        item = item.strip()
        try:
            if "^" in item:
                base, exponent = item.split("^")
                value = int(base) ** int(exponent)
            else:
                value = int(item)
        except ValueError:
            raise ValueError(f"{name} must be comma-separated integers or powers like 2^16; got {item!r}") from None
        if value < 1:
            raise ValueError(f"{name} must be positive; got {value}")
        values.append(value)
    if not values:
        raise ValueError(f"{name} is empty")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quantizers", default="all",
                        help="comma-separated registered quantizers, or 'all' (default)")
    parser.add_argument("--sizes", default=None, help="codebook sizes K, e.g. 2^10,2^13,2^16,2^18 (default)")
    parser.add_argument("--dims", default=None, help="latent dims (default 8,64)")
    parser.add_argument("--tokens", type=int, default=None,
                        help="tokens N per step (default 8192 on CPU, 65536 on CUDA)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps; the median is reported (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds per configuration before it is killed and recorded as timeout (default 120)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--memory-limit", type=float, default=None,
                        help="GiB of resident memory at which a configuration is killed and recorded as "
                             "out of memory (default: 75%% of the memory available at start)")
    parser.add_argument("--no-reference", action="store_true", help="skip vector-quantize-pytorch")
    parser.add_argument("--no-floor", action="store_true", help="skip the matrix-multiply floor")
    parser.add_argument("--quick", action="store_true",
                        help="tiny grid: K 64,256, dim 8, 256 tokens, 1 repeat (flags given explicitly still win)")
    parser.add_argument("--out", default="results/speed", help="output folder (default results/speed)")


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """Validate the flags (ValueError naming the flag) and resolve the defaults."""
    import quantizers

    from benchmark.device import resolve_device

    registered = quantizers.available()
    if args.quantizers == "all":
        names = registered
    else:
        names = [n.strip() for n in args.quantizers.split(",") if n.strip()]
        unknown = [n for n in names if n not in registered]
        if unknown or not names:
            raise ValueError(f"--quantizers must be 'all' or names from {registered}; got {args.quantizers!r}")
    device = str(resolve_device(args.device))
    sizes = _parse_ints("--sizes", args.sizes) if args.sizes else list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    if min(sizes) < 2:
        raise ValueError(f"--sizes must be >= 2; got {min(sizes)}")
    dims = _parse_ints("--dims", args.dims) if args.dims else list(QUICK_DIMS if args.quick else DEFAULT_DIMS)
    tokens = args.tokens or (256 if args.quick else 65536 if device.startswith("cuda") else 8192)
    repeats = 1 if args.quick and args.repeats == 3 else args.repeats
    for flag, value in (("--tokens", tokens), ("--repeats", repeats)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1; got {value}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0; got {args.warmup}")
    if args.timeout <= 0:
        raise ValueError(f"--timeout must be > 0 seconds; got {args.timeout}")
    threads = args.threads if args.threads is not None else _usable_cores()
    if threads < 1:
        raise ValueError(f"--threads must be >= 1; got {threads}")
    if args.memory_limit is not None:
        if args.memory_limit <= 0:
            raise ValueError(f"--memory-limit must be > 0 GiB; got {args.memory_limit}")
        memory_limit = int(args.memory_limit * 2**30)
    else:
        available = _meminfo_bytes("MemAvailable")
        memory_limit = int(0.75 * available) if available else None
    return BenchSettings(quantizers=names, sizes=sizes, dims=dims, tokens=tokens, repeats=repeats,
                         warmup=args.warmup, timeout_s=args.timeout, threads=threads, device=device,
                         memory_limit_bytes=memory_limit, include_reference=not args.no_reference,
                         include_floor=not args.no_floor)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    from benchmark.speed.reference import reference_available

    if settings.include_reference and not reference_available():
        print("vector-quantize-pytorch is not installed: measuring without the reference "
              "(pip install 'vqbench[bench]')", file=sys.stderr)
    info = machine_info(settings)
    print(f"{len(settings.cases())} configurations, each in its own process; {settings.command()}")
    records = run_benchmark(settings)
    paths = write_results(records, info, Path(args.out))
    print()
    print(markdown_table(records))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[2]))
    from benchmark.cli import main

    sys.exit(main(["bench", *sys.argv[1:]]))
