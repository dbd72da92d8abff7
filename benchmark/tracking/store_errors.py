"""How a failed MLflow call is judged and told: the store's error classes, which failures are permanent
(OS errors no retry fixes, MLflow codes another try cannot fix), and URIs made safe for messages."""
from __future__ import annotations

import errno
import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

#: MlflowException codes that another try cannot fix.
PERMANENT_CODES = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
                             "INVALID_STATE", "PERMISSION_DENIED", "UNAUTHENTICATED", "BAD_REQUEST",
                             "FEATURE_DISABLED", "NOT_IMPLEMENTED", "ENDPOINT_NOT_FOUND"})
#: OS errors no retry can fix: a permission, a full or read-only disk, a path through a file.
PERMANENT_ERRNOS = {errno.EACCES: "EACCES", errno.EPERM: "EPERM", errno.ENOSPC: "ENOSPC", errno.EROFS: "EROFS",
                    errno.ENOTDIR: "ENOTDIR", errno.EISDIR: "EISDIR", errno.EDQUOT: "EDQUOT"}
#: SQLite's words for the same errors (SQLAlchemy and MLflow wrap them without an errno).
SQLITE_PERMANENT = {"attempt to write a readonly database": errno.EROFS, "database or disk is full": errno.ENOSPC,
                    "unable to open database file": errno.EACCES}
FIXES = {errno.EACCES: "give this user write access to it, or choose another path",
         errno.EPERM: "give this user write access to it, or choose another path",
         errno.ENOSPC: "free disk space (or quota) there, or choose another path",
         errno.EDQUOT: "free disk space (or quota) there, or choose another path",
         errno.EROFS: "the file system is read-only: choose a writable path",
         errno.ENOTDIR: "a part of the path is a file, not a folder: fix the path",
         errno.EISDIR: "the path is a folder, not a file: fix the path"}


class MlflowStoreError(RuntimeError):
    """The MLflow store did not accept a call after every retry."""


class PermanentStoreError(MlflowStoreError):
    """An OS error no retry can fix (EACCES, ENOSPC, EROFS, ENOTDIR, ...): raised at once, in one line."""


class StoreLockTimeout(MlflowStoreError):
    """Another process held the store's initialization lock for too long."""


def _replace_password(uri: str, mask: str | None) -> str:
    """``uri`` with its password replaced by ``mask`` (None: removed, the user kept)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    user = parts.username if mask is None else f"{parts.username}:{mask}"
    netloc = f"{user}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def strip_password(uri: str) -> str:
    """``uri`` with its password removed (user kept): what may be saved to disk."""
    return _replace_password(uri, None)


def permanent_os_error(error: BaseException) -> tuple[int, str | None] | None:
    """(errno, path) when ``error`` or one of its causes is an OS error no retry fixes; else None."""
    seen, current = set(), error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in PERMANENT_ERRNOS:
            return current.errno, current.filename
        text = str(current).lower()
        for words, number in SQLITE_PERMANENT.items():
            if words in text:
                return number, None
        current = current.__cause__ or current.__context__
    return None


def permanent_message(error: BaseException, found: tuple[int, str | None], uri: str, what: str) -> str:
    number, path = found
    where = path or (str(sqlite_path(uri)) if sqlite_path(uri) else redact(uri))
    return (f"{where}: {PERMANENT_ERRNOS.get(number, errno.errorcode.get(number, number))} "
            f"({os.strerror(number)}) while {what}; not retried (it is not transient). Fix: "
            f"{FIXES.get(number, 'fix the path')}")


def redact(uri: str) -> str:
    """``uri`` without a password, for messages."""
    return _replace_password(uri, "***")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (absolute), else None."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or ":memory:" in uri:
        return None
    return Path(uri[len(prefix):].split("?")[0]).expanduser().resolve()


def is_database(uri: str) -> bool:
    """True for a URI the client opens as a database itself (not a server, not a folder)."""
    return urlsplit(uri).scheme.split("+")[0] in ("sqlite", "postgresql", "mysql", "mssql")


def is_transient(error: BaseException) -> bool:
    """Whether another try may succeed: server, network and database-lock errors are; bad input is not."""
    from mlflow.exceptions import MlflowException

    if permanent_os_error(error) is not None:
        return False
    if isinstance(error, MlflowException):
        return error.error_code not in PERMANENT_CODES
    if isinstance(error, (OSError, ConnectionError, TimeoutError)):
        return True
    return type(error).__module__.split(".")[0] in ("sqlalchemy", "requests", "urllib3", "http")


def one_line(error: BaseException, limit: int = 300) -> str:
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[-1] if lines else ''}"
    return text[:limit]
