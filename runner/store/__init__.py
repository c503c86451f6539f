"""The run store: durable state of runs behind the `Store` protocol.

`open_store(url)` opens the store at a database URL (SQLite or PostgreSQL), checking
its schema revision first. Importing this package loads no database library: that
happens when a store is opened.
"""

from __future__ import annotations

from runner.store.base import Store

__all__ = ["Store", "open_store"]


def open_store(
    url: str, *, durable: bool = True, create: bool = True, connections: int | None = None
) -> Store:
    """The store at `url` (see runner.store.sql.SqlStore); a StoreError if it cannot be
    used: a bad URL, an unreachable server, or a schema this runner cannot work with.
    Without `create`, a store that does not exist yet is a StoreError too (commands
    that only read never make one)."""
    from runner.store.sql import SqlStore

    return SqlStore(url, durable=durable, create=create, connections=connections)
