"""Helpers for tests that start processes of their own."""
from __future__ import annotations

import os
import signal
import subprocess


def stop(process: subprocess.Popen, sig=signal.SIGTERM) -> None:
    """Stop a process this test started, and its children (its own session): ``sig``, then SIGKILL to
    whatever is left after 20 s."""
    try:
        os.killpg(process.pid, sig)
        process.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
