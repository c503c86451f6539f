"""Alembic's environment for the run store's migrations.

runner runs them itself (runner.store.migrate: `runner db upgrade`, or opening a SQLite
store) and hands this script the connection to use, already inside the transaction
that holds the schema lock; there is no alembic.ini and no offline (--sql) mode.

A new revision is a file in versions/ whose `down_revision` is the current head and
which sets runner_meta's `schema` row to its own id. Its id goes at the end of
REVISIONS in runner/store/revisions.py, and runner/store/tables.py changes to match:
tests/store/test_migrations.py checks that a migrated database equals a new one.
"""

from __future__ import annotations

from alembic import context

from runner.core.errors import StoreError
from runner.store.tables import metadata


def run_migrations() -> None:
    """Run the migrations Alembic selected on the connection runner handed over."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise StoreError("the run store's migrations run through `runner db upgrade`")
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
