"""Does a collapse-theory probe predict utilization? (the paper's mechanism, Sec. 3–4)

Only probes that are *not* computed from utilization can be evidence. ``probe/codes_with_gradient`` is
excluded by construction: for VQ it equals the fraction of codes the batch used (utilization again), for
SimVQ it is 1.0 because W moves every code. The probes used, each with the sign the theory predicts:

- ``unused_code_distance`` (unused codes' distance to the data over the used codes' error): unused codes
  drift away from the data, so a larger distance should go with lower utilization (ρ < 0);
- ``distribution_gap`` (2-Wasserstein of Gaussian fits, codes vs latents): a codebook that does not
  cover the latent distribution leaves codes unused (ρ < 0);
- ``dead_code_revival`` (of codes dead at a checkpoint, the fraction used later): a method whose dead
  codes come back keeps more of its codebook (ρ > 0).

Each trial contributes its probe's mean over the last quarter of training (less noisy than the last
point) and its final utilization. Spearman ρ per quantizer and pooled over every quantizer that logged
the probe; p exact at small n; Holm over the whole family; 95% CI of ρ by Fisher's z.
"""
from __future__ import annotations

import math

import pandas as pd

from benchmark.tracking import keys

from .statistics import ALPHA, holm, spearman, spearman_ci

#: probe key -> (column name, the sign of ρ the theory predicts)
PROBES: dict[str, tuple[str, int]] = {
    keys.PROBE_UNUSED_CODE_DISTANCE: ("unused_code_distance", -1),
    keys.PROBE_DISTRIBUTION_GAP: ("distribution_gap", -1),
    keys.PROBE_DEAD_CODE_REVIVAL: ("dead_code_revival", +1),
}
#: Never evidence (see the module docstring); listed so nothing reads it by mistake.
TAUTOLOGICAL_PROBES = [keys.PROBE_CODES_WITH_GRADIENT]
LAST_FRACTION = 0.25
POOLED = "all codebook quantizers"
MIN_POINTS = 3
ASSOCIATION_COLUMNS = ["probe", "quantizer", "n", "rho", "rho_ci_low", "rho_ci_high", "p", "p_holm",
                       "expected_sign", "verdict"]


def probe_summaries(histories: pd.DataFrame) -> pd.DataFrame:
    """Per run: each probe's mean over the last LAST_FRACTION of its logged steps. Columns run_id and one
    column per probe that has any data."""
    curves = histories[histories["key"].isin(PROBES)]
    if curves.empty:
        return pd.DataFrame(columns=["run_id"])
    last_step = curves.groupby(["run_id", "key"])["step"].transform("max")
    late = curves[curves["step"] >= (1 - LAST_FRACTION) * last_step]
    wide = late.groupby(["run_id", "key"])["value"].mean().unstack("key")
    return wide.rename(columns={k: PROBES[k][0] for k in wide.columns}).reset_index()


def _verdict(rho: float, p_holm: float, sign: int) -> str:
    if not math.isfinite(p_holm):
        return "no test"
    if p_holm >= ALPHA:
        return "no significant association"
    return "as the theory predicts" if (rho > 0) == (sign > 0) else "opposite to the theory"


def probe_associations(frame: pd.DataFrame, utilization: str) -> pd.DataFrame:
    """Spearman ρ of each probe's late mean with final ``utilization``, per quantizer and pooled."""
    rows = []
    for key, (column, sign) in PROBES.items():
        if column not in frame:
            continue
        data = frame.dropna(subset=[column, utilization])
        groups = [(q, part) for q, part in data.groupby("quantizer", sort=True)]
        if data["quantizer"].nunique() > 1:
            groups.append((POOLED, data))
        for quantizer, part in groups:
            x, y = part[column].astype(float), part[utilization].astype(float)
            row = {"probe": column, "quantizer": quantizer, "n": len(part), "rho": math.nan, "p": math.nan,
                   "rho_ci_low": math.nan, "rho_ci_high": math.nan, "expected_sign": "+" if sign > 0 else "−"}
            if len(part) >= MIN_POINTS and x.nunique() > 1 and y.nunique() > 1:
                row["rho"], row["p"] = spearman(x, y)
                row["rho_ci_low"], row["rho_ci_high"] = spearman_ci(row["rho"], len(part))
            rows.append(row)
    table = pd.DataFrame(rows, columns=ASSOCIATION_COLUMNS)
    if len(table):
        table["p_holm"] = holm(table["p"])
        table["verdict"] = [_verdict(r, p, 1 if s == "+" else -1)
                            for r, p, s in zip(table["rho"], table["p_holm"], table["expected_sign"])]
    return table


def best_probe(associations: pd.DataFrame) -> str:
    """Which probe predicts utilization best across quantizers: the largest pooled |ρ|, and whether its
    CI separates it from the runner-up (overlapping CIs: not distinguishable at this n)."""
    pooled = associations[associations["quantizer"] == POOLED].dropna(subset=["rho"])
    if pooled.empty:   # one quantizer logged probes: its own rows, one per probe
        pooled = associations.dropna(subset=["rho"])
    if pooled.empty:
        return "No probe could be tested (too few trials with a probe and a varying utilization)."
    ranked = pooled.assign(strength=pooled["rho"].abs()).sort_values("strength", ascending=False)
    best = ranked.iloc[0]
    text = (f"`{best['probe']}` predicts utilization best: |ρ| = {abs(best['rho']):.3g} "
            f"(ρ 95% CI [{best['rho_ci_low']:.3g}, {best['rho_ci_high']:.3g}], n = {int(best['n'])}, "
            f"Holm p = {best['p_holm']:.3g}: {best['verdict']})")
    if len(ranked) < 2:
        return text + "; it is the only probe tested."
    second = ranked.iloc[1]
    same_sign = best["rho_ci_low"] * best["rho_ci_high"] > 0
    low_best = min(abs(best["rho_ci_low"]), abs(best["rho_ci_high"])) if same_sign else 0.0   # lower bound of |ρ|
    high_second = max(abs(second["rho_ci_low"]), abs(second["rho_ci_high"]))
    separated = math.isfinite(high_second) and low_best > high_second
    return text + (f"; its |ρ| CI lies above that of `{second['probe']}` (|ρ| = {abs(second['rho']):.3g})."
                   if separated else f"; not distinguishable from `{second['probe']}` "
                   f"(|ρ| = {abs(second['rho']):.3g}) at this n: their CIs overlap.")
