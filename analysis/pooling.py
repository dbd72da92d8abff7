"""Which runs may be analysed together, and what counts as one sample (issue 12).

Two rules, applied to the FINISHED runs before any statistic:

1. **One budget.** Runs are pooled only when every field that sets the budget or the measurement (steps,
   batch size, optimizer, learning rate, backbone, data, evaluation and rFID images, and the probe settings
   dead_code_window, probe_every, eval_checkpoints, checkpoint_ratio) is the same, and each
   quantizer has one set of options. Otherwise :func:`check_poolable` raises a ValueError naming the field
   and its values: a utilization at 200 steps is not a seed of one at 2,000.
2. **One seed is one sample.** Runs of the same trial (same quantizer, requested K, latent dim and seed:
   e.g. two identical sweeps in one experiment) are the same seed, not new evidence. :func:`drop_repeats`
   keeps the latest; with ``allow_repeats`` each repeat is kept as an extra sample (``replicate`` 1, 2, …),
   which the report states.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from benchmark.tracking import keys

#: Config params that must be equal across pooled runs (missing in a run counts as its own value).
BUDGET_FIELDS = ["dataset", "backbone", "image_size", "sample_rate", "clip_samples", "steps", "batch_size", "optimizer", "lr", "weight_decay",
                 "warmup_steps", "width", "num_res_blocks", "num_downsamples", "eval_samples",
                 "eval_indices_digest", "fid_samples", "fid_indices_digest", "fid_weights_digest",
                 # the probe settings: a revival over a 100-step window is not one over 25 steps, and the
                 # convergence slope depends on where the checkpoints sit
                 "dead_code_window", "probe_every", "eval_checkpoints", "checkpoint_ratio"]
#: One trial cell: runs that agree on these are repeats of one seed.
TRIAL_IDENTITY = ["quantizer", "codebook_size_requested", "latent_dim", "seed"]
NOT_LOGGED = "not logged"


@dataclass
class Pooling:
    """What pooling did: how many runs were repeats, and whether they were kept as samples."""

    allow_repeats: bool
    repeated_trials: int = 0          # trial cells with more than one FINISHED run
    repeats: int = 0                  # runs beyond the first in those cells
    sweeps: list[str] = field(default_factory=list)   # sweep names among the pooled runs

    def sentence(self) -> str:
        where = f" from {len(self.sweeps)} sweeps ({', '.join(self.sweeps)})" if len(self.sweeps) > 1 else ""
        if not self.repeats:
            return f"Every (quantizer, K, latent dim, seed) has one FINISHED run{where}: one run is one sample."
        if self.allow_repeats:
            return (f"{self.repeated_trials} trials were run more than once{where}; with --allow-repeats each of "
                    f"the {self.repeats} extra runs counts as an extra sample (replicate), so n counts runs, "
                    "not seeds.")
        return (f"{self.repeated_trials} trials were run more than once{where}: repeats of a seed are the same "
                f"seed, so only the latest run of each is used ({self.repeats} earlier runs left out; "
                "--allow-repeats would count them as extra samples).")


def _shown(value) -> str:
    return NOT_LOGGED if value is None or value is pd.NA or (isinstance(value, float) and value != value) else str(value)


def _differing(frame: pd.DataFrame, column: str) -> str | None:
    values = frame[column].map(_shown)
    if values.nunique() < 2:
        return None
    parts = []
    for value, part in frame.groupby(values, sort=True):
        sweeps = sorted({str(s) for s in part.get("sweep", pd.Series(dtype=object)).dropna()})
        where = f" (sweep {', '.join(sweeps)})" if sweeps else ""
        parts.append(f"{value!r} in {len(part)} runs{where}")
    return "; ".join(parts)


def check_poolable(frame: pd.DataFrame) -> None:
    """Raise ValueError when the runs differ in modality, in a budget field, or one quantizer in its options."""
    if keys.PARAM_MODALITY in frame:
        modalities = frame[keys.PARAM_MODALITY].fillna("image")   # runs logged before audio existed: images
        if modalities.nunique() > 1:
            counts = ", ".join(f"{n} {m}" for m, n in modalities.value_counts().items())
            raise ValueError(f"cannot pool runs of different modalities ({counts}): utilization, quality metrics "
                             "and token counts mean different things for images and audio. Analyse each "
                             "modality's sweep on its own (--sweep RUN_ID or --experiment NAME)")
    for column in BUDGET_FIELDS:
        if column in frame:
            values = _differing(frame, column)
            if values:
                raise ValueError(f"cannot pool runs with different {column}: {values}. Runs at different budgets "
                                 "are not seeds of one experiment: analyse one sweep (--sweep RUN_ID) or an "
                                 "experiment that holds one budget")
    if "quantizer_options" in frame:
        for quantizer, part in frame.groupby("quantizer", sort=True):
            values = _differing(part, "quantizer_options")
            if values:
                raise ValueError(f"cannot pool {quantizer!r} runs with different quantizer options: {values}")


def drop_repeats(frame: pd.DataFrame, allow_repeats: bool = False) -> tuple[pd.DataFrame, Pooling]:
    """One run per trial cell (the latest by start time), or every run as a numbered replicate when
    ``allow_repeats``. Adds the column ``replicate`` (0 for the only or kept run)."""
    ordered = frame.sort_values("start_time", kind="stable")
    sizes = ordered.groupby(TRIAL_IDENTITY, dropna=False).size()
    sweeps = sorted({str(s) for s in frame.get("sweep", pd.Series(dtype=object)).dropna()})
    pooling = Pooling(allow_repeats, int((sizes > 1).sum()), int((sizes - 1).sum()), sweeps)
    if allow_repeats:
        kept = ordered.assign(replicate=ordered.groupby(TRIAL_IDENTITY, dropna=False).cumcount())
    else:
        kept = ordered.drop_duplicates(TRIAL_IDENTITY, keep="last").assign(replicate=0)
    return kept.sort_index(), pooling
