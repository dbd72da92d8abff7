"""Inside the child process: build one configuration, time its step and read its peak memory.

A step is forward + backward of ``quantized.square().mean() + aux_loss`` on ``(1, tokens, dim)``
Gaussian latents that require grad (the floor: its forward product only); the time is the median over
repeats after warm-up (synchronised on CUDA); the peak memory is the process's peak resident set
(VmHWM) on CPU, torch.cuda.max_memory_allocated on CUDA. :func:`worker_main` is what
``python -m benchmark.speed --worker CASE_JSON`` runs; it prints one result line for the parent."""
from __future__ import annotations

import json
import statistics
import time

from benchmark.speed.config import FLOOR, RESULT_MARKER, BenchCase
from benchmark.speed.floor import matmul_floor


def measure(case: BenchCase) -> dict:
    """Run ``case`` in this process and return its measurements. Meant for a fresh child process
    (see :func:`benchmark.speed.runner.run_case`): peak memory is the whole process's."""
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
    see ``quantizers.own_dims.own_latent_dim``) is measured at its own dim between ``Linear(dim -> own)``
    and ``Linear(own -> dim)``: what the backbone's 1x1 projections do around it in training, and what
    FSQ, LFQ and the reference's LFQ do inside themselves. Other refusals are raised (recorded unsupported)."""
    from dataclasses import replace

    from torch import nn

    import quantizers
    from quantizers.own_dims import OWN_DIM_QUANTIZERS, own_latent_dim

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


def worker_main(case_json: str) -> int:
    """Measure the case given as JSON and print its record on one line after :data:`RESULT_MARKER`."""
    case = BenchCase(**json.loads(case_json))
    print(RESULT_MARKER + json.dumps(measure(case)), flush=True)
    return 0
