"""IBQ forward + backward before/after the hand-written chunked backward (issue "Faster steps").

Usage (from the repository root):
    .venv/bin/python results/speed_ibq/measure_ibq.py [--repeats 5] [--before-repeats-at-2-16 3]
    .venv/bin/python results/speed_ibq/measure_ibq.py --underflow-only   (appends the zero-gradient table)

N = 8192 tokens, dim 64, fp32, CPU, torch.set_num_threads(1), default IBQ options; a step is the forward +
backward of ``quantized.square().mean() + loss`` (as ``vqbench bench``'s worker). Per K, each repeat times
the four variants back to back (floor, floor+backward, after, before), so a load change on the shared machine
hits all of them; the table gives medians and the ratios of those medians.

- before: the implementation of commit a1a0cfd (row chunks of CHUNK_ELEMENTS under activation checkpointing,
  autograd through softmax / log_softmax), copied below as ``BeforeIBQ.soft_terms``; forward is unchanged.
- after: quantizers/ibq.py as it is now (the _SoftTerms autograd.Function).
- floor: ``benchmark.speed.bench.matmul_floor``, one N x K x d product in 1024 x 1024 tiles (the floor of
  ``vqbench bench`` that the issue's "48x" refers to; forward only).
- floor+bwd: that product plus its backward, the two other N x K x d GEMMs (G C and G^T z), in the same tiles.

Peak RSS increase: a fresh child process per (variant, K) builds the inputs, reads VmRSS, runs one step and
reports VmHWM - VmRSS (the step's peak above the process's baseline).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import quantizers  # noqa: E402
from benchmark.speed.bench import matmul_floor  # noqa: E402
from quantizers.ibq import IndexBackpropagationQuantizer  # noqa: E402

N, DIM = 8192, 64
TILE = 1024


# ------------------------------------------------------------------ the 'before' implementation (a1a0cfd)
BEFORE_CHUNK_ELEMENTS = 1 << 24


def _before_chunk_terms(z_rows, codebook, temperature, with_index, with_entropy):
    logits = z_rows @ codebook.t()
    index_path = sample_entropy = probs_sum = None
    if with_index:
        soft_codes = logits.softmax(dim=-1) @ codebook.detach()
        index_path = soft_codes - soft_codes.detach()
    if with_entropy:
        log_probs = (logits / temperature).log_softmax(dim=-1)
        probs = log_probs.exp()
        sample_entropy = -(probs * log_probs).sum()
        probs_sum = probs.sum(dim=0)
    return index_path, sample_entropy, probs_sum


class BeforeIBQ(IndexBackpropagationQuantizer):
    def soft_terms(self, flat):
        codebook = self.embedding
        with_index = torch.is_grad_enabled() and (flat.requires_grad or codebook.requires_grad)
        with_entropy = self.entropy_weight > 0
        if not (with_index or with_entropy):
            return None, None, None
        rows = max(1, BEFORE_CHUNK_ELEMENTS // self.codebook_size)
        recompute = with_index and rows < flat.shape[0]
        paths, sample_entropy, probs_sum = [], 0.0, 0.0
        for start in range(0, flat.shape[0], rows):
            args = (flat[start:start + rows], codebook, self.entropy_temperature, with_index, with_entropy)
            if recompute:
                path, entropy_sum, column_sum = checkpoint(_before_chunk_terms, *args, use_reentrant=False)
            else:
                path, entropy_sum, column_sum = _before_chunk_terms(*args)
            if with_index:
                paths.append(path)
            if with_entropy:
                sample_entropy = sample_entropy + entropy_sum
                probs_sum = probs_sum + column_sum
        index_path = torch.cat(paths) if with_index else None
        if not with_entropy:
            return index_path, None, None
        return index_path, sample_entropy / flat.shape[0], probs_sum / flat.shape[0]


# ------------------------------------------------------------------ steps
def floor_backward(z, codebook, buffer):
    """The forward product and its backward's two GEMMs (G C into dz, G^T z into dC), 1024 x 1024 tiles;
    the tile's product stands in for its upstream gradient."""
    grad_z, grad_codebook = torch.zeros_like(z), torch.zeros_like(codebook)
    with torch.no_grad():
        for row in range(0, z.shape[0], TILE):
            z_block = z[row:row + TILE]
            for code in range(0, codebook.shape[0], TILE):
                c_block = codebook[code:code + TILE]
                tile = buffer[: z_block.shape[0] * c_block.shape[0]].view(z_block.shape[0], c_block.shape[0])
                torch.mm(z_block, c_block.t(), out=tile)
                grad_z[row:row + TILE].addmm_(tile, c_block)
                grad_codebook[code:code + TILE].addmm_(tile.t(), z_block)
    return grad_z, grad_codebook


