"""Regenerate the comparison figures, results table and report from the runs in MLflow.

Reads the tracking store given by --tracking-uri, else MLFLOW_TRACKING_URI, else ./mlflow.db (the same
resolution as `vqbench sweep`). By default it analyses the most recent sweep; the files are also logged
as artifacts on the sweep's parent run.

Runs are pooled only at one budget: runs that differ in steps, batch size, optimizer, learning rate,
backbone, dataset, evaluation or rFID images are refused with the differing field named. Runs of the same
trial (quantizer, K, latent dim, seed) from several sweeps are the same seed: the latest is used, unless
--allow-repeats counts each as an extra sample.

examples:
  vqbench figures                              # latest sweep -> ./vqbench_figures
  vqbench figures --experiment vqbench-quick   # every trial run of an experiment
  vqbench figures --sweep 0af3c2... --out figs # one sweep, by its parent run id
  vqbench figures --tracking-uri http://127.0.0.1:5000
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
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow store (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db, as for sweep)")
    parser.add_argument("--allow-repeats", action="store_true",
                        help="count repeated runs of one trial (same quantizer, K, latent dim, seed) as extra "
                             "samples instead of one seed (the report says so)")
    parser.add_argument("--no-log-artifacts", dest="log_artifacts", action="store_false",
                        help="don't log the files as artifacts on the sweep's parent run")


def run(args: argparse.Namespace) -> int:
    from .pipeline import regenerate

    outputs = regenerate(args.out, experiment=args.experiment, sweep=args.sweep, log_artifacts=args.log_artifacts,
                         tracking_uri=args.tracking_uri, allow_repeats=args.allow_repeats)
    print(f"done: {len(outputs.figures_written)} figures, {len(outputs.figures_skipped)} skipped; "
          f"report at {args.out}/report.md")
    return 0
