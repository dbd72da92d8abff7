"""``python -m benchmark.speed --worker CASE_JSON`` measures one configuration in this (child) process and
prints its record (what :func:`benchmark.speed.runner.run_case` starts); with any other arguments it runs
the ``vqbench bench`` command."""
from __future__ import annotations

import sys

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        from benchmark.speed.measure import worker_main

        sys.exit(worker_main(sys.argv[2]))
    from benchmark.speed.bench import main

    sys.exit(main(sys.argv[1:]))
