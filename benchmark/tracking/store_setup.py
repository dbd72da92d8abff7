"""A SQLite store's first creation: owner-only file, the initialization lock beside it, leftovers of a
killed schema migration, and the owner-only password file cluster workers log in with."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from .store_errors import StoreLockTimeout, redact

#: Warnings keep the name of the store module they came from (quiet_logging silences that logger).
logger = logging.getLogger("benchmark.tracking.store")

#: Environment variable: seconds to wait for another process initializing the same SQLite store.
LOCK_TIMEOUT_ENV = "VQBENCH_STORE_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT_S = 120.0
#: Environment variable: a file (mode 0600) holding MLFLOW_TRACKING_PASSWORD, for cluster workers.
PASSWORD_FILE_ENV = "VQBENCH_MLFLOW_PASSWORD_FILE"


def lock_timeout() -> float:
    try:
        return float(os.environ.get(LOCK_TIMEOUT_ENV, DEFAULT_LOCK_TIMEOUT_S))
    except ValueError:
        raise ValueError(f"{LOCK_TIMEOUT_ENV} must be a number of seconds; got {os.environ[LOCK_TIMEOUT_ENV]!r}") from None


def create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (an empty file is an empty SQLite
    database), so that the store never exists readable by other users, even for a moment."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def store_lock_path(database: Path) -> Path:
    """The initialization lock of a SQLite store: beside it, never a guessable name in /tmp."""
    return database.with_name(database.name + ".init-lock")


class _store_lock:
    """An exclusive ``flock`` on ``path``, waited for at most ``timeout`` seconds (StoreLockTimeout)."""

    def __init__(self, path: Path, timeout: float, uri: str):
        self.path, self.timeout, self.uri = path, timeout, uri

    def __enter__(self):
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self.handle = os.fdopen(fd, "r+")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.handle.close()
                    raise StoreLockTimeout(
                        f"another process has held the initialization lock {self.path} of the MLflow store "
                        f"{redact(self.uri)} for over {self.timeout:.0f} s; if no vqbench process is running, "
                        f"delete the lock file; {LOCK_TIMEOUT_ENV} sets the wait") from None
                time.sleep(0.1)
        return self

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
        return False


def drop_migration_leftovers(path: Path) -> list[str]:
    """Drop the ``_alembic_tmp_*`` tables a process killed in the middle of a schema migration leaves in
    a SQLite store (the next migration would fail on them: "table _alembic_tmp_... already exists"); the
    migration then runs again from its start. Called under the store's initialization lock."""
    import sqlite3

    with sqlite3.connect(path, timeout=30) as connection:
        names = [row[0] for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '\\_alembic\\_tmp\\_%' ESCAPE '\\'")]
        for name in names:
            connection.execute(f'DROP TABLE "{name}"')
    logger.warning("dropped %s left in %s by a process killed during a schema migration", names, path)
    return names


def load_password_file() -> None:
    """Set MLFLOW_TRACKING_PASSWORD from the file $VQBENCH_MLFLOW_PASSWORD_FILE names (owner-only), if
    the environment has no password. How cluster workers log in without the password travelling in
    Ray's runtime environment."""
    name = os.environ.get(PASSWORD_FILE_ENV)
    if not name or os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        return
    path = Path(name).expanduser()
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ValueError(f"{PASSWORD_FILE_ENV}={path} is readable by other users (mode {mode:o}); "
                             f"chmod 600 {path}")
        os.environ["MLFLOW_TRACKING_PASSWORD"] = path.read_text().strip()
    except OSError as error:
        raise ValueError(f"{PASSWORD_FILE_ENV}={path}: cannot read it ({error.strerror})") from None
