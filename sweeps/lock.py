"""One process at a time per sweep: an advisory lock in the sweep's directory.

Two drivers of one sweep (two ``--resume NAME`` at once) would both train its unfinished trials. The
driver holds an exclusive ``flock`` on ``<storage>/<name>/vqbench_sweep.lock`` while it runs and writes
its pid, host and start time there; a second driver is refused with them. The kernel drops the lock
when the holder exits, however it exits (SIGKILL included), so a killed sweep never stays locked.
"""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

LOCK_FILE = "vqbench_sweep.lock"


class SweepBusyError(ValueError):
    """Another process holds the sweep (a ValueError: the command prints it as one line)."""


@contextmanager
def sweep_lock(directory: Path, name: str):
    """Hold sweep ``name``'s lock for the ``with`` block; SweepBusyError when another process has it."""
    import fcntl

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise SweepBusyError(f"sweep {name!r} is being run by {holder} (lock {path}); wait for it to end, or "
                             f"stop it (kill PID) and then resume with --resume {name}") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                     f"{datetime.now().isoformat(timespec='seconds')}\n")
        handle.flush()
        yield
    finally:
        handle.truncate(0)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
