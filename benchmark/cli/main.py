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


def error_line(error: BaseException) -> tuple[str, int]:
    """(one line naming the cause and the fix, exit code) for an error a user can cause; ("", 0) for an
    unexpected one (a bug: its traceback is worth showing)."""
    import errno as errnos

    text = " ".join(str(error).split())
    name = type(error).__name__
    if isinstance(error, ValueError):
        if ("nan" in text.lower().split() or "not finite" in text or "infinite" in text) and "--lr" not in text:
            text += "; the training diverged: a lower --lr, or another --option, may fix it"
        return text, 2
    try:
        import yaml

        if isinstance(error, yaml.YAMLError):
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or text
            return f"the sweep file is not valid YAML{where}: {problem}; fix the file (see sweeps/sweep_file.py)", 2
    except ImportError:
        pass
    if "tomllib" in type(error).__module__ or name == "TOMLDecodeError":
        return f"the sweep file is not valid TOML: {text}; fix the file", 2
    if name == "NonFiniteLossError":
        return f"{text}; the run is recorded FAILED. Fix: a lower --lr, or another --option", 1
    if isinstance(error, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower():
        return (f"out of memory ({name}: {text[:200]}); lower --codebook-size, --latent-dim or --batch-size, "
                "or use a machine with more memory", 1)
    module = type(error).__module__.split(".")[0]
    if module == "benchmark" and name in ("MlflowStoreError", "PermanentStoreError", "StoreLockTimeout"):
        return text, 1
    if module == "mlflow" or module == "sqlalchemy":
        return f"the MLflow store refused the call ({name}: {text[:300]}); check the store and its URI", 1
    if isinstance(error, OSError) and error.errno is not None:
        code = errnos.errorcode.get(error.errno, str(error.errno))
        path = f"{error.filename}: " if error.filename else ""
        return f"{path}{code} ({error.strerror}); check the path and its permissions", 1
    return "", 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    verbose = bool(getattr(args, "verbose", False))
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`vqbench ... | head`): nothing more to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as error:  # a clear one-line message; the traceback only with --verbose
        line, code = error_line(error)
        if verbose or not line:
            import traceback

            traceback.print_exc()
        if not line:
            line = (f"unexpected {type(error).__name__}: {' '.join(str(error).split())[:300]}"
                    + ("" if verbose else " (rerun with --verbose for the traceback)"))
            code = 1
        print(f"vqbench {args.command}: error: {line}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
