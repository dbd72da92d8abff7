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

from .checkpoints import AT_THIS_BUDGET
from .statistics import ALPHA, adjusted_interval, holm, paired_test, sample_columns

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
TOTAL = "total"
#: One family per question, declared before any data is read. simvq − vq is confirmatory in the
#: comparison family only; the control table repeats it as "total" (the denominator of each part's share)
#: with the comparison family's Holm p and adjusted interval, not as a second test.
FAMILIES = {
    "comparison": "does SimVQ use more of its codebook than each other method? simvq − q at each K and latent dim",
    "controls": "which part explains the difference? every control contrast except total (tested in comparison)",
    "geometry": "are VQ's unused codes farther from the data than SimVQ's? vq − simvq of the distance probes",
}
INSUFFICIENT_SEEDS = "insufficient seeds"

COMPARISON_COLUMNS = ["contrast", "a", "b", "codebook_size_requested", "latent_dim", "paired_on", "n",
                      "a_mean", "b_mean", "difference", "ci_low", "ci_high", "ci_adj_low", "ci_adj_high", "t", "p",
                      "p_holm", "family", "unconverged", "verdict"]


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


def paired_contrasts(frame: pd.DataFrame, contrasts: list[tuple[str, str, str]], metric: str,
                     family: str = "comparison", outside: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per (contrast, requested K, latent dim) where both quantizers ran; Holm over the rows of
    ``family`` (contrasts labelled in ``outside`` are shown but belong to another family: no p_holm here).
    ci_low/ci_high: the per-test t-interval; ci_adj_low/ci_adj_high: Bonferroni-adjusted at α/m, m the
    family's size. A verdict resting on an unconverged trial ends "at this budget"."""
    data = frame.dropna(subset=[metric])
    rows, results, differences = [], [], []
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
                             "unconverged": unconverged, "family": "–" if label in outside else family})
                results.append(result)
                differences.append((pairs["a"] - pairs["b"]).to_numpy(float))
    table = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    if len(table):
        inside = (table["family"] == family).to_numpy()
        adjusted = pd.Series(float("nan"), index=table.index)
        adjusted[inside] = holm(table.loc[inside, "p"])
        table["p_holm"] = adjusted
        size = int(table.loc[inside, "p"].notna().sum())
        bounds = [adjusted_interval(d, size) if keep else (math.nan, math.nan)
                  for d, keep in zip(differences, inside)]
        table["ci_adj_low"], table["ci_adj_high"] = [b[0] for b in bounds], [b[1] for b in bounds]
        table["verdict"] = [_verdict(r, a, p) + (AT_THIS_BUDGET if stuck else "")
                            for r, a, p, stuck in zip(results, table["a"], table["p_holm"], table["unconverged"])]
    return table


def compare_to_reference(frame: pd.DataFrame, metric: str, reference: str = REFERENCE) -> pd.DataFrame:
    """``reference`` − each other method (controls excluded: they have their own family) at each K."""
    others = sorted(set(frame["quantizer"]) - {reference} - CONTROLS)
    return paired_contrasts(frame, [(f"{reference} − {q}", reference, q) for q in others], metric)


def control_contrasts(frame: pd.DataFrame, metric: str, comparisons: pd.DataFrame | None = None) -> pd.DataFrame:
    """The CONTROL_CONTRASTS whose two quantizers both ran (rows labelled by contrast), Holm over the
    controls family. The "total" rows (simvq − vq) are not tested again: they carry the comparison family's
    Holm p, adjusted interval and verdict from ``comparisons`` (None: :func:`compare_to_reference` is run)."""
    present = set(frame["quantizer"])
    wanted = [(label, a, b) for label, a, b in CONTROL_CONTRASTS if {a, b} <= present]
    if not any(a in CONTROLS or b in CONTROLS for _, a, b in wanted):
        return pd.DataFrame(columns=COMPARISON_COLUMNS)   # no control ran: nothing beyond the reference table
    table = paired_contrasts(frame, wanted, metric, family="controls", outside=(TOTAL,))
    if comparisons is None:
        comparisons = compare_to_reference(frame, metric)
    tested = comparisons[comparisons["contrast"] == f"{REFERENCE} − vq"] if len(comparisons) else comparisons
    for index in table.index[table["contrast"] == TOTAL]:
        match = tested[(tested["codebook_size_requested"] == table.at[index, "codebook_size_requested"])
                       & (tested["latent_dim"].astype(str) == str(table.at[index, "latent_dim"]))]
        if len(match):
            for column in ("p_holm", "ci_adj_low", "ci_adj_high", "verdict"):
                table.at[index, column] = match.iloc[0][column]
            table.at[index, "family"] = "comparison"
    return table


