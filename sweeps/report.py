"""Text views of a sweep: the trial table and budget (``--dry-run``), the parent run's Markdown
description and params, and the summary table printed at the end."""
from __future__ import annotations

import math
from dataclasses import dataclass

from benchmark.tracking import keys

from .grid import Expansion, SweepGrid, Trial


def budget(grid: SweepGrid, expansion: Expansion) -> dict[str, object]:
    """The sweep's budget: what every trial gets, and the total."""
    base = grid.base
    samples = base.steps * base.batch_size
    return {
        "trials": len(expansion.trials),
        "steps": base.steps,
        "batch_size": base.batch_size,
        "samples_per_trial": samples,
        "total_samples": samples * len(expansion.trials),
        "eval_samples": base.eval_samples,
        "fid_samples": base.fid_samples,
    }


def format_table(headers: list[str], rows: list[list[object]]) -> str:
    """A plain fixed-width text table."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def trial_rows(trials: list[Trial]) -> list[list[object]]:
    rows = []
    for number, trial in enumerate(trials, 1):
        c = trial.config
        asked = "" if trial.codebook_size == c.codebook_size else str(c.codebook_size)
        rows.append([number, c.quantizer, trial.codebook_size, asked, c.latent_dim, c.seed, trial.note])
    return rows


TRIAL_HEADERS = ["#", "quantizer", "K", "K asked", "d", "seed", "note"]


def trial_table(expansion: Expansion) -> str:
    return format_table(TRIAL_HEADERS, trial_rows(expansion.trials))


def skipped_lines(expansion: Expansion) -> list[str]:
    return [f"skipped {s.quantizer} K={s.codebook_size}: {s.reason}" for s in expansion.skipped]


def data_and_backbone(base) -> tuple[str, str, str]:
    """How the budget's data and backbone read for its modality: ("photos at 32 px" or "speech, 16,000-sample
    clips at 16,000 Hz"; "backbone patch-mlp, width 128, ..."; "images" or "clips")."""
    from benchmark.evaluation.modality import get_modality

    modality = base.modality()
    if modality == "image":
        data = f"{base.dataset} at {base.image_size} px"
        shape = f", {base.num_downsamples} downsamples"
    else:
        data = f"{base.dataset}, {base.clip_samples:,}-sample clips at {base.sample_rate:,} Hz"
        shape = ""
    backbone = (f"backbone {base.resolved_backbone()}, width {base.width}, {base.num_res_blocks} res block(s)"
                + shape)
    return data, backbone, f"{get_modality(modality).sample_noun}s"


def budget_text(grid: SweepGrid, expansion: Expansion) -> str:
    b = budget(grid, expansion)
    base = grid.base
    data, backbone, samples = data_and_backbone(base)
    return (f"{b['trials']} trials x {b['steps']} steps x batch {b['batch_size']} = "
            f"{b['samples_per_trial']:,} samples per trial, {b['total_samples']:,} in total\n"
            f"data {data}; {backbone}; {base.optimizer} lr {base.lr:g}; eval on "
            f"{base.eval_samples or 'all test'} {samples} at {base.eval_checkpoints} checkpoint(s), "
            f"rFID/rKID on {base.fid_samples}")


def dry_run_text(name: str, preset: str | None, grid: SweepGrid, expansion: Expansion) -> str:
    lines = [f"sweep {name}" + (f" (preset {preset})" if preset else ""), trial_table(expansion), ""]
    lines += skipped_lines(expansion)
    lines.append(budget_text(grid, expansion))
    from .measurement import measurement_lines  # imports torch: only for a dry run

    lines += measurement_lines(grid.base, sorted({t.codebook_size for t in expansion.trials}))
    return "\n".join(lines)


def parent_params(grid: SweepGrid, expansion: Expansion) -> dict[str, object]:
    """The parent run's params: the grid's axes and the shared budget."""
    params: dict[str, object] = {
        "grid.quantizers": ",".join(grid.quantizers),
        "grid.codebook_sizes": ",".join(str(k) for k in grid.codebook_sizes),
        "grid.latent_dims": ",".join(str(d) for d in grid.latent_dims),
        "grid.seeds": ",".join(str(s) for s in grid.seeds),
        **{f"grid.seeds.{name}": ",".join(str(s) for s in seeds) for name, seeds in grid.seeds_per_quantizer.items()},
        "grid.trials": len(expansion.trials),
        "grid.skipped": len(expansion.skipped),
    }
    for name, options in sorted(grid.quantizer_options.items()):
        for option, value in sorted(options.items()):
            params[f"quantizer_options.{name}.{option}"] = value
    params.update(grid.budget())
    b = budget(grid, expansion)
    params["samples_per_trial"] = b["samples_per_trial"]
    params["total_samples"] = b["total_samples"]
    return params


