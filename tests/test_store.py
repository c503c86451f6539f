"""One contract suite for every run store: SQLite in memory, SQLite on disk, PostgreSQL."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from runner.runtime.engine import Engine
from runner.core.errors import StoreError
from runner.lang.load import load_flow_text
from runner.store.records import Checkpoint, Event, FlowVersion, StepCommit, now
from runner.store.sql import SqlStore
from runner.store.tables import runs

PG_URL = os.environ.get("RUNNER_TEST_POSTGRES_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _postgres_database() -> Iterator[str]:
    """A fresh database on the test server, dropped afterwards; skips (or fails in CI)
    when no server is reachable."""
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


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[SqlStore]:
    if request.param == "memory":
        made = SqlStore.memory()
        yield made
        made.close()
    elif request.param == "sqlite":
        made = SqlStore(f"sqlite:///{tmp_path / 'runs.db'}")
        yield made
        made.close()
    else:
        for url in _postgres_database():
            made = SqlStore(url)
            try:
                yield made
            finally:
                made.close()


FLOW = """\
version: 1
name: contract
tools:
  echo: {python: "tools_contract:echo"}
steps:
  - id: one
    tool: echo
    args: {value: "{{ input.n }}"}
  - id: two
    tool: echo
    args: {value: "{{ steps.one.output.value + 1 }}"}
