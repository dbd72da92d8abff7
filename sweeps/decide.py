"""The decisive experiment (issue 20), run end to end by ``vqbench sweep --preset decide``: the design file
logged to MLflow before any trial, each arm's learning rate picked on a validation split, a pilot of seeds,
more seeds until every pre-registered contrast's adjusted interval is tight enough (or the cap), and the
report.

Every stage is an ordinary sweep (``<name>-lr``, ``<name>-lr-paper``, ``<name>-seeds-<n>``) in one MLflow
experiment, so its trials are Ray Tune trials and MLflow runs like any other, and an interrupted run
resumes: rerunning the same command with the same ``--name`` resumes the unfinished stage and recomputes
every decision (the picks, the next seed count) from what MLflow holds. The design cannot change under a
running experiment: a different design digest under the same name is refused.
"""
from __future__ import annotations

import hashlib
import tomllib
from dataclasses import replace
from pathlib import Path

from .grid import SweepGrid, base_config

DESIGN_FILE = Path(__file__).parent / "designs" / "decide.toml"
DEFAULT_EXPERIMENT = "vqbench-decide"
SECTIONS = ("arms", "codebook_sizes", "latent_dim", "seed_offset", "alpha", "contrasts", "shares", "seeds",
            "learning_rate", "budget")


def load_design(path: str | Path = DESIGN_FILE) -> tuple[dict, str, bytes]:
    """(design, sha256 digest of the file's bytes, the bytes). ValueError naming what is wrong."""
    import quantizers

    blob = Path(path).read_bytes()
    try:
        design = tomllib.loads(blob.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"design file {path}: not valid TOML ({error})") from None
    missing = [key for key in SECTIONS if key not in design]
    if missing:
        raise ValueError(f"design file {path}: missing {missing}")
    unknown = sorted(set(design["arms"]) - set(quantizers.available()))
    if unknown:
        raise ValueError(f"design file {path}: unknown arm(s) {unknown}")
    for contrast in design["contrasts"]:
        if contrast["plus"] not in design["arms"] or contrast["minus"] not in design["arms"]:
            raise ValueError(f"design file {path}: contrast {contrast['name']!r} names an arm not in arms")
    names = {c["name"] for c in design["contrasts"]}
    if not {design["shares"]["total"], *design["shares"]["parts"]} <= names:
        raise ValueError(f"design file {path}: shares name a contrast that is not defined")
    base_config(design["budget"]).validate()
    return design, hashlib.sha256(blob).hexdigest()[:16], blob


# ----------------------------------------------------------------------------- the stages' grids
def _grid(design: dict, *, seeds: list[int], sizes: list[int], budget: dict, **extra) -> SweepGrid:
    return SweepGrid(list(design["arms"]), list(sizes), [design["latent_dim"]], list(seeds),
                     base=base_config({**design["budget"], **budget}), **extra)


def learning_rate_grids(design: dict) -> dict[str, SweepGrid]:
    """The pick's trials: every arm at every grid rate, and at the paper's optimizer, on the validation split."""
    rule = design["learning_rate"]
    common = dict(seeds=[design["seed_offset"] + rule["seed"]], sizes=[rule["codebook_size"]])
    validation = {"validation_fraction": rule["validation_fraction"]}
    return {
        "lr": _grid(design, budget=validation, learning_rates=list(rule["grid"]), **common),
        "lr-paper": _grid(design, budget={**validation, "optimizer": rule["paper_optimizer"],
                                          "lr": rule["paper_lr"], "warmup_steps": 0}, **common),
    }


def seeds_grid(design: dict, picks: dict[str, float], first: int, last: int) -> SweepGrid:
    """The confirmatory trials for seed numbers first..last-1 (offset by the design's seed_offset), each arm
    at its picked learning rate, on the test set."""
    offset = design["seed_offset"]
    return _grid(design, seeds=list(range(offset + first, offset + last)), sizes=design["codebook_sizes"],
                 budget={}, budget_per_quantizer={arm: {"lr": lr} for arm, lr in picks.items()})


# ----------------------------------------------------------------------------- running it
def log_design(client, experiment: str, name: str, digest: str, blob: bytes) -> None:
    """Log the design as its own run before the first trial (its start time is the pre-registration
    time); refuse a different design under an existing name."""
    import tempfile

    from analysis.decisive_runs import DESIGN_ARTIFACT, KIND_DESIGN, TAG_DESIGN_DIGEST
    from benchmark.tracking import keys
    from benchmark.tracking.runs import experiment_id

    experiment_ids = [experiment_id(client, experiment)]
    earlier = client.search_runs(experiment_ids, f"tags.`{keys.TAG_KIND}` = '{KIND_DESIGN}' and "
                                                 f"tags.`{keys.TAG_SWEEP}` = '{name}'")
    if earlier:
        logged = earlier[0].data.tags.get(TAG_DESIGN_DIGEST)
        if logged != digest:
            raise ValueError(f"decisive experiment {name!r} was started with design {logged}; the design file "
                             f"is now {digest}. A changed design is a new experiment: pass another --name")
        return
    run = client.create_run(experiment_ids[0], run_name=f"{name} design",
                            tags={keys.TAG_KIND: KIND_DESIGN, keys.TAG_SWEEP: name, TAG_DESIGN_DIGEST: digest})
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / DESIGN_ARTIFACT
        path.write_bytes(blob)
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id, "FINISHED")


