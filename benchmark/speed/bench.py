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
import sys
from pathlib import Path

from benchmark.speed.config import (
    DEFAULT_DIMS,
    DEFAULT_SIZES,
    FLOOR,
    QUICK_DIMS,
    QUICK_SIZES,
    BenchCase,
    BenchSettings,
)
from benchmark.speed.floor import matmul_floor
from benchmark.speed.machine import machine_info, meminfo_bytes, usable_cores
from benchmark.speed.measure import build_ours, measure
from benchmark.speed.report import markdown_table, write_results
from benchmark.speed.runner import run_benchmark, run_case

# The command's module is also where callers found the harness before it was split into rooms;
# these names stay importable from here.
__all__ = ["FLOOR", "BenchCase", "BenchSettings", "add_arguments", "build_ours", "main", "markdown_table",
           "matmul_floor", "measure", "run", "run_benchmark", "run_case", "settings_from_args", "write_results"]


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
    threads = args.threads if args.threads is not None else usable_cores()
    if threads < 1:
        raise ValueError(f"--threads must be >= 1; got {threads}")
    if args.memory_limit is not None:
        if args.memory_limit <= 0:
            raise ValueError(f"--memory-limit must be > 0 GiB; got {args.memory_limit}")
        memory_limit = int(args.memory_limit * 2**30)
    else:
        available = meminfo_bytes("MemAvailable")
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


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmark.speed.bench [flags]``: the command without the ``vqbench`` front end."""
    parser = argparse.ArgumentParser(prog="vqbench bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
