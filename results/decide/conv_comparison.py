"""The decisive experiment's contrasts at the conv backbone, from the committed mechanism sweep.

    .venv/bin/python results/decide/conv_comparison.py > results/decide/conv_comparison.md

Input: results/mechanism/runs.csv, which `vqbench figures` wrote from that sweep's MLflow store
(`vqbench sweep --preset mechanism`: conv backbone, 800 steps x batch 64, 3 seeds, K = 64 and 1,024, each
arm at lr 1e-3, no stopping rule). The store itself is not in the repository, so this reads the CSV; the
statistics are the decisive experiment's own (analysis.decisive.confirmatory) over the three contrasts
the mechanism sweep has arms for (it has no vq-dense-pull), so its family is 3 contrasts x 2 sizes = 6.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd

from analysis.decisive import confirmatory, verdict
from sweeps.decide import load_design

HERE = Path(__file__).resolve().parent
RUNS = HERE.parent / "mechanism" / "runs.csv"

design, digest, _ = load_design()
conv = copy.deepcopy(design)
conv["codebook_sizes"] = [64, 1024]
conv["contrasts"] = [c for c in design["contrasts"] if c["plus"] != "vq-dense-pull"]
runs = pd.read_csv(RUNS)
runs = runs[runs.status == "FINISHED"].assign(censored=0, converged=lambda f: f.converged.fillna(0).astype(int))
rows = confirmatory(runs, conv)
print(f"# The decisive contrasts at the conv backbone (mechanism sweep, 800 steps, 3 seeds)\n")
print(f"Source: `{RUNS.relative_to(HERE.parent.parent)}`; design {digest}'s contrasts without the dense-pull arm "
      f"(family of {len(rows)}, Bonferroni-adjusted intervals, Holm p). None of these trials was stopped by "
      "a stopping rule: every one ran 800 steps, and the slope rule called none of them converged (the "
      f"sweep was rerun with this round's code: {int(runs.converged.sum())} of {len(runs)} converged).\n")
print("| K | contrast | difference | seeds | estimate | adjusted CI | Holm p |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r.codebook_size:,} | {r.name} | {r.plus} − {r.minus} | {r.n} | {r.mean:+.3f} | "
          f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}] | {r.p_holm:.2g} |")
print()
for r in rows:
    unconverged = int(runs[(runs.codebook_size == r.codebook_size) & runs.quantizer.isin([r.plus, r.minus])]
                      .converged.eq(0).sum())
    print(f"- K = {r.codebook_size:,}: {verdict(r, conv, unconverged)}")
