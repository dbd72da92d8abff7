"""Run a Ray Tune sweep over quantizers x codebook sizes x latent dims x seeds, one identical budget
per trial, every trial a child run of one MLflow parent run.

examples:
  vqbench sweep --preset quick                 # the paper's 7 methods x 3 sizes, <= 10 min on 2 CPU cores
  vqbench sweep --preset mechanism             # VQ, SimVQ and 4 controls x 2 sizes x 3 seeds, about 1 h
  vqbench sweep --preset paper --data-dir /data/imagenet --dry-run
                                               # the paper-scale grid: trials, budget, test tokens per K
  vqbench sweep --quantizers vq,simvq --codebook-sizes 2^10,2^14 --latent-dims 8,64 --seeds 0,1,2
  vqbench sweep --config my_sweep.yaml         # a YAML/TOML sweep file (see sweeps/sweep_file.py)
  vqbench sweep --resume quick-20261105-143000 # continue an interrupted sweep; finished trials are kept
  vqbench sweep --preset paper --address HEAD:6379 --tracking-uri http://HEAD:5000 --gpus-per-trial 0.5
                                               # on a Ray cluster, logging to `vqbench server` on HEAD

Flags override a sweep file, which overrides its preset (default quick). FSQ, LFQ and BSQ take their own
latent dims (len(levels), log2 K); combinations they cannot run are skipped with the reason printed.
--dry-run also prints, per codebook size, the test tokens and the uniform utilization ceiling: a size
with fewer than 10 test tokens per code cannot be measured uncapped on that data.
On a Ray cluster the MLflow store must be one every worker reaches (`vqbench server`); a SQLite file or
a loopback URI is refused before anything is created.
"""
from __future__ import annotations

import argparse

