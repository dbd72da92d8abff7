"""The rejected tiled IBQ (``ibq_tiled.py`` + ``ibq_tiles.py`` in this folder) against quantizers/ibq.py and the
matmul floor, in one process (median of ``reps`` after a warm-up), N = 8192, dim 64, 1 thread; then their
equivalence at K = 2^12 and 2^16. From the repository root:

    .venv/bin/python results/speed_ibq/tiled_attempt/measure_tiled.py [reps]
"""
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[2])]   # ibq_tiles / ibq_tiled beside this file, the repository
torch.set_num_threads(1)

from benchmark.speed.floor import matmul_floor  # noqa: E402
from ibq_tiled import TiledIBQ as Tiled  # noqa: E402
from quantizers.ibq import IndexBackpropagationQuantizer as Current  # noqa: E402

N, D = 8192, 64


def make(cls, K):
    latents = torch.randn(1, N, D, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    module, z = cls(D, K).train(), latents.clone().requires_grad_(True)

    def step():
        module.zero_grad(set_to_none=True)
        z.grad = None
        out = module(z)
        (out.quantized.square().mean() + out.loss).backward()
        return out, z.grad, module.embedding.grad
    return latents, step


def equivalence(K):
    (a, gza, gca), (b, gzb, gcb) = make(Current, K)[1](), make(Tiled, K)[1]()
    rel = lambda x, y: float((x - y).abs().max() / y.abs().max())
    return {"K": K, "indices_equal": bool(torch.equal(a.indices, b.indices)),
            "loss_rel": abs(b.loss.item() - a.loss.item()) / abs(a.loss.item()),
            "grad_z_maxrel": rel(gzb, gza), "grad_codebook_maxrel": rel(gcb, gca)}


def main(reps: int = 3) -> None:
    for log_k in (12, 14, 16):
        K = 1 << log_k
        latents, current = make(Current, K)
        tiled = make(Tiled, K)[1]
        codebook = torch.randn(K, D, generator=torch.Generator().manual_seed(1))
        steps = {"floor": lambda: matmul_floor(latents[0], codebook), "current": current, "tiled": tiled}
        for step in steps.values():
            step()
        times = {name: [] for name in steps}
        for _ in range(reps):
            for name, step in steps.items():
                started = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - started)
        med = {name: statistics.median(t) for name, t in times.items()}
        print(json.dumps({"K": f"2^{log_k}", **{k: round(v, 3) for k, v in med.items()},
                          "current/floor": round(med["current"] / med["floor"], 1),
                          "tiled/floor": round(med["tiled"] / med["floor"], 1),
                          "current/tiled": round(med["current"] / med["tiled"], 2), "raw": times}), flush=True)
    for log_k in (12, 16):
        print(json.dumps(equivalence(1 << log_k)), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