on_error: dead_letter
"""

VERSION = FlowVersion("d" * 64, "contract", "flows/contract.yaml", FLOW, "abc123")


def _checkpoint(seq: int, step: str) -> Checkpoint:
    return Checkpoint(seq, step, "ok", "two", {"value": seq}, 1, now(), now())


def test_create_run_pins_the_flow_version_and_input(store: SqlStore) -> None:
    store.create_run("r1", VERSION, {"n": 1, "text": "é {{ 7*7 }}"}, "one", "me")
    record = store.run("r1")
    assert (record.status, record.position, record.input) == \
        ("running", "one", {"n": 1, "text": "é {{ 7*7 }}"})
    assert store.flow_version(VERSION.digest) == VERSION
    assert [e.kind for e in store.events("r1")] == ["run_started"]


def test_a_second_run_reuses_the_pinned_version(store: SqlStore) -> None:
    store.create_run("r1", VERSION, {}, "one", "me")
    store.create_run("r2", VERSION, {}, "one", "me")
    assert {r.id for r in store.list_runs()} == {"r1", "r2"}


def test_commit_step_writes_checkpoint_position_events_and_effect_together(
        store: SqlStore) -> None:
    store.create_run("r1", VERSION, {}, "one", "me")
    assert store.start_effect("k1", "r1", "one", "echo") is None
    store.commit_step("r1", "me", StepCommit(
        checkpoint=_checkpoint(1, "one"), position="two", status="running",
        events=[Event("step", "one", {"outcome": "ok"})], effect=("k1", "done", {"id": 7})))
    assert store.run("r1").position == "two"
    assert store.run("r1").steps_run == 1
    assert [c.step_id for c in store.checkpoints("r1")] == ["one"]
    assert [e.kind for e in store.events("r1")] == ["run_started", "step"]
    effect = store.effect("k1")
    assert effect is not None and (effect.status, effect.result) == ("done", {"id": 7})


def test_commit_by_a_process_without_the_lease_writes_nothing(store: SqlStore) -> None:
    store.create_run("r1", VERSION, {}, "one", "me")
    with pytest.raises(StoreError, match="no longer leased"):
        store.commit_step("r1", "someone-else", StepCommit(
            checkpoint=_checkpoint(1, "one"), position="two", status="running",
            events=[Event("step", "one")]))
    assert store.checkpoints("r1") == []
    assert store.run("r1").position == "one"
    assert [e.kind for e in store.events("r1")] == ["run_started"]


def test_effect_ledger_keeps_one_row_per_key(store: SqlStore) -> None:
    store.create_run("r1", VERSION, {}, "one", "me")
    assert store.start_effect("k", "r1", "one", "echo") is None
    again = store.start_effect("k", "r1", "one", "echo")
    assert again is not None and again.status == "started"


def test_a_failed_effect_can_be_started_again(store: SqlStore) -> None:
    store.create_run("r1", VERSION, {}, "one", "me")
    store.start_effect("k", "r1", "one", "echo")
    store.commit_step("r1", "me", StepCommit(
        checkpoint=_checkpoint(1, "one"), position="dead_letter", status="failed",
        effect=("k", "failed", {"error": "HTTP 400"})))
    assert store.start_effect("k", "r1", "one", "echo") is None
    effect = store.effect("k")
    assert effect is not None and effect.status == "started"


def test_concurrent_effect_starts_let_exactly_one_through(store: SqlStore) -> None:
    store.create_run("r1", VERSION, {}, "one", "me")
    results: list[object] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        try:
            results.append(store.start_effect("shared", "r1", "one", "echo"))
        except StoreError as exc:
            results.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sum(1 for r in results if r is None) == 1
    assert len(results) == 4


def test_claim_refuses_a_live_lease_and_takes_over_a_dead_one(store: SqlStore) -> None:
    store.create_run("r1", VERSION, {}, "one", f"otherhost:{os.getpid()}:x")
    with pytest.raises(StoreError, match="being run by otherhost"):
        store.claim("r1", "me")
    with store.engine.begin() as conn:  # the holder's lease runs out
        conn.execute(runs.update().values(lease_expires=now() - timedelta(seconds=1)))
    assert store.claim("r1", "me").lease_owner == "me"


def test_claim_takes_over_from_a_dead_process_on_this_host(store: SqlStore) -> None:
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    store.create_run("r1", VERSION, {}, "one", f"{socket.gethostname()}:{dead}:x")
    assert store.claim("r1", "me").lease_owner == "me"
    with pytest.raises(StoreError, match="being run by"):
        store.claim("r1", f"{socket.gethostname()}:{os.getpid()}:y")


def test_claim_reopens_a_failed_run_at_a_step(store: SqlStore) -> None:
    store.create_run("r1", VERSION, {}, "one", "me")
    store.commit_step("r1", "me", StepCommit(
        checkpoint=_checkpoint(1, "one"), position="dead_letter", status="failed",
        failed_step="one", error={"kind": "exception"}))
    store.release("r1", "me")
    with pytest.raises(StoreError, match="is failed"):
        store.claim("r1", "me")
    record = store.claim("r1", "me", statuses=("failed",), reopen_at="one")
    assert (record.status, record.position, record.error) == ("running", "one", None)


def test_list_runs_filters_and_prefix_lookup(store: SqlStore) -> None:
    store.create_run("20260101-a", VERSION, {}, "one", "me")
    store.create_run("20260101-b", VERSION, {}, "one", "me")
    store.commit_step("20260101-b", "me", StepCommit(
        checkpoint=_checkpoint(1, "one"), position="done", status="completed"))
    assert [r.id for r in store.list_runs(status="completed")] == ["20260101-b"]
    assert store.list_runs(flow="nope") == []
    assert store.run("20260101-a").id == "20260101-a"
    assert store.run("20260101-b"[:-1] + "b").status == "completed"
    with pytest.raises(StoreError, match="ambiguous"):
        store.run("20260101-")
    with pytest.raises(StoreError, match="no run"):
        store.run("nothing")


def test_engine_runs_a_flow_end_to_end_on_the_store(store: SqlStore, tmp_path,
                                                     monkeypatch) -> None:
    (tmp_path / "tools_contract.py").write_text("def echo(value):\n    return {'value': value}\n")
    monkeypatch.chdir(tmp_path)
    compiled = load_flow_text(FLOW, str(tmp_path / "contract.yaml"))
    result = Engine(store).start(compiled, {"n": 41})
    assert (result.status, result.position) == ("completed", "done")
    outputs = [c.output for c in store.checkpoints(result.run_id)]
    assert outputs == [{"value": 41}, {"value": 42}]
    assert store.run(result.run_id).lease_owner is None


def test_a_store_of_another_schema_version_is_refused(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE runs (id TEXT PRIMARY KEY)")  # an early runner's table
    old.commit()
    old.close()
    with pytest.raises(StoreError) as refused:
        SqlStore(f"sqlite:///{path}")
    assert str(refused.value) == (
        f"the run store at sqlite:///{path} has schema version none (an early runner); "
        "this runner uses version 1. Keep it aside with the runner that made it, or start a "
        "new one (--db or RUNNER_DB)")


def test_a_new_store_records_its_schema_version_and_opens_again(store: SqlStore) -> None:
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT value FROM runner_meta WHERE key = 'schema'")
                            ).scalar() == "1"
    if store.url != "sqlite://":
        SqlStore(store.url).close()  # a second open of the same database is fine
