"""`python -m benchmark.cli ...`: the vqbench command (tests and the drill start it this way)."""
import sys

from benchmark.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