def description_markdown(name: str, preset: str | None, grid: SweepGrid, expansion: Expansion) -> str:
    """The parent run's description (MLflow renders it as Markdown on the run page)."""
    b = budget(grid, expansion)
    base = grid.base
    data, backbone, samples = data_and_backbone(base)
    lines = [
        f"## Sweep `{name}`" + (f" (preset `{preset}`)" if preset else ""),
        "",
        f"{b['trials']} trials: quantizers {', '.join(grid.quantizers)} x codebook sizes "
        f"{', '.join(str(k) for k in grid.codebook_sizes)} x latent dims "
        f"{', '.join(str(d) for d in grid.latent_dims)} x seeds {', '.join(str(s) for s in grid.seeds)}.",
        "",
        "**Budget, identical for every trial:** "
        f"{b['steps']} steps x batch {b['batch_size']} = {b['samples_per_trial']:,} samples "
        f"({b['total_samples']:,} in total); data {data}; {backbone}; {base.optimizer} lr {base.lr:g}, "
        f"{base.warmup_steps} warm-up steps; evaluation on {base.eval_samples or 'all'} test {samples}, "
        f"rFID/rKID on {base.fid_samples}.",
        "",
        "| # | quantizer | K | d | seed | note |",
        "|---|---|---|---|---|---|",
    ]
    for number, trial in enumerate(expansion.trials, 1):
        c = trial.config
        lines.append(f"| {number} | {c.quantizer} | {trial.codebook_size} | {c.latent_dim} | {c.seed} | "
                     f"{trial.note} |")
    if expansion.skipped:
        lines += ["", "**Skipped combinations:**", ""]
        lines += [f"- {s.quantizer} K={s.codebook_size}: {s.reason}" for s in expansion.skipped]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ after the sweep
@dataclass
class TrialOutcome:
    """What became of one trial. ``status``: FINISHED, FAILED (raised, after its retries), NAN (loss
    went non-finite; its run is FAILED), or NOT RUN (the sweep stopped first; resume to run it)."""

    trial: Trial
    status: str
    run_id: str | None = None
    metrics: dict[str, float] | None = None
    error: str | None = None
    attempts: int = 0          # MLflow runs started for the trial, counting retired attempts
    reused: bool = False       # FINISHED in an earlier invocation of the sweep, not rerun


SUMMARY_HEADERS = ["quantizer", "K", "d", "seed", "status", "utilization", "rFID", "time (s)", "attempts"]


def root_cause(error: BaseException | None, limit: int = 300) -> str:
    """The innermost cause of a (Tune-wrapped) error, on one line."""
    if error is None:
        return "unknown error"
    cause = error
    while getattr(cause, "__cause__", None) is not None:
        cause = cause.__cause__
    lines = str(cause).strip().splitlines()
    return (lines[-1] if lines else type(cause).__name__)[:limit]


def _number(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def summary_table(outcomes: list[TrialOutcome]) -> str:
    rows = []
    for outcome in outcomes:
        c, metrics = outcome.trial.config, outcome.metrics or {}
        status = outcome.status + (" (earlier run)" if outcome.reused else "")
        rows.append([c.quantizer, outcome.trial.codebook_size, c.latent_dim, c.seed, status,
                     _number(metrics.get(keys.EVAL_UTILIZATION), 3), _number(metrics.get(keys.EVAL_RFID), 1),
                     _number(metrics.get(keys.COST_WALL_TIME), 1), outcome.attempts])
    table = format_table(SUMMARY_HEADERS, rows)
    errors = [f"  {o.trial.run_name}: {o.error}" for o in outcomes if o.error]
    return table + ("\nerrors:\n" + "\n".join(errors) if errors else "")


def results_markdown(outcomes: list[TrialOutcome], wall_time_s: float) -> str:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    lines = ["", "## Results", "",
             "Trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
             + f"; this invocation took {wall_time_s:.0f} s.", "",
             "| quantizer | K | d | seed | status | utilization | rFID | time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        c, m = o.trial.config, o.metrics or {}
        lines.append(f"| {c.quantizer} | {o.trial.codebook_size} | {c.latent_dim} | {c.seed} | {o.status} | "
                     f"{_number(m.get(keys.EVAL_UTILIZATION), 3)} | {_number(m.get(keys.EVAL_RFID), 1)} | "
                     f"{_number(m.get(keys.COST_WALL_TIME), 0)} |")
    return "\n".join(lines)
