"""Fixtures for the run store's tests: fresh PostgreSQL databases, and a copy of the
database release 0.1 wrote."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_databases import postgres_database

RELEASE_0_1 = Path(__file__).resolve().parent.parent / "fixtures" / "release_0_1"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database (see postgres_database)."""
    yield from postgres_database()


@pytest.fixture
def another_postgres_url() -> Iterator[str]:
    """A second fresh PostgreSQL database, for tests that compare two."""
    yield from postgres_database()


@pytest.fixture
def release_0_1(tmp_path: Path) -> Path:
    """A copy of tests/fixtures/release_0_1: the flow, its tool and runner-0.1.db."""
    copy = tmp_path / "release_0_1"
    shutil.copytree(RELEASE_0_1, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy
