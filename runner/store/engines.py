"""Which database a command uses, the engine that opens it, and its URL as shown to
people (password hidden)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from runner.core.errors import StoreError
from runner.store.sqlite import dumps, sqlite_engine

DEFAULT_URL = "sqlite:///.runner/runner.db"


def store_url(given: str | None) -> str:
    """The database URL: `--db`, else RUNNER_DB, else `.runner/runner.db` here."""
    return given or os.environ.get("RUNNER_DB") or DEFAULT_URL


def parse_url(url: str) -> sa.URL:
    """`url` parsed; a StoreError if it is not a database URL."""
    try:
        return sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StoreError(f"not a database URL: {url!r}") from exc


def safe_url(url: str) -> str:
    """`url` as it may be printed: without its password."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(an invalid URL)"


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names; None for memory or another database."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def create_engine(url: str, *, durable: bool = True) -> sa.Engine:
    """An engine for the store at `url`; SQLite gets its pragmas (see runner.store.sqlite)."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        return sqlite_engine(parsed, durable=durable)
    try:
        return sa.create_engine(parsed, pool_pre_ping=True, json_serializer=dumps)
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        raise StoreError(f"cannot open the run store at {safe_url(url)}: {exc}") from exc


@contextlib.contextmanager
def opening(url: str) -> Iterator[None]:
    """The database's own errors while the store at `url` is opened, as StoreError."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        raise StoreError(f"cannot open the run store at {safe_url(url)}: {exc.orig}") from exc
