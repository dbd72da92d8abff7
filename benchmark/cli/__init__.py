"""The `vqbench` command line: one module per command, dispatched by benchmark.cli.main."""
from benchmark.cli.main import main

__all__ = ["main"]
