"""What the speed benchmark measures: one configuration (:class:`BenchCase`: implementation x codebook
size K x dim, run in its own process) and the whole run (:class:`BenchSettings`: our quantizers x sizes x
dims, with the references and the matmul floor beside them), the default grids, and the command line
that reproduces a run."""
from __future__ import annotations

import shlex
from dataclasses import dataclass

from benchmark.speed.reference import REFERENCE_FOR_METHOD

FLOOR = "floor:matmul"
RESULT_MARKER = "VQBENCH_SPEED_RESULT "
DEFAULT_SIZES = (1 << 10, 1 << 13, 1 << 16, 1 << 18)
DEFAULT_DIMS = (8, 64)
QUICK_SIZES = (64, 256)
QUICK_DIMS = (8,)
STATUSES = ("ok", "out_of_memory", "timeout", "unsupported", "error", "killed", "skipped")


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
