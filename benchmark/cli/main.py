"""The ``vqbench`` command. Each subcommand lives in its own module exposing
``add_arguments(parser)`` and ``run(args) -> int``; heavy imports (torch, ray, mlflow) happen inside
``run``, and only the module of the command given is imported, so that ``vqbench --help`` stays fast
and a command that refuses bad input does so at once."""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("benchmark.cli.list_command", "list the registered quantizers with their options and defaults"),
    "train": ("benchmark.cli.train_command", "train one autoencoder with one quantizer and log it to MLflow"),
    "sweep": ("sweeps.command", "run a Ray Tune sweep over quantizers x codebook sizes x latent dims x seeds"),
    "figures": ("analysis.command", "regenerate comparison figures, tables and statistics from MLflow"),
    "ui": ("benchmark.tracking.ui", "start the MLflow UI on 127.0.0.1 for the vqbench tracking store"),
    "server": ("benchmark.tracking.server", "start an MLflow tracking server for a team or a Ray cluster"),
    "bench": ("benchmark.speed.bench", "time and measure memory of every quantizer against reference implementations"),
    "profile": ("sweeps.profile", "where a sweep's time goes, and its wall time against a bare PyTorch loop"),
}

DESCRIPTION = """\
vqbench: does your vector quantizer collapse? Train VQ, EMA-VQ, FC, FSQ, LFQ, LC, SimVQ, the fixes people
use and the controls of the collapse theory under identical budgets, sweep codebook sizes with Ray Tune,
log everything to MLflow, and regenerate the figures and statistical verdicts.

typical use:
  vqbench sweep --preset quick      # a small sweep on 2 CPU cores, runs logged to ./mlflow.db
  vqbench figures                   # figures + statistics from the latest sweep -> ./vqbench_figures
  vqbench ui                        # browse the runs in the MLflow UI
"""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command``, only that command's module is imported (the others are listed)."""
    parser = argparse.ArgumentParser(
        prog="vqbench", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if name != command:
            subparsers.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(
            name, help=help_text, description=(module.__doc__ or help_text).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ValueError as error:  # bad input: a clear one-line message, no traceback
        print(f"vqbench {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
