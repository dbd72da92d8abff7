"""Where do unused codes sit? VQ − SimVQ of the unused-code distance probes, paired by seed within each K
(the "geometry" family of :data:`analysis.comparisons.FAMILIES`).

The theory's geometry: VQ's unselected codes get no update and are left stranded far from the data, so
VQ's unused codes should sit *farther* from the data than SimVQ's (VQ − SimVQ > 0). Two definitions:
``unused_code_distance`` (codes undrawn in the probe's batch: for VQ mostly dead codes, for SimVQ mostly
live codes that batch did not draw, so the two differ in what they measure) and ``dead_code_distance``
(codes unused for ``dead_code_window`` steps: one definition for every method), where logged. A negative
difference is evidence against the theory and the report says so.
"""
from __future__ import annotations

import pandas as pd

from .comparisons import COMPARISON_COLUMNS, paired_contrasts

DISTANCES = ["dead_code_distance", "unused_code_distance"]
CONTRARY = "contrary to the theory: VQ's unused codes sit closer to the data than SimVQ's"
AS_PREDICTED = "as the theory predicts: VQ's unused codes sit farther from the data"


def distance_contrasts(frame: pd.DataFrame) -> pd.DataFrame:
    """vq − simvq per K (and latent dim) for each distance probe logged; one Holm family over all rows."""
    present = [c for c in DISTANCES if c in frame and frame[c].notna().any()]
    if not present or not {"vq", "simvq"} <= set(frame["quantizer"]):
        return pd.DataFrame(columns=["probe", *COMPARISON_COLUMNS])
    parts = []
    for column in present:   # one long frame: quantizer "vq:probe", so one call makes one family
        part = frame[frame["quantizer"].isin(["vq", "simvq"])].copy()
        part["quantizer"] = part["quantizer"] + ":" + column
        part["value"] = part[column]
        parts.append(part)
    long = pd.concat(parts, ignore_index=True)
    contrasts = [(f"vq − simvq: {c}", f"vq:{c}", f"simvq:{c}") for c in present]
    table = paired_contrasts(long, contrasts, "value", family="geometry")
    table.insert(0, "probe", [c.split(": ", 1)[1] for c in table["contrast"]])
    table["verdict"] = [v.replace(f"vq:{p} lower", CONTRARY).replace(f"vq:{p} higher", AS_PREDICTED)
                        for v, p in zip(table["verdict"], table["probe"])]
    return table


def distance_summary(table: pd.DataFrame) -> str:
    if table.empty:
        return "The unused-code distance was not logged for both vq and simvq: no geometry comparison."
    contrary = table[table["verdict"].str.startswith(CONTRARY)]
    if len(contrary):
        where = ", ".join(f"{r.probe} at K = {r.codebook_size_requested}" for r in contrary.itertuples())
        return f"Contrary evidence: VQ's unused codes sit closer to the data than SimVQ's ({where})."
    lower = table[table["difference"] < 0]
    if len(lower):
        return ("VQ's unused codes sit closer to the data than SimVQ's in "
                f"{len(lower)} of {len(table)} rows (not significant after Holm): the direction is contrary to "
                "the theory's stranded codes.")
    return "Where the difference is significant, VQ's unused codes sit farther from the data, as the theory predicts."