def _shown(row) -> str:
    interval = ("" if not math.isfinite(row.ci_adj_low) else
                f" [{row.ci_adj_low:+.3g}, {row.ci_adj_high:+.3g}] (Bonferroni-adjusted)")
    if not interval and math.isfinite(row.ci_low):
        interval = f" [{row.ci_low:+.3g}, {row.ci_high:+.3g}]"
    p = "" if not math.isfinite(row.p_holm) else f", Holm p = {row.p_holm:.3g}"
    return f"Δ = {row.difference:+.3g}{interval}{p}, n = {row.n}"


def _significant_gain(row) -> bool:
    return math.isfinite(row.p_holm) and row.p_holm < ALPHA and row.difference > 0


PARTS = [("init scale", "the initial code scale"), ("learning W", "the learned linear layer"),
         ("reparameterization at equal scale", "the reparameterization at equal scale")]
#: A part "explains" SimVQ's advantage when the lower end of its share's CI reaches this (most of the
#: total); it "contributes" when the share's CI lies above 0.
EXPLAINS_SHARE = 0.5


def attribution(controls: pd.DataFrame, frame: pd.DataFrame | None = None, metric: str | None = None) -> list[str]:
    """One sentence per (K, latent dim): how much of SimVQ's advantage over VQ each part accounts for.

    A part's *share* is the ratio of paired means mean(part difference) / mean(simvq − vq) over the seeds
    that ran all four quantizers, with Fieller's 95% interval (:func:`analysis.statistics.fieller_ratio`);
    it needs ``frame`` and ``metric``. A part **explains** the advantage when its share's CI lies above
    EXPLAINS_SHARE, **contributes** when it lies above 0; significance of the part alone is not enough.
    Without ``frame`` only the contrasts are quoted. Sentences end "at this budget" where a trial is not
    converged."""
    from .attribution import share_of_total

    sentences = []
    if controls.empty:
        return sentences
    for (size, dim), part in controls.groupby(["codebook_size_requested", "latent_dim"], sort=True):
        by = {row.contrast: row for row in part.itertuples()}
        where = f"K = {size}" + ("" if dim == "own" else f", latent dim {dim}")
        total = by.get(TOTAL)
        if total is None:
            head = "simvq − vq not measured"
        elif total.n < 2:
            head = f"simvq − vq {_shown(total)}: insufficient seeds to attribute anything"
        elif _significant_gain(total):
            head = f"SimVQ uses more of its codebook than VQ ({_shown(total)})"
        else:
            head = f"SimVQ shows no significant advantage over VQ ({_shown(total)})"
        parts, explains, contributes = [], [], []
        for label, name in PARTS:
            row = by.get(label)
            if row is None:
                parts.append(f"{label}: not run")
                continue
            text = f"{label} {_shown(row)}"
            if frame is not None and metric is not None and total is not None:
                share, low, high, n = share_of_total(frame, metric, size, dim, row.a, row.b)
                if math.isfinite(share):
                    bounds = "unbounded" if not math.isfinite(low) else f"[{low:.2g}, {high:.2g}]"
                    text += f", share of the total {share:.2g} (Fieller 95% CI {bounds}, n = {n})"
                    if math.isfinite(low) and low >= EXPLAINS_SHARE:
                        explains.append(name)
                    elif math.isfinite(low) and low > 0:
                        contributes.append(name)
            parts.append(text)
        if total is not None and total.n >= 2:
            if explains:
                verdict = " and ".join(explains) + (" explains" if len(explains) == 1 else " each explain") + " most of it"
            elif contributes:
                verdict = " and ".join(contributes) + (" contributes" if len(contributes) == 1 else " both contribute") + \
                    " (share CI above 0, not shown to be most of it)"
            else:
                verdict = "no part's share of it is established at this n"
            head += f"; {verdict}"
        stuck = int(part["unconverged"].fillna(0).sum()) if "unconverged" in part else 0
        sentences.append(f"{where}: {head}{AT_THIS_BUDGET if stuck else ''}. ({'; '.join(parts)}.)")
    return sentences
