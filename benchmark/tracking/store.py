"""The MLflow store under every run: created once under a lock, written with retries.

Two things the MLflow client leaves to its caller:

* The first use of a fresh SQLite store creates its tables. Two processes doing that at the same moment
  race: one dies with SQLAlchemy's ``CircularDependencyError`` (STACK_NOTES, "MLflow, concurrency").
  :func:`ensure_store` creates them under an exclusive file lock, once per process and store.
* A call that fails for a transient reason (a tracking server restarting, a locked SQLite file, a
  network blip) is retried with exponential back-off; after ``tries`` failures :class:`MlflowStoreError`
  names the store, the call and the last error. Errors that retrying cannot fix (a bad value, a deleted
  run) are raised at once.

:func:`client` returns an MLflow client with both: every vqbench process that writes runs uses it.
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

logger = logging.getLogger(__name__)

#: Environment variable: tries per MLflow call before giving up (default DEFAULT_TRIES).
TRIES_ENV = "VQBENCH_MLFLOW_RETRIES"
DEFAULT_TRIES = 8
FIRST_DELAY_S = 0.5             # then 1, 2, 4, 8, 16, 30, ...: about a minute over 8 tries
MAX_DELAY_S = 30.0
#: MLflow's own HTTP retries (urllib3) can wait about 4 minutes per call before failing; these defaults
#: (a user's own settings win) keep them short so that this module's back-off, and its error, govern.
HTTP_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
#: MlflowException codes that another try cannot fix.
PERMANENT_CODES = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
                             "INVALID_STATE", "PERMISSION_DENIED", "UNAUTHENTICATED", "BAD_REQUEST",
                             "FEATURE_DISABLED", "NOT_IMPLEMENTED", "ENDPOINT_NOT_FOUND"})
#: Tag that makes a retried create_run idempotent: a lost reply must not leave a second run behind.
CREATE_TOKEN_TAG = "vqbench.create_token"

_ready: set[str] = set()   # stores this process has initialized


class MlflowStoreError(RuntimeError):
    """The MLflow store did not accept a call after every retry."""


def redact(uri: str) -> str:
    """``uri`` without a password, for messages."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (absolute), else None."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or ":memory:" in uri:
        return None
    return Path(uri[len(prefix):].split("?")[0]).expanduser().resolve()


def is_database(uri: str) -> bool:
    """True for a URI the client opens as a database itself (not a server, not a folder)."""
    return urlsplit(uri).scheme.split("+")[0] in ("sqlite", "postgresql", "mysql", "mssql")


def configured_tries() -> int:
    try:
        return max(1, int(os.environ.get(TRIES_ENV, DEFAULT_TRIES)))
    except ValueError:
        raise ValueError(f"{TRIES_ENV} must be an integer >= 1; got {os.environ[TRIES_ENV]!r}") from None


def is_transient(error: BaseException) -> bool:
    """Whether another try may succeed: server, network and database-lock errors are; bad input is not."""
    from mlflow.exceptions import MlflowException

    if isinstance(error, MlflowException):
        return error.error_code not in PERMANENT_CODES
    if isinstance(error, (OSError, ConnectionError, TimeoutError)):
        return True
    return type(error).__module__.split(".")[0] in ("sqlalchemy", "requests", "urllib3", "http")


def one_line(error: BaseException, limit: int = 300) -> str:
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[-1] if lines else ''}"
    return text[:limit]


def retry(call, *, what: str, uri: str, tries: int | None = None):
    """``call(attempt)`` (attempt = 1, 2, ...) until it succeeds or ``tries`` transient failures."""
    tries = tries or configured_tries()
    delay, started = FIRST_DELAY_S, time.monotonic()
    for attempt in range(1, tries + 1):
        try:
            return call(attempt)
        except Exception as error:
            if not is_transient(error):
                raise
            if attempt == tries:
                raise MlflowStoreError(
                    f"the MLflow store {redact(uri)} did not accept {what} after {tries} tries over "
                    f"{time.monotonic() - started:.0f} s; last error: {one_line(error)}. Check that the store "
                    f"is up (a tracking server: `vqbench server`); {TRIES_ENV} sets the tries") from error
            logger.warning("MLflow %s failed (%s); try %d of %d in %.1f s", what, one_line(error, 120),
                           attempt + 1, tries, delay)
            time.sleep(delay * random.uniform(0.8, 1.2))  # jitter: many trials must not retry in step
            delay = min(2 * delay, MAX_DELAY_S)
    raise AssertionError("unreachable")


def ensure_store(uri: str) -> None:
    """Create a fresh store's tables once, under a lock, so concurrent first users all succeed.

    A SQLite file is initialized under an exclusive lock on a file in the temporary directory (SQLite
    stores are local files, so a machine-wide lock is enough). Other databases are initialized with
    retries (the losers of a race see the tables appear). A tracking server initializes its own store.
    """
    if uri in _ready:
        return
    if not is_database(uri):
        _ready.add(uri)
        return
    from mlflow.tracking import MlflowClient

    def initialize(_attempt):
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)

    path = sqlite_path(uri)
    if path is None:
        retry(initialize, what="creating the store's tables", uri=uri)
    else:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
        with open(Path(tempfile.gettempdir()) / f"vqbench-store-{digest}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                retry(initialize, what="creating the store's tables", uri=uri)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    _ready.add(uri)


class RetryingClient:
    """An ``MlflowClient`` whose every call is retried (see :func:`retry`).

    Every MLflow write vqbench makes is safe to repeat (metrics, params and tags upsert, artifacts
    overwrite, statuses are set) except ``create_run``, which carries a one-off token tag and, on a
    retry, first looks for the run an earlier try may have created.
    """

    def __init__(self, uri: str, tries: int | None = None):
        from mlflow.tracking import MlflowClient

        self.tracking_uri = uri
        self.tries = tries
        self.mlflow = MlflowClient(tracking_uri=uri)

    def __getattr__(self, name: str):
        attribute = getattr(self.mlflow, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            return retry(lambda _attempt: attribute(*args, **kwargs), what=name, uri=self.tracking_uri,
                         tries=self.tries)

        return call

    def create_run(self, experiment_id: str, start_time=None, tags=None, run_name=None):
        from mlflow.entities import ViewType

        token = uuid.uuid4().hex
        tags = {**(tags or {}), CREATE_TOKEN_TAG: token}

        def attempt(number: int):
            if number > 1:
                found = self.mlflow.search_runs([experiment_id], filter_string=f"tags.`{CREATE_TOKEN_TAG}` = '{token}'",
                                                run_view_type=ViewType.ALL, max_results=1)
                if found:
                    return found[0]
            return self.mlflow.create_run(experiment_id, start_time=start_time, tags=tags, run_name=run_name)

        return retry(attempt, what="create_run", uri=self.tracking_uri, tries=self.tries)


def client(uri: str, tries: int | None = None) -> RetryingClient:
    """A retrying client for ``uri``, its store initialized (see :func:`ensure_store`)."""
    for name, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(name, value)
    ensure_store(uri)
    return RetryingClient(uri, tries)
