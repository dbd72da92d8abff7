"""Regenerate the comparison figures, results table and report from the runs in MLflow.

Reads the tracking store named by MLFLOW_TRACKING_URI (or MLflow's default, sqlite:///mlflow.db in the
current directory). By default it analyses the most recent sweep; the files are also logged as
artifacts on the sweep's parent run.

examples:
  vqbench figures                              # latest sweep -> ./vqbench_figures
  vqbench figures --experiment vqbench-quick   # every trial run of an experiment
  vqbench figures --sweep 0af3c2... --out figs # one sweep, by its parent run id
"""
from __future__ import annotations

import argparse

DEFAULT_OUT = "vqbench_figures"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--experiment", metavar="NAME", help="analyse every trial run in this MLflow experiment")
    which.add_argument("--sweep", metavar="RUN_ID", help="analyse the child runs of this sweep parent run")
    parser.add_argument("--out", metavar="DIR", default=DEFAULT_OUT,
                        help=f"folder for figures, tables and report (default: ./{DEFAULT_OUT})")
    parser.add_argument("--no-log-artifacts", dest="log_artifacts", action="store_false",
                        help="don't log the files as artifacts on the sweep's parent run")


def run(args: argparse.Namespace) -> int:
    from .pipeline import regenerate

    outputs = regenerate(args.out, experiment=args.experiment, sweep=args.sweep, log_artifacts=args.log_artifacts)
    print(f"done: {len(outputs.figures_written)} figures, {len(outputs.figures_skipped)} skipped; "
          f"report at {args.out}/report.md")
    return 0
