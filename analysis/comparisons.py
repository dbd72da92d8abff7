"""Paired comparisons: SimVQ against every other method, and the controls that say *why* it differs.

A pair is two trials with the same requested K, latent dim and seed (issue 12: pairing by seed only), so
n is the number of seeds. When two quantizers share no latent dim at a K (FSQ and LFQ fix their own),
each is averaged over its latent dims per seed and paired by seed. Every row carries the mean difference
with its Student-t 95% CI, the paired t-test's p and the p Holm-adjusted within the row's family.

The controls (issue 12) split SimVQ's effect over VQ into its parts:

- ``vq-simvq-init`` − ``vq``: the initial code scale alone (VQ initialised at SimVQ's scale);
- ``simvq`` − ``vq-simvq-init``: the reparameterization W(C) at equal initial scale;
- ``simvq`` − ``simvq-frozen-w``: learning W (the reparameterization without its learning);
- ``simvq-train-c`` − ``simvq`` and ``simvq-no-bias`` − ``simvq``: the paper's ablations.
"""
from __future__ import annotations

import math

import pandas as pd

from .statistics import ALPHA, holm, paired_test, sample_columns

REFERENCE = "simvq"
#: (label, a, b): each row tests a − b. The first is SimVQ's total advantage over VQ.
CONTROL_CONTRASTS = [
    ("total", "simvq", "vq"),
    ("init scale", "vq-simvq-init", "vq"),
    ("reparameterization at equal scale", "simvq", "vq-simvq-init"),
    ("learning W", "simvq", "simvq-frozen-w"),
    ("training C too", "simvq-train-c", "simvq"),
    ("bias of W", "simvq-no-bias", "simvq"),
]
CONTROLS = {"vq-simvq-init", "simvq-frozen-w", "simvq-train-c", "simvq-no-bias"}
INSUFFICIENT_SEEDS = "insufficient seeds"

COMPARISON_COLUMNS = ["contrast", "a", "b", "codebook_size_requested", "latent_dim", "paired_on", "n",
                      "a_mean", "b_mean", "difference", "ci_low", "ci_high", "t", "p", "p_holm",
                      "unconverged", "verdict"]


def _pairs(a_runs: pd.DataFrame, b_runs: pd.DataFrame, metric: str) -> list[tuple[object, str, pd.DataFrame]]:
    """[(latent dim or "own", paired_on, DataFrame with columns a, b)] for one requested K."""
    sample = sample_columns(a_runs)
    shared = sorted(set(a_runs["latent_dim"].dropna()) & set(b_runs["latent_dim"].dropna()))
    if shared:
        found = []
        for dim in shared:
            left = a_runs[a_runs["latent_dim"] == dim].groupby(sample)[metric].mean().rename("a")
            right = b_runs[b_runs["latent_dim"] == dim].groupby(sample)[metric].mean().rename("b")
            found.append((int(dim), "seed", pd.concat([left, right], axis=1, join="inner").dropna()))
        return found
    dims = lambda part: "/".join(str(int(v)) for v in sorted(part["latent_dim"].dropna().unique()))  # noqa: E731
    left = a_runs.groupby(sample)[metric].mean().rename("a")
    right = b_runs.groupby(sample)[metric].mean().rename("b")
    paired_on = f"seed (own latent dims {dims(a_runs)} vs {dims(b_runs)}, each averaged)"
    return [("own", paired_on, pd.concat([left, right], axis=1, join="inner").dropna())]


def _verdict(result, a: str, p_holm: float) -> str:
    if result.n < 2:
        return f"{INSUFFICIENT_SEEDS} (n = {result.n})"
    if not math.isfinite(result.p):
        return ("identical in every pair" if result.mean_difference == 0 else
                f"every pair differs by {result.mean_difference:.4g} (no variance to test)")
    if p_holm < ALPHA:
        return f"{a} higher" if result.mean_difference > 0 else f"{a} lower"
    return "no significant difference"