def run_stage(grid: SweepGrid, stage: str, experiment: str, settings, say) -> None:
    """Run one stage's sweep, or resume it if an earlier invocation created it."""
    from .launch import resume_sweep, start_sweep
    from .state import STATE_FILE, sweep_dir

    if (sweep_dir(settings.storage_path, stage) / STATE_FILE).exists():
        say(f"[decide] resuming stage {stage}")
        outcome = resume_sweep(stage, settings)
    else:
        say(f"[decide] stage {stage}: {len(grid.quantizers)} arms")
        outcome = start_sweep(grid, name=stage, preset="decide", experiment=experiment, settings=settings)
    say(f"[decide] stage {stage}: {outcome.parent_status} in {outcome.wall_time_s:.0f} s, "
        + ", ".join(f"{n} {s}" for s, n in sorted(outcome.counts.items())))


def run_decide(*, name: str, settings, experiment: str = DEFAULT_EXPERIMENT, out_dir: str | Path,
               design_path: str | Path = DESIGN_FILE, say=print) -> Path:
    """The whole experiment: design, learning-rate pick, pilot, added seeds, report. Returns the report path."""
    from analysis.decisive import confirmatory, next_seed_count, pick_learning_rates
    from analysis.decisive_report import write_report
    from analysis.decisive_runs import confirmatory_frame, stage_name, trial_frame
    from benchmark.tracking import store
    from benchmark.tracking.runs import resolve_tracking_uri

    design, digest, blob = load_design(design_path)
    uri = resolve_tracking_uri(settings.tracking_uri)
    settings = replace(settings, tracking_uri=uri)
    client = store.client(uri)
    log_design(client, experiment, name, digest, blob)
    say(f"[decide] design {digest} logged in experiment {experiment!r} as {name!r}")

    for stage, grid in learning_rate_grids(design).items():
        run_stage(grid, stage_name(name, stage), experiment, settings, say)
    picks = pick_learning_rates(trial_frame(client, experiment, name), design)
    say("[decide] learning rates picked on validation MSE: "
        + ", ".join(f"{arm} {lr:g}" for arm, lr in picks.items()))

    seeds, target = 0, design["seeds"]["pilot"]
    while target is not None:
        run_stage(seeds_grid(design, picks, seeds, target), stage_name(name, f"seeds-{target}"), experiment,
                  settings, say)
        seeds = target
        contrasts = confirmatory(confirmatory_frame(trial_frame(client, experiment, name)), design)
        widest = max(row.half_width for row in contrasts)
        target = next_seed_count(contrasts, design, seeds)
        say(f"[decide] {seeds} seeds: widest adjusted half-width {widest:.3f} (target "
            f"{design['seeds']['target_half_width']})" + (f"; adding seeds up to {target}" if target else "; done"))
    report = write_report(client, experiment, name, out_dir)
    say(f"[decide] report: {report}")
    return report


def estimate_decide(design: dict, cpus: int, cpus_per_trial: int = 1) -> str:
    """The dry run's wall-time estimate of the whole experiment: one short calibration
    (:func:`sweeps.calibration.estimate_sweep`) of every stage's trials, then each stage scheduled on its own
    (stages run one after another, each trial at its cap: an upper bound when trials may stop early)."""
    from .calibration import estimate_sweep
    from .grid import expand_grid

    pilot, cap = design["seeds"]["pilot"], design["seeds"]["max_seeds"]
    rates = {arm: design["budget"]["lr"] for arm in design["arms"]}   # the rate does not change a step's cost
    stages = {name: expand_grid(grid).trials for name, grid in learning_rate_grids(design).items()}
    stages["pilot"] = expand_grid(seeds_grid(design, rates, 0, pilot)).trials
    stages["one more seed"] = expand_grid(seeds_grid(design, rates, pilot, pilot + 1)).trials
    estimate = estimate_sweep([t for trials in stages.values() for t in trials], cpus, cpus_per_trial)
    minutes, start = {}, 0
    for name, trials in stages.items():
        minutes[name] = estimate.wall_of(estimate.trial_s[start:start + len(trials)]) / 60
        start += len(trials)
    before_loop = minutes["lr"] + minutes["lr-paper"] + minutes["pilot"]
    lines = [f"estimated wall time on this machine, stage by stage (each trial at its {design['budget']['steps']}-step "
             f"cap, so at most): learning-rate pick {minutes['lr'] + minutes['lr-paper']:.0f} min "
             f"({len(stages['lr']) + len(stages['lr-paper'])} trials), pilot {minutes['pilot']:.0f} min "
             f"({len(stages['pilot'])} trials), each further seed {minutes['one more seed']:.1f} min "
             f"({len(stages['one more seed'])} trials)",
             f"  total: {before_loop:.0f} min if the pilot's {pilot} seeds are enough, "
             f"{before_loop + (cap - pilot) * minutes['one more seed']:.0f} min at the cap of {cap} seeds",
             f"  ({estimate.calibration()})"]
    return "\n".join(lines)