# Budget flags: (flag, TrainConfig field, type, help)
BUDGET_FLAGS = [
    ("--steps", "steps", int, "optimizer steps per trial"),
    ("--batch-size", "batch_size", int, "images per step"),
    ("--lr", "lr", float, "AdamW learning rate"),
    ("--dataset", "dataset", str, "photos | fashion-mnist | cifar10 | folder | speech | audio-folder"),
    ("--data-dir", "data_dir", str, "data directory (fashion-mnist, cifar10, folder)"),
    ("--image-size", "image_size", int, "image side in pixels"),
    ("--width", "width", int, "backbone channels at full resolution"),
    ("--eval-samples", "eval_samples", int, "test images for utilization, PSNR, SSIM"),
    ("--fid-samples", "fid_samples", int, "test images for rFID/rKID (0 disables them)"),
    ("--device", "device", str, "auto | cpu | cuda | cuda:N"),
]
GRID_FLAGS = ("preset", "config", "quantizers", "codebook_sizes", "latent_dims", "seeds", "set", "name",
              "experiment", "dry_run") + tuple(field for _, field, _, _ in BUDGET_FLAGS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("what to sweep")
    what.add_argument("--preset", choices=["quick", "full", "mechanism", "paper", "audio-quick", "audio-paper",
                                           "decide"],
                      help="start from a named sweep (default quick): quick = the paper's table on 2 CPU "
                           "cores in <= 10 min; full = every method and control; mechanism = the controls "
                           "of the collapse theory, 3 seeds, ~1 h; paper = the paper's scale (needs --data-dir); "
                           "audio-quick = the paper's methods on offline synthesized speech, <= 10 min; "
                           "audio-paper = LibriTTS (needs --data-dir); decide = the pre-registered decisive "
                           "experiment (sweeps/designs/decide.toml): learning-rate pick, seeds until the "
                           "intervals are tight, report in --out (about 30 min on 2 cores)")
    what.add_argument("--out", default="vqbench_figures/decide",
                      help="with --preset decide: where its report goes (default vqbench_figures/decide)")
    what.add_argument("--config", metavar="FILE", help="a .yaml/.toml sweep file")
    what.add_argument("--quantizers", help="comma-separated quantizer names, e.g. vq,simvq")
    what.add_argument("--codebook-sizes", help="comma-separated sizes, 2^k allowed, e.g. 2^10,2^14")
    what.add_argument("--latent-dims", help="comma-separated latent dims (FSQ/LFQ use their own)")
    what.add_argument("--seeds", help="comma-separated seeds")
    budget = parser.add_argument_group("budget (identical for every trial)")
    for flag, field, kind, help_text in BUDGET_FLAGS:
        budget.add_argument(flag, dest=field, type=kind, help=help_text)
    budget.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="any other TrainConfig field, e.g. --set num_res_blocks=2 (repeatable)")
    run = parser.add_argument_group("where and how to run")
    run.add_argument("--name", help="the sweep's name (MLflow parent run, Tune directory); default "
                                    "<preset>-<date>-<time>")
    run.add_argument("--experiment", help="MLflow experiment (default vqbench-<preset>)")
    run.add_argument("--resume", metavar="NAME", help="continue the interrupted sweep NAME")
    run.add_argument("--dry-run", action="store_true", help="print the trials and budget; train nothing")
    run.add_argument("--no-estimate", action="store_true",
                     help="with --dry-run: skip the wall-time estimate (by default a few steps of each "
                          "configuration are timed here, about 20 s, to estimate the sweep's wall time)")
    run.add_argument("--storage-path", default="./vqbench_runs", help="Ray Tune results (default ./vqbench_runs)")
    run.add_argument("--address", help="join this Ray cluster (HOST:6379, auto or ray://HOST:10001); 'local' "
                                       "starts a private local Ray even when RAY_ADDRESS is set or `ray start` ran "
                                       "here (default: that cluster, else a local Ray)")
    run.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    run.add_argument("--cpus-per-trial", type=int, default=1,
                     help="CPUs (and torch threads) each trial gets (default 1)")
    run.add_argument("--gpus-per-trial", type=float,
                     help="GPU share per trial (default: 0 without GPUs, else an equal share per trial slot)")
    run.add_argument("--max-failures", type=int, default=2,
                     help="retries of a trial that raises (default 2; a NaN loss is never retried)")
    run.add_argument("--tracking-uri", help="MLflow store (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    run.add_argument("--no-system-metrics", action="store_true", help="don't log CPU/GPU/memory per trial")
    console = run.add_mutually_exclusive_group()
    console.add_argument("--quiet", action="store_true", help="no line per trial, only the summary")
    console.add_argument("--verbose", action="store_true",
                         help="also Ray Tune's status tables and Ray's and MLflow's own log lines")


def build_grid(args: argparse.Namespace):
    """(grid, preset, name, experiment) from a preset, a sweep file and flags, in that order."""
    from .grid import override_grid, parse_int_list
    from .presets import get_preset
    from .sweep_file import load_sweep_file

    sweep_file = load_sweep_file(args.config) if args.config else None
    preset = args.preset or (sweep_file.preset if sweep_file else None)
    customised = sweep_file is not None or args.set or any(
        getattr(args, name) is not None for name in ("quantizers", "codebook_sizes", "latent_dims", "seeds")
    ) or any(getattr(args, field) is not None for _, field, _, _ in BUDGET_FLAGS)
    if preset is None and not customised:
        preset = "quick"  # plain `vqbench sweep` is the quick preset
    grid = get_preset(preset or "quick")
    if sweep_file is not None:
        grid = override_grid(grid, quantizers=sweep_file.quantizers, codebook_sizes=sweep_file.codebook_sizes,
                             latent_dims=sweep_file.latent_dims, seeds=sweep_file.seeds,
                             budget=sweep_file.budget, quantizer_options=sweep_file.quantizer_options)
    budget = {field: getattr(args, field) for _, field, _, _ in BUDGET_FLAGS if getattr(args, field) is not None}
    budget.update(parse_assignments(args.set))
    grid = override_grid(
        grid,
        quantizers=[q.strip() for q in args.quantizers.split(",") if q.strip()] if args.quantizers else None,
        codebook_sizes=parse_int_list("--codebook-sizes", args.codebook_sizes) if args.codebook_sizes else None,
        latent_dims=parse_int_list("--latent-dims", args.latent_dims) if args.latent_dims else None,
        seeds=parse_int_list("--seeds", args.seeds) if args.seeds else None,
        budget=budget,
    )
    name = args.name or (sweep_file.name if sweep_file else None)
    experiment = args.experiment or (sweep_file.experiment if sweep_file else None)
    return grid, preset, name, experiment


def parse_assignments(assignments: list[str]) -> dict[str, object]:
    """``["steps=10", "data_dir=null"]`` -> ``{"steps": 10, "data_dir": None}`` (values read as YAML)."""
    import yaml

    values = {}
    for assignment in assignments:
        field, sep, text = assignment.partition("=")
        if not sep or not field.strip():
            raise ValueError(f"--set takes FIELD=VALUE; got {assignment!r}")
        values[field.strip()] = yaml.safe_load(text) if text.strip() else None
    return values


def run(args: argparse.Namespace) -> int:
    import sys

    from benchmark.tracking.store import MlflowStoreError, PermanentStoreError
    from benchmark.tracking.runs import resolve_tracking_uri

    from .cluster import check_target, quiet_logging
    from .state import load_state

    # A cluster that cannot reach the store is refused before Ray, torch or MLflow load: check_target
    # runs before anything below imports sweeps.launch (whose grid imports the quantizers, hence torch).
    if args.resume:
        given = [f for f in GRID_FLAGS if getattr(args, f, None) not in (None, False, [])]
        if given:
            raise ValueError(f"--resume runs the grid stored with the sweep; drop "
                             f"{', '.join('--' + f.replace('_', '-') for f in given)}")
        check_target(args.address, load_state(args.storage_path, args.resume).tracking_uri, args.num_cpus)
    elif not args.dry_run:
        check_target(args.address, resolve_tracking_uri(args.tracking_uri), args.num_cpus)
    from .launch import SweepSettings, default_experiment, default_sweep_name, resume_sweep, start_sweep
    from .report import dry_run_text, skipped_lines, summary_table

    settings = SweepSettings(storage_path=args.storage_path, address=args.address, num_cpus=args.num_cpus,
                             cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                             max_failures=args.max_failures, tracking_uri=args.tracking_uri,
                             log_system_metrics=not args.no_system_metrics,
                             verbose=0 if args.quiet else 2 if args.verbose else 1)
    resume_hint = f"vqbench sweep --resume {{}} --storage-path {args.storage_path}"
    quiet_logging(settings.verbose >= 2)
    if args.resume:
        name = args.resume
        print(f"resuming sweep {name} from {args.storage_path}")
        call = lambda: resume_sweep(name, settings)  # noqa: E731
    else:
        from .grid import expand_grid

        if args.preset == "decide":
            return run_decide_preset(args, settings)
        grid, preset, name, experiment = build_grid(args)
        expansion = expand_grid(grid)
        name = name or default_sweep_name(preset)
        if args.dry_run:
            from .launch import check_before_creating

            check_before_creating(grid, expansion)  # the same refusals as a real run: data, memory
            print(dry_run_text(name, preset, grid, expansion))
            if not args.no_estimate:
                import os

                from .calibration import estimate_line

                print(estimate_line(expansion.trials, cpus=args.num_cpus or os.cpu_count() or 1,
                                    cpus_per_trial=args.cpus_per_trial))
            return 0
        for line in skipped_lines(expansion):
            print(line)
        experiment = experiment or default_experiment(preset)
        print(f"sweep {name} -> MLflow experiment {experiment!r}; if interrupted: {resume_hint.format(name)}")
        call = lambda: start_sweep(grid, name=name, preset=preset, experiment=experiment,  # noqa: E731
                                   settings=settings)
    try:
        outcome = call()
    except KeyboardInterrupt:
        print(f"\ninterrupted: the sweep's parent run is KILLED; continue with  {resume_hint.format(name)}")
        return 130
    except PermanentStoreError:
        raise  # one line from benchmark.cli.main: the path, the errno and the fix
    except MlflowStoreError as error:
        print(f"vqbench sweep: error: {error}\nonce the store answers, continue with  {resume_hint.format(name)}",
              file=sys.stderr)
        return 1
    print()
    print(summary_table(outcome.outcomes))
    print(f"\nsweep {outcome.name}: parent run {outcome.parent_run_id} {outcome.parent_status} in experiment "
          f"{outcome.experiment!r} after {outcome.wall_time_s:.0f} s; "
          + ", ".join(f"{n} {s}" for s, n in sorted(outcome.counts.items())))
    if outcome.cleanup_error:
        print(f"vqbench sweep: the MLflow store failed while the sweep was being closed ({outcome.cleanup_error}); "
              f"{resume_hint.format(outcome.name)} repairs it")
        return 1
    if outcome.parent_status == "KILLED":
        print(f"interrupted: continue with  {resume_hint.format(outcome.name)}")
        return 130
    if outcome.counts.get("FAILED"):
        print(f"vqbench sweep: {outcome.counts['FAILED']} trial(s) failed (their errors are listed above; each was "
              f"recorded FAILED once, not retried); the parent run is FAILED. After a fix, "
              f"{resume_hint.format(outcome.name)} reruns them", file=sys.stderr)
        return 1
    return 0


def run_decide_preset(args: argparse.Namespace, settings) -> int:
    """``--preset decide``: the staged decisive experiment (sweeps.decide); --name resumes it."""
    from .decide import DEFAULT_EXPERIMENT, load_design, run_decide

    customised = [f for f in GRID_FLAGS if f not in ("preset", "name", "experiment", "dry_run", "no_estimate")
                  and getattr(args, f, None) not in (None, False, [])]
    if customised or args.config:
        raise ValueError("--preset decide runs its pre-registered design (sweeps/designs/decide.toml) as written; "
                         f"drop {', '.join('--' + f.replace('_', '-') for f in customised) or '--config'}")
    design, digest, _ = load_design()
    name = args.name or "decide"
    if args.dry_run:
        print(f"decisive experiment {name!r}: design {digest}, arms {design['arms']}, sizes "
              f"{design['codebook_sizes']}, learning rates {design['learning_rate']['grid']}, pilot "
              f"{design['seeds']['pilot']} seeds, up to {design['seeds']['max_seeds']}; report -> {args.out}")
        if not args.no_estimate:
            import os

            from .decide import estimate_decide

            try:
                print(estimate_decide(design, cpus=args.num_cpus or os.cpu_count() or 1,
                                      cpus_per_trial=args.cpus_per_trial))
            except Exception as error:  # noqa: BLE001 - an estimate must never fail a dry run
                print(f"no wall-time estimate ({type(error).__name__}: {error})")
        return 0
    run_decide(name=name, settings=settings, experiment=args.experiment or DEFAULT_EXPERIMENT, out_dir=args.out)
    return 0
