"""The MLflow store under every run: created once under a lock, written with retries.

Two things the MLflow client leaves to its caller:

* The first use of a fresh SQLite store creates its tables. Two processes doing that at the same moment
  race: one dies with SQLAlchemy's ``CircularDependencyError`` (STACK_NOTES, "MLflow, concurrency").
  :func:`ensure_store` creates them under an exclusive file lock beside the store (with a timeout), once
  per process and store, and creates the file owner-only (0600).
* A call that fails for a transient reason (a tracking server restarting, a locked SQLite file, a
  network blip) is retried with exponential back-off; after ``tries`` failures :class:`MlflowStoreError`
  names the store, the call and the last error. Errors that retrying cannot fix (a bad value, a deleted
  run) are raised at once; OS errors no retry fixes (EACCES, ENOSPC, EROFS, ENOTDIR) become a one-line
  :class:`PermanentStoreError` naming the path and the errno.
* ``create_run`` is exactly-once: a reply lost after the store committed the run (and retried by
  MLflow's HTTP layer or by :func:`retry`) leaves one run, not two.

:func:`client` returns an MLflow client with both: every vqbench process that writes runs uses it.
"""
from __future__ import annotations

import errno
import logging
import os
import random
import time
import uuid

from .store_errors import (  # noqa: F401 - re-exported
    FIXES,
    PERMANENT_CODES,
    PERMANENT_ERRNOS,
    SQLITE_PERMANENT,
    MlflowStoreError,
    PermanentStoreError,
    StoreLockTimeout,
    is_database,
    is_transient,
    one_line,
    permanent_message,
    permanent_os_error,
    redact,
    sqlite_path,
    strip_password,
)
from .store_setup import (  # noqa: F401 - re-exported
    DEFAULT_LOCK_TIMEOUT_S,
    LOCK_TIMEOUT_ENV,
    PASSWORD_FILE_ENV,
    _store_lock,
    create_private,
    drop_migration_leftovers,
    load_password_file,
    lock_timeout,
    store_lock_path,
)

logger = logging.getLogger(__name__)

#: Environment variable: tries per MLflow call before giving up (default DEFAULT_TRIES).
TRIES_ENV = "VQBENCH_MLFLOW_RETRIES"
DEFAULT_TRIES = 8
FIRST_DELAY_S = 0.5             # then 1, 2, 4, 8, 16, 30, ...: about a minute over 8 tries
MAX_DELAY_S = 30.0
#: MLflow's own HTTP retries (urllib3) can wait about 4 minutes per call before failing; these defaults
#: (a user's own settings win) keep them short so that this module's back-off, and its error, govern.
HTTP_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
#: Tag that makes a retried create_run idempotent: a lost reply must not leave a second run behind.
CREATE_TOKEN_TAG = "vqbench.create_token"

_ready: set[str] = set()   # stores this process has initialized


def configured_tries() -> int:
    try:
        return max(1, int(os.environ.get(TRIES_ENV, DEFAULT_TRIES)))
    except ValueError:
        raise ValueError(f"{TRIES_ENV} must be an integer >= 1; got {os.environ[TRIES_ENV]!r}") from None


def retry(call, *, what: str, uri: str, tries: int | None = None):
    """``call(attempt)`` (attempt = 1, 2, ...) until it succeeds or ``tries`` transient failures."""
    tries = tries or configured_tries()
    delay, started = FIRST_DELAY_S, time.monotonic()
    for attempt in range(1, tries + 1):
        try:
            return call(attempt)
        except Exception as error:
            if not is_transient(error):
                found = permanent_os_error(error)
                if found is not None and not isinstance(error, MlflowStoreError):
                    raise PermanentStoreError(permanent_message(error, found, uri, what)) from error
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

    A SQLite file is initialized under an exclusive lock on a file beside it (``<db>.init-lock``, waited
    for at most ``VQBENCH_STORE_LOCK_TIMEOUT`` seconds), and created with mode 0600 (owner only). Other
    databases are initialized with retries (the losers of a race see the tables appear). A tracking
    server initializes its own store. A folder that cannot be written is a PermanentStoreError at once.
    """
    if uri in _ready:
        return
    if not is_database(uri):
        _ready.add(uri)
        return
    from mlflow.tracking import MlflowClient

    path = sqlite_path(uri)

    def initialize(_attempt):
        try:
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        except Exception as error:
            if path is not None and "_alembic_tmp_" in str(error):
                drop_migration_leftovers(path)  # a process killed mid-migration; then retried
            raise

    if path is None:
        retry(initialize, what="creating the store's tables", uri=uri)
    else:
        def prepare(_attempt):
            for folder in (path.parent, *path.parent.parents):
                if folder.exists():
                    if not folder.is_dir():
                        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
                    break
            path.parent.mkdir(parents=True, exist_ok=True)
            with _store_lock(store_lock_path(path), lock_timeout(), uri):
                create_private(path)
                retry(initialize, what="creating the store's tables", uri=uri)

        retry(prepare, what=f"opening the SQLite store {path}", uri=uri, tries=1)
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
        """Create a run exactly once, whatever retries happen below: MLflow's HTTP layer retries a POST
        whose reply was lost, and so does :func:`retry`; each may commit one more run. Every run carries
        a one-off token; after the create, every run with the token is looked up and all but one are
        retired (KILLED, then deleted), so one run stands and none is left RUNNING."""
        token = uuid.uuid4().hex
        tags = {**(tags or {}), CREATE_TOKEN_TAG: token}

        def attempt(number: int):
            if number > 1:
                found = self.runs_with_token(experiment_id, token)
                if found:
                    return found[0]
            return self.mlflow.create_run(experiment_id, start_time=start_time, tags=tags, run_name=run_name)

        run = retry(attempt, what="create_run", uri=self.tracking_uri, tries=self.tries)
        return retry(lambda _attempt: self._keep_one(experiment_id, token, run), what="create_run (deduplicating)",
                     uri=self.tracking_uri, tries=self.tries)

    def runs_with_token(self, experiment_id: str, token: str) -> list:
        from mlflow.entities import ViewType

        runs = self.mlflow.search_runs([experiment_id], filter_string=f"tags.`{CREATE_TOKEN_TAG}` = '{token}'",
                                       run_view_type=ViewType.ALL, max_results=100,
                                       order_by=["attributes.start_time ASC"])
        return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))

    def _keep_one(self, experiment_id: str, token: str, run):
        """Keep ``run`` (the one the caller got back) and retire any other run created with ``token``."""
        for other in self.runs_with_token(experiment_id, token):
            if other.info.run_id == run.info.run_id or other.info.lifecycle_stage == "deleted" and \
                    other.info.status != "RUNNING":
                continue
            logger.warning("create_run: the store created run %s twice (a reply was lost and the call "
                           "retried); retiring the duplicate %s", run.info.run_id, other.info.run_id)
            if other.info.status in ("RUNNING", "SCHEDULED"):
                self.mlflow.set_terminated(other.info.run_id, status="KILLED")
            if other.info.lifecycle_stage != "deleted":
                self.mlflow.delete_run(other.info.run_id)
        return run


def client(uri: str, tries: int | None = None) -> RetryingClient:
    """A retrying client for ``uri``, its store initialized (see :func:`ensure_store`)."""
    for name, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(name, value)
    load_password_file()
    ensure_store(uri)
    return RetryingClient(uri, tries)