def paired_contrasts(frame: pd.DataFrame, contrasts: list[tuple[str, str, str]], metric: str) -> pd.DataFrame:
    """One row per (contrast, requested K, latent dim) where both quantizers ran; Holm over all rows."""
    data = frame.dropna(subset=[metric])
    rows, results = [], []
    for label, a, b in contrasts:
        a_all, b_all = data[data["quantizer"] == a], data[data["quantizer"] == b]
        for size in sorted(set(a_all["codebook_size_requested"]) & set(b_all["codebook_size_requested"])):
            a_runs = a_all[a_all["codebook_size_requested"] == size]
            b_runs = b_all[b_all["codebook_size_requested"] == size]
            for dim, paired_on, pairs in _pairs(a_runs, b_runs, metric):
                result = paired_test(pairs["a"] - pairs["b"])
                both = pd.concat([a_runs, b_runs]) if dim == "own" else pd.concat(
                    [a_runs[a_runs["latent_dim"] == dim], b_runs[b_runs["latent_dim"] == dim]])
                unconverged = int((both["converged"] < 0.5).sum()) if "converged" in both else 0
                rows.append({"contrast": label, "a": a, "b": b, "codebook_size_requested": int(size),
                             "latent_dim": dim, "paired_on": paired_on, "n": result.n,
                             "a_mean": float(pairs["a"].mean()) if result.n else math.nan,
                             "b_mean": float(pairs["b"].mean()) if result.n else math.nan,
                             "difference": result.mean_difference, "ci_low": result.ci_low,
                             "ci_high": result.ci_high, "t": result.statistic, "p": result.p,
                             "unconverged": unconverged})
                results.append(result)
    table = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    if len(table):
        table["p_holm"] = holm(table["p"])
        table["verdict"] = [_verdict(r, a, p) for r, a, p in zip(results, table["a"], table["p_holm"])]
    return table


def compare_to_reference(frame: pd.DataFrame, metric: str, reference: str = REFERENCE) -> pd.DataFrame:
    """``reference`` − each other method (controls excluded: they have their own family) at each K."""
    others = sorted(set(frame["quantizer"]) - {reference} - CONTROLS)
    return paired_contrasts(frame, [(f"{reference} − {q}", reference, q) for q in others], metric)


def control_contrasts(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The CONTROL_CONTRASTS whose two quantizers both ran (rows labelled by contrast)."""
    present = set(frame["quantizer"])
    wanted = [(label, a, b) for label, a, b in CONTROL_CONTRASTS if {a, b} <= present]
    if not any(a in CONTROLS or b in CONTROLS for _, a, b in wanted):
        return pd.DataFrame(columns=COMPARISON_COLUMNS)   # no control ran: nothing beyond the reference table
    return paired_contrasts(frame, wanted, metric)


def _shown(row) -> str:
    interval = "" if not math.isfinite(row.ci_low) else f" [{row.ci_low:+.3g}, {row.ci_high:+.3g}]"
    p = "" if not math.isfinite(row.p_holm) else f", Holm p = {row.p_holm:.3g}"
    return f"Δ = {row.difference:+.3g}{interval}{p}, n = {row.n}"


def _significant_gain(row) -> bool:
    return math.isfinite(row.p_holm) and row.p_holm < ALPHA and row.difference > 0


def attribution(controls: pd.DataFrame) -> list[str]:
    """One sentence per (K, latent dim): does init scale, the learned linear layer, or neither explain
    SimVQ's advantage over VQ, with each contrast's difference and CI."""
    sentences = []
    if controls.empty:
        return sentences
    for (size, dim), part in controls.groupby(["codebook_size_requested", "latent_dim"], sort=True):
        by = {row.contrast: row for row in part.itertuples()}
        where = f"K = {size}" + ("" if dim == "own" else f", latent dim {dim}")
        total = by.get("total")
        if total is None:
            head = "simvq − vq not measured"
        elif total.n < 2:
            head = f"simvq − vq {_shown(total)}: insufficient seeds to attribute anything"
        elif _significant_gain(total):
            head = f"SimVQ uses more of its codebook than VQ ({_shown(total)})"
        else:
            head = f"SimVQ shows no significant advantage over VQ ({_shown(total)})"
        parts, explains = [], []
        for label, name in [("init scale", "the initial code scale"), ("learning W", "the learned linear layer"),
                            ("reparameterization at equal scale", "the reparameterization at equal scale")]:
            row = by.get(label)
            if row is None:
                parts.append(f"{label}: not run")
                continue
            parts.append(f"{label} {_shown(row)}")
            if _significant_gain(row) and label != "reparameterization at equal scale":
                explains.append(name)
        if total is not None and _significant_gain(total):
            if explains:
                verdict = " and ".join(explains) + (" explains" if len(explains) == 1 else " both contribute to") + " it"
            else:
                verdict = "neither the init scale nor learning W is significant on its own at this n"
            head += f"; {verdict}"
        sentences.append(f"{where}: {head}. ({'; '.join(parts)}.)")
    return sentences