def make_steps(codebook_size: int, variants):
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, N, DIM, generator=generator)
    codebook = torch.randn(codebook_size, DIM, generator=generator)
    buffer = torch.empty(TILE * TILE)
    steps = {}
    for variant in variants:
        if variant == "floor":
            steps[variant] = lambda: matmul_floor(latents[0], codebook)
        elif variant == "floor+bwd":
            steps[variant] = lambda: floor_backward(latents[0], codebook, buffer)
        else:
            torch.manual_seed(0)
            module = (BeforeIBQ if variant == "before" else IndexBackpropagationQuantizer)(DIM, codebook_size).train()
            z = latents.clone().requires_grad_(True)

            def step(module=module, z=z):
                module.zero_grad(set_to_none=True)
                z.grad = None
                out = module(z)
                (out.quantized.square().mean() + out.loss).backward()
                return out, z.grad, module.embedding.grad
            steps[variant] = step
    return steps


def status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def child_rss(variant: str, codebook_size: int) -> None:
    torch.set_num_threads(1)
    step = make_steps(codebook_size, [variant])[variant]
    baseline = status_bytes("VmRSS")
    step()
    print(json.dumps({"extra_bytes": status_bytes("VmHWM") - baseline}))


def rss_increase(variant: str, codebook_size: int) -> float:
    done = subprocess.run([sys.executable, __file__, "--child-rss", variant, str(codebook_size)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["extra_bytes"] / 2 ** 30


def equivalence(codebook_size: int) -> dict:
    """before vs after on the benchmark's own inputs: indices, values, loss and both gradients."""
    steps = make_steps(codebook_size, ["before", "after"])
    (out_b, gz_b, gc_b), (out_a, gz_a, gc_a) = steps["before"](), steps["after"]()

    def rel(a, b):
        return ((a - b).abs().max() / b.abs().max()).item()
    return {"indices_equal": bool(torch.equal(out_a.indices, out_b.indices)),
            "quantized_equal": bool(torch.equal(out_a.quantized, out_b.quantized)),
            "loss_rel": abs(out_a.loss.item() - out_b.loss.item()) / abs(out_b.loss.item()),
            "grad_z_maxrel": rel(gz_a, gz_b), "grad_codebook_maxrel": rel(gc_a, gc_b)}


def zero_gradient_codes(codebook_size=4096, std=30.0, tokens=N) -> int:
    """Codes with an exactly zero gradient row after one step at latent std ``std`` (softmax underflow)."""
    torch.manual_seed(0)
    module = quantizers.build("ibq", dim=DIM, codebook_size=codebook_size).train()
    z = (std * torch.randn(1, tokens, DIM, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    out = module(z)
    (out.quantized.square().mean() + out.loss).backward()
    return int(module.embedding.grad.eq(0).all(dim=1).sum())


def underflow_section(path: Path) -> None:
    """Append to ``path`` how many of 4,096 codes get an exactly zero gradient, by latent std and tokens."""
    rows = ["", "## Codes without gradient (softmax underflow)", "",
            "Command (repository root):", "",
            "    .venv/bin/python results/speed_ibq/measure_ibq.py --underflow-only", "",
            "One step of the current module, K = 4096, dim 64, codes N(0, 1), latents N(0, std^2); codes whose "
            "gradient row is exactly zero:", "", "| latent std | tokens N | codes with zero gradient |",
            "|---|---|---|"]
    for std in (1.0, 30.0):
        for tokens in (1024, 8192):
            count = zero_gradient_codes(std=std, tokens=tokens)
            print(json.dumps({"std": std, "tokens": tokens, "zero_gradient_codes": count}), flush=True)
            rows.append(f"| {std:g} | {tokens} | {count} of 4096 |")
    with path.open("a") as handle:
        handle.write("\n".join(rows) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before-repeats-at-2-16", type=int, default=3)
    parser.add_argument("--child-rss", nargs=2)
    parser.add_argument("--underflow-only", action="store_true", help="append the zero-gradient table")
    parser.add_argument("--out", default=str(Path(__file__).with_name("README.md")))
    args = parser.parse_args()
    if args.child_rss:
        child_rss(args.child_rss[0], int(args.child_rss[1]))
        return
    if args.underflow_only:
        torch.set_num_threads(1)
        underflow_section(Path(args.out))
        return
    torch.set_num_threads(1)
    variants = ["floor", "floor+bwd", "after", "before"]
    lines = []
    for log_k in (12, 14, 16):
        codebook_size = 1 << log_k
        steps = make_steps(codebook_size, variants)
        for variant in variants:  # warm-up
            steps[variant]()
        times = {variant: [] for variant in variants}
        for repeat in range(args.repeats):
            for variant in variants:
                if variant == "before" and log_k == 16 and repeat >= args.before_repeats_at_2_16:
                    continue
                start = time.perf_counter()
                steps[variant]()
                times[variant].append(time.perf_counter() - start)
        del steps
        med = {variant: statistics.median(values) for variant, values in times.items()}
        rss = {variant: rss_increase(variant, codebook_size) for variant in ("after", "before")}
        row = {"K": f"2^{log_k}", **{f"{v}_s": round(med[v], 3) for v in variants},
               **{f"{v}_repeats": len(times[v]) for v in variants},
               "after/floor": round(med["after"] / med["floor"], 1),
               "after/floor+bwd": round(med["after"] / med["floor+bwd"], 1),
               "before/floor": round(med["before"] / med["floor"], 1),
               "before/after": round(med["before"] / med["after"], 1),
               "rss_after_GiB": round(rss["after"], 2), "rss_before_GiB": round(rss["before"], 2),
               "all_times_s": {v: [round(t, 3) for t in times[v]] for v in variants}}
        print(json.dumps(row), flush=True)
        lines.append(row)
    check = equivalence(1 << 12)
    print(json.dumps({"equivalence_K_2^12": check}), flush=True)

    table = ["| K | floor (s) | floor+bwd (s) | after (s) | before (s) | after / floor | after / floor+bwd | "
             "before / floor | before / after | peak RSS + after | peak RSS + before |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in lines:
        table.append(f"| {r['K']} | {r['floor_s']:.2f} | {r['floor+bwd_s']:.2f} | {r['after_s']:.2f} | "
                     f"{r['before_s']:.2f} ({r['before_repeats']} rep.) | {r['after/floor']}x | "
                     f"{r['after/floor+bwd']}x | {r['before/floor']}x | {r['before/after']}x | "
                     f"{r['rss_after_GiB']} GiB | {r['rss_before_GiB']} GiB |")
    text = ["# IBQ step time before/after the chunked autograd.Function", "",
            "Command (repository root):", "",
            f"    .venv/bin/python results/speed_ibq/measure_ibq.py --repeats {args.repeats} "
            f"--before-repeats-at-2-16 {args.before_repeats_at_2_16}", "",
            (__doc__ or "").strip(), "",
            f"Medians of {args.repeats} repeats (before at 2^16: {args.before_repeats_at_2_16}), "
            "N = 8192, dim 64, fp32, 1 thread:", ""] + table + ["",
            "Equivalence on these inputs at K = 2^12 (before vs after; rel = max |diff| / max |before|):", "",
            "    " + json.dumps(check), "",
            "Raw per-repeat times:", ""] + ["    " + json.dumps({"K": r["K"], **r["all_times_s"]}) for r in lines]
    Path(args.out).write_text("\n".join(text) + "\n")


if __name__ == "__main__":
    main()
