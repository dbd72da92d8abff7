#!/usr/bin/env python
"""Fault drill (issue 14): SIGKILL a small sweep's driver at random moments and resume it each time, kill
and restart its tracking server mid-sweep, then count lost, duplicated and stuck runs (all must be 0).
The drill itself is sweeps/drill.py; run from the repository root:

    .venv/bin/python scripts/fault_drill.py --kills 10 --seed 0
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweeps.drill import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
