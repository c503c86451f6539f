"""Which schema revision a run store is at, and what opening it does about that.

The revisions are Alembic's, in runner/store/migrations/versions; a database records
its own in Alembic's table, alembic_version. Release 0.1 knew nothing of Alembic: its
databases say `schema = 1` in runner_meta, and are at revision 0001. runner_meta's
`schema` row follows the revision ("1" at 0001, then the revision's id), so that a
runner older than Alembic's bookkeeping refuses a newer database with its own message.

Opening a store (`ensure_schema`):
- at head: one small query, nothing more;
- a new, empty database: its tables are created at head and stamped, in one
  transaction, without loading Alembic;
- at an older revision: SQLite is upgraded there and then; any other database is
  refused until `runner db upgrade` upgrades it, because other processes may be using
  it and a person should choose when;
- at a revision this runner does not know (a newer runner's): refused.
Creating and upgrading hold the database's schema lock (SQLite's write lock, taken by
BEGIN IMMEDIATE; a PostgreSQL advisory lock) and look at the database again once they
have it, so processes that open one database at the same time migrate it once.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from runner.core.errors import StoreError
from runner.store.engines import safe_url
from runner.store.sqlite import write_transaction
from runner.store.tables import alembic_version, meta, metadata

HEAD = "0005"
# Oldest first: one per file in migrations/versions.
REVISIONS = ("0001", "0002", "0003", "0004", "0005")
RELEASE_0_1 = "0001"  # the revision of every database release 0.1 wrote
_LOCK_KEY = 0x72756E6E6572  # PostgreSQL advisory lock taken while the schema changes


@dataclass(frozen=True)
class Revision:
    """Where a database stands: its revision (None for a database without a run store
    yet), and whether alembic_version records it (not in release 0.1's databases)."""

    current: str | None
    stamped: bool = True

    @property
    def at_head(self) -> bool:
        return self.current == HEAD

    @property
    def known(self) -> bool:
        return self.current is None or self.current in REVISIONS

    def __str__(self) -> str:
        if self.current is None:
            return "empty"
        return self.current if self.stamped else f"{self.current} (release 0.1)"


def quick_revision(engine: sa.Engine) -> str | None:
    """The revision alembic_version records, in one query; None when it cannot say
    (no such table yet, or no row). A server that cannot be reached is an error here
    already, not a second wait later."""
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(alembic_version.c.version_num)).scalar()
    except sa.exc.ProgrammingError:  # PostgreSQL: no such table
        return None
    except sa.exc.OperationalError:  # SQLite says "no such table" this way
        if engine.dialect.name != "sqlite":
            raise
        return None


def read_revision(conn: sa.Connection, url: str) -> Revision:
    """Where the database behind `conn` stands, from its tables; reads only."""
    names = set(sa.inspect(conn).get_table_names())
    if alembic_version.name in names:
        found = conn.execute(sa.select(alembic_version.c.version_num)).scalar()
        if found is not None:
            return Revision(found)
    if not names & set(metadata.tables):
        return Revision(None)
    if (
        meta.name in names
        and conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema")).scalar() == "1"
    ):
        return Revision(RELEASE_0_1, stamped=False)
    raise StoreError(
        f"the run store at {safe_url(url)} has runner's tables but no schema "
        "revision (a runner older than release 0.1 made it): keep it aside "
        "with the runner that made it, or start a new one (--db or RUNNER_DB)"
    )


def ensure_schema(
    engine: sa.Engine, url: str, *, upgrade: bool, create: bool = True
) -> tuple[Revision, str]:
    """Make the database at `url` one this runner can use, or refuse it (StoreError).
    With `upgrade` an older database is upgraded, else refused; without `create` an
    empty one is refused, not given tables. Returns where it stood before and the
    revision it is at now."""
    if quick_revision(engine) == HEAD:
        return Revision(HEAD), HEAD
    with engine.connect() as conn, write_transaction(conn):
        _lock_schema(conn)
        before = read_revision(conn, url)
        refuse_unknown(before, url)
        if before.current is None:
            if not create:
                raise StoreError(
                    f"no run store in the database at {safe_url(url)}: it has none of "
                    "runner's tables. Give the database `runner run` used with --db"
                )
            create_at_head(conn)
        elif not before.at_head:
            if not upgrade:
                raise StoreError(behind_message(before, url))
            _upgrade(conn, before)
    return before, HEAD


def refuse_unknown(revision: Revision, url: str) -> None:
    """StoreError for a revision that this runner does not know."""
    if not revision.known:
        raise StoreError(
            f"the run store at {safe_url(url)} is at schema revision {revision.current}, "
            f"which this runner does not know (it knows revisions up to {HEAD}): a newer "
            "runner has upgraded it. Use that runner, or another database (--db or "
            "RUNNER_DB)"
        )


def behind_message(revision: Revision, url: str) -> str:
    """Why a database at an older revision is refused, and what to do about it."""
    return (
        f"the run store at {safe_url(url)} is at schema revision {revision}; this "
        f"runner needs {HEAD}: {upgrade_hint(url)}"
    )


def upgrade_hint(url: str) -> str:
    """The command that upgrades the database at `url`."""
    return f"run `runner db upgrade --db {safe_url(url)}`"


def create_at_head(conn: sa.Connection) -> None:
    """Create every table of a new database at head and record its revision."""
    metadata.create_all(conn, checkfirst=False)
    conn.execute(meta.insert().values(key="schema", value=HEAD))
    _stamp(conn, HEAD)


def _upgrade(conn: sa.Connection, before: Revision) -> None:
    from runner.store.migrate import upgrade

    if not before.stamped:
        _stamp(conn, RELEASE_0_1)
    upgrade(conn, HEAD)


def _stamp(conn: sa.Connection, revision: str) -> None:
    alembic_version.create(conn, checkfirst=True)
    conn.execute(alembic_version.delete())
    conn.execute(alembic_version.insert().values(version_num=revision))


def _lock_schema(conn: sa.Connection) -> None:
    """On PostgreSQL, wait for any other process changing the schema (SQLite's write
    lock is already held: see write_transaction)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
