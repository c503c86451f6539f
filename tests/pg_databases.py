"""Fresh PostgreSQL databases for tests: one per test, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

PG_URL = os.environ.get(
    "RUNNER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def postgres_database() -> Iterator[str]:
    """A fresh database on the test server, dropped afterwards; skips (or fails, when
    RUNNER_REQUIRE_POSTGRES is set) when no server is reachable."""
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:
        admin.dispose()
        reason = f"no PostgreSQL at {PG_URL}: {type(exc).__name__}"
        if os.environ.get("RUNNER_REQUIRE_POSTGRES"):
            pytest.fail(reason + " (RUNNER_REQUIRE_POSTGRES is set, so this must run)")
        pytest.skip(reason)
    name = f"runner_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
