"""What the database's own failures mean to the person running runner.

The database driver says "database or disk is full", "file is not a database" or
"connection refused"; the store says what is wrong with the run store and what to do,
as a StoreError (the command line prints it and exits 1). Every read and write of
`SqlStore` runs inside `translated`. Errors that are runner's own bugs (a constraint
violated, SQL the database refuses) are not translated: they stay internal errors.

A SQLite file can also vanish under a process that uses it: SQLite goes on writing to
the deleted file, and the run would be reported as done while nothing of it remains.
`StoreFile` notices at each write, before it commits.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from runner.core.errors import StoreError

_CORRUPT = ("not a database", "malformed", "database corrupt")
_TRANSLATED = (sa.exc.OperationalError, sa.exc.InternalError)


@dataclass(frozen=True)
class Place:
    """Where a run store is: as a person sees it (a SQLite file's path as given, a
    server's URL without its password), its kind of database, and its SQLite file."""

    shown: str
    dialect: str
    file: Path | None = None


def store_fault(exc: sa.exc.DBAPIError, place: Place) -> StoreError | None:
    """What `exc` means for the store at `place`; None when it is not the database's
    fault but a bug in runner."""
    if not isinstance(exc, _TRANSLATED) and type(exc) is not sa.exc.DatabaseError:
        return None
    text = " ".join(str(exc.orig).split()) or type(exc.orig).__name__
    if place.dialect == "sqlite":
        return StoreError(_file_fault(text, place), transient="locked" in text.lower())
    sqlstate = getattr(exc.orig, "sqlstate", None)
    away = sqlstate in (None, "53300") or sqlstate[:2] in ("08", "57") or exc.connection_invalidated
    return StoreError(_server_fault(sqlstate, text, place), transient=away)


def _file_fault(text: str, place: Place) -> str:
    """What a SQLite error says about the store's file."""
    lower = text.lower()
    if any(sign in lower for sign in _CORRUPT):
        return corrupt(place, text)
    if "readonly" in lower or ("unable to open" in lower and _read_only(place.file)):
        return read_only(place)
    if "disk is full" in lower:
        return disk_full(place)
    if "locked" in lower:
        return (
            f"the run store at {place.shown} stayed locked by another process for too "
            f"long ({text}): try again when it is done"
        )
    if "unable to open" in lower:
        return (
            f"cannot open the run store at {place.shown}: {text} (does its folder exist, "
            "and may runner write there?)"
        )
    return f"the run store at {place.shown} failed: {text}"


def _server_fault(sqlstate: str | None, text: str, place: Place) -> str:
    """What a database server's error says (by its SQLSTATE code)."""
    if sqlstate == "53100":  # disk_full
        return disk_full(place)
    if sqlstate == "53300" or "too many clients" in text:  # too_many_connections
        return (
            f"the database server at {place.shown} has no connection left for runner "
            f"({text}): run fewer workers or a lower --concurrency, raise the server's "
            "max_connections, or put a connection pooler in front of it"
        )
    if sqlstate == "25006":  # read_only_sql_transaction: a standby, or a read-only role
        return (
            f"cannot write to the run store at {place.shown}: the database server "
            "accepts only reads there (a standby?): give the primary's URL with --db"
        )
    if sqlstate is None or sqlstate[:2] in ("08", "57"):  # no connection, shut down
        return (
            f"cannot reach the database server at {place.shown}: {text}. Check that it "
            "is running and that the URL (--db or RUNNER_DB) is right"
        )
    return f"the run store at {place.shown} failed: {text}"


def corrupt(place: Place, text: str) -> str:
    return (
        f"the run store at {place.shown} is not a runner database or is damaged: {text}. "
        "Move it aside (keep it for its runs) and start a new one, or give another "
        "database with --db"
    )


def read_only(place: Place) -> str:
    return (
        f"cannot write to the run store at {place.shown}: the file or its folder is "
        "read-only. Make both writable, or give another database with --db"
    )


def disk_full(place: Place) -> str:
    return (
        f"cannot write to the run store at {place.shown}: the disk is full. Nothing of "
        "the last write was kept: free some space, then continue any interrupted run "
        "with `runner resume RUN`"
    )


def _read_only(file: Path | None) -> bool:
    """Whether the SQLite file, or the folder it lives in, cannot be written."""
    if file is None:
        return False
    folder = file.parent if file.parent.exists() else Path(".")
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        return False
    return not os.access(folder, os.W_OK) or (file.exists() and not os.access(file, os.W_OK))


@contextlib.contextmanager
def translated(place: Place) -> Iterator[None]:
    """The database's failures inside the block as StoreErrors that say what to do."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        fault = store_fault(exc, place)
        if fault is None:
            raise
        raise fault from exc


class StoreFile:
    """The SQLite file a store opened: a write to it after it was deleted or replaced
    (another file moved to its path) is refused before it commits."""

    def __init__(self, place: Place) -> None:
        assert place.file is not None
        self.place = place
        self.path = place.file.absolute()
        self._identity = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return (stat.st_dev, stat.st_ino)

    def check(self) -> None:
        """StoreError if the file is no longer the one the store opened."""
        if self._stat() != self._identity:
            raise StoreError(
                f"the run store at {self.place.shown} was deleted or replaced while runner "
                f"was using it ({self.path}); nothing more was written to it. Restore "
                "the file to keep its runs, or start them again with `runner run`"
            )
