"""Rows that runs share are written race-free on every store: the first batch of a new
flow version starts its runs on many threads at once, and every one of them gets its
run (the flow version is stored once, whoever comes first)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from runner.store.records import FlowVersion
from runner.store.sql import SqlStore
from runner.store.tables import flow_versions

THREADS = 16
VERSIONS = 5  # a new version per round: each round races to pin it


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(url: str) -> Iterator[SqlStore]:
    made = SqlStore(url)
    try:
        yield made
    finally:
        made.close()


def _race(call: Callable[[int], object]) -> list[object]:
    """Run `call(i)` on THREADS threads released together; what each returned or raised."""
    results: list[object] = []
    barrier = threading.Barrier(THREADS)

    def one(i: int) -> None:
        barrier.wait()
        try:
            results.append(call(i))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.mark.parametrize("stores", ["one store", "a store per thread"])
def test_the_first_batch_of_a_new_version_gets_every_run(
    store: SqlStore, url: str, stores: str
) -> None:
    """Threads (sharing a store, as a batch does, or each with its own, as processes
    do) start runs of a version no one has stored yet: all runs are created."""
    own = [SqlStore(url) for _ in range(THREADS)] if stores != "one store" else []
    try:
        for n in range(VERSIONS):
            version = FlowVersion(f"{n:064x}", "batch", "flows/batch.yaml", f"text {n}")

            def start(i: int, version: FlowVersion = version, n: int = n) -> None:
                (own[i] if own else store).create_run(f"r{n}-{i}", version, {}, "one", f"o{i}")

            results = _race(start)
            assert results == [None] * THREADS, [r for r in results if r is not None]
    finally:
        for other in own:
            other.close()
    assert len(store.list_runs(limit=1000)) == THREADS * VERSIONS
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(flow_versions)).scalar() == (
            VERSIONS
        )
