"""What SQLite needs that other databases do not: its pragmas, a write lock taken at
the start of a write transaction, and a cheaper way to run the hot path's statements."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

_WRITE = "write"  # set in a connection's info while it runs a write transaction
_JSON_PARAMS = {"error", "output", "result", "data", "input"}
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a DateTime in SQLite


def dumps(value: Any) -> str:
    """JSON as the store writes it on every database (non-ASCII kept as it is)."""
    return json.dumps(value, ensure_ascii=False, default=str)


def dumps_blob(value: Any) -> bytes:
    """JSON as SQLite stores it: UTF-8 bytes. A JSON column has NUMERIC affinity in
    SQLite, which turns text that reads as a number into one (`1.0` would come back as
    `1`, a 23-digit integer as a float); a blob is kept exactly as written."""
    return dumps(value).encode("utf-8")


def sqlite_engine(url: sa.URL, *, durable: bool) -> sa.Engine:
    """An engine for a SQLite file or for memory: WAL,
    foreign keys on, and transactions begun explicitly (see `write_transaction`)."""
    if url.database and url.database != ":memory:":  # its folder: see engines.make_room
        engine = sa.create_engine(url, json_serializer=dumps_blob)
    else:  # one connection, shared by every thread: the database lives in it
        engine = sa.create_engine(
            url,
            json_serializer=dumps_blob,
            poolclass=sa.pool.StaticPool,
            connect_args={"check_same_thread": False},
        )
    _listen(engine, durable=durable)
    return engine


def _listen(engine: sa.Engine, *, durable: bool) -> None:
    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # transactions are begun below, explicitly
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before it returns, so a checkpoint survives power loss.
        cursor.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        # A write takes the lock up front: a deferred transaction that reads, then
        # writes, can fail at once with "database is locked" when another process
        # writes too. Reads stay deferred, so in WAL mode they never wait for writers.
        _driver(conn, "BEGIN IMMEDIATE" if conn.info.get(_WRITE) else "BEGIN", (), many=False)


@contextlib.contextmanager
def write_transaction(conn: sa.Connection) -> Iterator[sa.Connection]:
    """A transaction that will write: on SQLite it holds the database's write lock from
    its first statement (BEGIN IMMEDIATE), so other writers wait for it to end."""
    conn.info[_WRITE] = True
    try:
        with conn.begin():
            yield conn
    finally:
        conn.info.pop(_WRITE, None)


class CompiledStatements:
    """The hot path's statements compiled once for SQLite, with their values converted
    here as SQLAlchemy's types would, and run on the driver's cursor: a step's commit
    gets several times cheaper. The driver's errors reach callers as SQLAlchemy's."""

    def __init__(self, dialect: sa.Dialect) -> None:
        self._dialect = dialect
        self._sql: dict[Any, tuple[str, tuple[tuple[str, Any], ...]]] = {}

    def _compiled(
        self, statement: Any, params: dict[str, Any]
    ) -> tuple[str, tuple[tuple[str, Any], ...]]:
        if statement not in self._sql:
            compiled = statement.compile(dialect=self._dialect, column_keys=list(params))
            names = tuple(compiled.positiontup or ())
            convert = tuple((n, _json if n in _JSON_PARAMS else _time) for n in names)
            self._sql[statement] = (str(compiled), convert)
        return self._sql[statement]

    def execute(self, conn: sa.Connection, statement: Any, params: dict[str, Any]) -> int:
        """Run `statement` with `params`; its row count."""
        sql, convert = self._compiled(statement, params)
        values = tuple(to(params[name]) for name, to in convert)
        return int(_driver(conn, sql, values, many=False))

    def execute_many(
        self, conn: sa.Connection, statement: Any, rows: Sequence[dict[str, Any]]
    ) -> None:
        """Run `statement` once for each of `rows` (all with the same keys), in one call."""
        if not rows:
            return
        sql, convert = self._compiled(statement, rows[0])
        values = [tuple(to(row[name]) for name, to in convert) for row in rows]
        _driver(conn, sql, values, many=True)


def _driver(conn: sa.Connection, sql: str, values: Any, *, many: bool) -> int:
    """`sql` run on the connection's own sqlite3 cursor, in its open transaction; its
    row count. A sqlite3 error is raised as SQLAlchemy would wrap it."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if many:
            cursor.executemany(sql, values)
        else:
            cursor.execute(sql, values)
        return int(cursor.rowcount)
    except sqlite3.Error as exc:
        raise sa.exc.DBAPIError.instance(
            sql, values, exc, sqlite3.Error, dialect=conn.dialect
        ) from exc
    finally:
        cursor.close()


def _json(value: Any) -> bytes:
    return dumps_blob(value)


def _time(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime(_SQLITE_TIME)
    return value
