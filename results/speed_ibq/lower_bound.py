"""How close can exact IBQ get to the matmul floor on this CPU? The matrix products alone, measured.

Usage (from the repository root; run it alone on the machine, it is a timing):
    .venv/bin/python results/speed_ibq/lower_bound.py [--repeats 5] [--sizes 12,14,16]

The issue asked for IBQ at K = 2^16 within ~6x the floor (one N x K x d product, ``matmul_floor``). An exact
IBQ step needs more than one such product whatever the implementation: the index search, the softmax
statistics (the forward's logits), and a backward that must recompute the logits (keeping N x K values is
2 GiB at 2^16), form ``g C^T``, then ``G C`` and ``G^T z``: six N x K x d products, so 6x is the bound with
*zero* cost for everything else. Per K, each repeat times back to back, on one thread:

- floor: ``matmul_floor`` (1024 x 1024 tiles into one reused cache-sized buffer; nothing reaches memory).
- six in tiles: six floor-shaped products, the bound for a kernel that never leaves the cache.
- module's products: the six products exactly as quantizers/ibq.py issues them (the blocked search, then
  the (rows x K) chunk products of forward and backward, writing and reading its chunk buffers), and
  nothing else: what the module would cost with free exponentials and softmaxes.
- module: the whole forward + backward of ``quantized.square().mean() + loss`` (as ``vqbench bench``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmark.speed.floor import matmul_floor  # noqa: E402
from quantizers.ibq import IndexBackpropagationQuantizer, _chunk_rows  # noqa: E402
from quantizers.search import nearest_code  # noqa: E402

N, DIM = 8192, 64


def six_in_tiles(z, codebook):
    for _ in range(6):
        matmul_floor(z, codebook)


@torch.no_grad()
def module_products(z, codebook):
    """The module's six products with its shapes and buffers, no elementwise work between them."""
    nearest_code(z, codebook, codebook_sq_norms=codebook.new_zeros(codebook.shape[0]))
    num_codes = codebook.shape[0]
    rows = _chunk_rows(N, num_codes)
    logits_buf, upstream_buf = (z.new_empty(rows * num_codes) for _ in range(2))
    codebook_t = codebook.t()
    grad_z, grad_codebook = torch.empty_like(z), torch.zeros_like(codebook)
    for start in range(0, N, rows):                       # forward: the entropy pass's logits
        stop = min(start + rows, N)
        torch.mm(z[start:stop], codebook_t, out=logits_buf[:(stop - start) * num_codes].view(-1, num_codes))
    for start in range(0, N, rows):                       # backward: logits, g C^T, G C, G^T z
        stop = min(start + rows, N)
        size = (stop - start) * num_codes
        logits = torch.mm(z[start:stop], codebook_t, out=logits_buf[:size].view(-1, num_codes))
        grad = torch.mm(z[start:stop], codebook_t, out=upstream_buf[:size].view_as(logits))
        torch.mm(grad, codebook, out=grad_z[start:stop])
        grad_codebook.addmm_(logits.t(), z[start:stop])


def module_step(quantizer, z):
    out = quantizer(z.unsqueeze(0))
    (out.quantized.square().mean() + out.loss).backward()


def make_variants(quantizer, z) -> dict:
    codebook = quantizer.embedding.detach()
    return {
        "floor": lambda: matmul_floor(z.detach(), codebook),
        "six": lambda: six_in_tiles(z.detach(), codebook),
        "products": lambda: module_products(z.detach(), codebook),
        "module": lambda: module_step(quantizer, z),
    }


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="12,14,16", help="log2 K, comma-separated")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"N = {N}, dim {DIM}, fp32, 1 thread, torch {torch.__version__}; medians of {args.repeats}\n")
    print("| K | floor (s) | six in tiles (s) | module's products (s) | module (s) "
          "| six in tiles / floor | module's products / floor | module / floor |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for log2k in (int(s) for s in args.sizes.split(",")):
        torch.manual_seed(0)
        quantizer = IndexBackpropagationQuantizer(DIM, 1 << log2k)
        z = torch.randn(N, DIM, requires_grad=True)
        variants = make_variants(quantizer, z)
        for fn in variants.values():                       # warm-up: allocations, thread pools
            fn()
        times = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, fn in variants.items():
                times[name].append(timed(fn))
        med = {name: statistics.median(values) for name, values in times.items()}
        print(f"| 2^{log2k} | {med['floor']:.2f} | {med['six']:.2f} | {med['products']:.2f} | {med['module']:.2f} "
              f"| {med['six'] / med['floor']:.1f}x | {med['products'] / med['floor']:.1f}x "
              f"| {med['module'] / med['floor']:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
