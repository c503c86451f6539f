"""Which database a command uses, the engine that opens it, and where it is as shown
to people (a file's path, a URL with its password hidden)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from runner.core.errors import StoreError
from runner.store.faults import Place, store_fault
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
    """The file a SQLite URL names (also as a `file:` URI, `?uri=true`); None for
    memory or another database."""
    parsed = parse_url(url)
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or name in (None, "", ":memory:"):
        return None
    if parsed.query.get("uri") in ("true", "1") and name.startswith("file:"):
        name = name.removeprefix("file:").partition("?")[0]
        if parsed.query.get("mode") == "memory" or name in ("", ":memory:"):
            return None
        name = "/" + name.lstrip("/") if name.startswith("//") else name
    return Path(name)


def place_of(url: str) -> Place:
    """Where the store at `url` is, as messages name it."""
    file = sqlite_file(url)
    dialect = parse_url(url).get_backend_name()
    return Place(str(file) if file else safe_url(url), dialect, file)


def no_store(file: Path) -> str:
    """Why a command that only reads the store does nothing when the file is missing."""
    here = "" if file.is_absolute() else f" (here: {file.absolute()})"
    return f"no run store at {file}{here}: runs are stored where `runner run` ran, or give --db"


def make_room(url: str, *, create: bool) -> None:
    """Before a SQLite store is opened: with `create`, its folder is made if missing;
    without, a missing file is a StoreError (a command that reads makes no store)."""
    file = sqlite_file(url)
    if file is None:
        return
    if not create:
        if not file.exists() or file.stat().st_size == 0:  # SQLite makes both on connect
            raise StoreError(no_store(file))
        return
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot make the folder of the run store at {file}: {exc.strerror}"
        ) from exc


def create_engine(url: str, *, durable: bool = True, connections: int | None = None) -> sa.Engine:
    """An engine for the store at `url`; SQLite gets its pragmas (see runner.store.sqlite).
    A server's pool holds at most `connections` (a worker's, sized to its concurrency;
    a thread waits its turn for one, each transaction being short), else 5 kept open
    and up to 10 more for a moment."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        make_room(url, create=True)
        return sqlite_engine(parsed, durable=durable)
    try:
        engine = sa.create_engine(
            parsed,
            pool_size=connections or 5,
            max_overflow=0 if connections else 10,
            json_serializer=dumps,
        )
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        raise StoreError(f"cannot open the run store at {safe_url(url)}: {exc}") from exc
    ping_when_idle(engine)
    return engine


IDLE_PING_SECONDS = 2.0


def ping_when_idle(engine: sa.Engine) -> None:
    """Check a server connection before use only when it has lain idle for a while
    (one that did not may have been cut since: a server restart, a firewall's timeout);
    a dead one is replaced at once. A connection in steady use is not checked: a ping
    before every transaction would be a round trip more for each of them. A connection
    found dead in use fails that one transaction with a transient StoreError, which the
    engine's step commit and the worker's claim loop try again; SQLAlchemy then drops
    the pool's other connections of that time."""

    def checkin(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the driver's own error: the connection is gone
            raise sa.exc.DisconnectionError(str(exc)) from exc

    sa.event.listen(engine, "checkin", checkin)
    sa.event.listen(engine, "checkout", checkout)


@contextlib.contextmanager
def opening(url: str) -> Iterator[None]:
    """The database's own errors while the store at `url` is opened, as StoreError
    (see runner.store.faults)."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        fault = store_fault(exc, place_of(url)) or StoreError(
            f"cannot open the run store at {safe_url(url)}: {exc.orig}"
        )
        raise fault from exc
