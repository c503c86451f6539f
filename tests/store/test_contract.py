"""One contract suite for every implementation of the Store protocol: SqlStore on
SQLite in memory, on a SQLite file, and on PostgreSQL."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from runner.core.errors import StoreError
from runner.core.events import AlertSent, DecisionMade, RunStarted, StepFinished, UnknownEvent
from runner.lang.load import load_flow_text
from runner.runtime.engine import Engine
from runner.store import Store, open_store
from runner.store.records import Checkpoint, Decision, FlowVersion, StepCommit, now
from runner.store.sql import SqlStore
from runner.store.tables import runs


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        made: Store = SqlStore.memory()
    elif request.param == "sqlite":
        made = open_store(f"sqlite:///{tmp_path / 'runs.db'}")
    else:
        made = open_store(request.getfixturevalue("postgres_url"))
    try:
        yield made
    finally:
        made.close()


def _expire_leases(store: Store) -> None:
    """Every lease runs out (behind the protocol: the test reaches into the database)."""
    assert isinstance(store, SqlStore)
    with store.engine.begin() as conn:
        conn.execute(runs.update().values(lease_expires=now() - timedelta(seconds=1)))


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

VERSION = FlowVersion(
    "d" * 64,
    "contract",
    "flows/contract.yaml",
    FLOW,
    "abc123",
    abs_path="/srv/flows/contract.yaml",
    git_root="/srv",
    repo_path="flows/contract.yaml",
)


def _checkpoint(seq: int, step: str) -> Checkpoint:
    return Checkpoint(seq, step, "ok", "two", {"value": seq}, 1, now(), now())


def _step(step: str) -> StepFinished:
    return StepFinished(step_id=step, outcome="ok", route="two", attempts=1, ms=1.5)


def test_create_run_pins_the_flow_version_and_input(store: Store) -> None:
    store.create_run("r1", VERSION, {"n": 1, "text": "é {{ 7*7 }}"}, "one", "me")
    record = store.run("r1")
    assert (record.status, record.position, record.input) == (
        "running",
        "one",
        {"n": 1, "text": "é {{ 7*7 }}"},
    )
    assert store.flow_version(VERSION.digest) == VERSION
    assert [e.kind for e in store.events("r1")] == ["run_started"]


def test_a_second_run_reuses_the_pinned_version(store: Store) -> None:
    store.create_run("r1", VERSION, {}, "one", "me")
    store.create_run("r2", VERSION, {}, "one", "me")
    assert {r.id for r in store.list_runs()} == {"r1", "r2"}


def test_commit_step_writes_checkpoint_position_events_and_effect_together(store: Store) -> None:
    store.create_run("r1", VERSION, {}, "one", "me")
    assert store.start_effect("k1", "r1", "one", "echo") is None
    store.commit_step(
        "r1",
        "me",
        StepCommit(
            checkpoint=_checkpoint(1, "one"),
            position="two",
            status="running",
            events=[_step("one")],
            effect=("k1", "done", {"id": 7}),
        ),
    )
    assert store.run("r1").position == "two"
    assert store.run("r1").steps_run == 1
    assert [c.step_id for c in store.checkpoints("r1")] == ["one"]
    assert [e.kind for e in store.events("r1")] == ["run_started", "step"]
    effect = store.effect("k1")
    assert effect is not None and (effect.status, effect.result) == ("done", {"id": 7})


def test_commit_by_a_process_without_the_lease_writes_nothing(store: Store) -> None:
    store.create_run("r1", VERSION, {}, "one", "me")
    with pytest.raises(StoreError, match="no longer leased"):
        store.commit_step(
            "r1",
            "someone-else",
            StepCommit(
                checkpoint=_checkpoint(1, "one"),
                position="two",
                status="running",
                events=[_step("one")],
            ),
        )
    assert store.checkpoints("r1") == []
    assert store.run("r1").position == "one"
    assert [e.kind for e in store.events("r1")] == ["run_started"]


def test_effect_ledger_keeps_one_row_per_key(store: Store) -> None:
    store.create_run("r1", VERSION, {}, "one", "me")
    assert store.start_effect("k", "r1", "one", "echo") is None
    again = store.start_effect("k", "r1", "one", "echo")
    assert again is not None and again.status == "started"


def test_a_failed_effect_can_be_started_again(store: Store) -> None:
    store.create_run("r1", VERSION, {}, "one", "me")
    store.start_effect("k", "r1", "one", "echo")
    store.commit_step(
        "r1",
        "me",
        StepCommit(
            checkpoint=_checkpoint(1, "one"),
            position="dead_letter",
            status="failed",
            effect=("k", "failed", {"error": "HTTP 400"}),
        ),
    )
    assert store.start_effect("k", "r1", "one", "echo") is None
    effect = store.effect("k")
    assert effect is not None and effect.status == "started"


def test_concurrent_effect_starts_let_exactly_one_through(store: Store) -> None:
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


def test_claim_refuses_a_live_lease_and_takes_over_a_dead_one(store: Store) -> None:
    store.create_run("r1", VERSION, {}, "one", f"otherhost:{os.getpid()}:x")
    with pytest.raises(StoreError, match="being run by otherhost"):
        store.claim("r1", "me")
    _expire_leases(store)  # the holder's lease runs out
    assert store.claim("r1", "me").lease_owner == "me"


def test_claim_takes_over_from_a_dead_process_on_this_host(store: Store) -> None:
    import socket
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    store.create_run("r1", VERSION, {}, "one", f"{socket.gethostname()}:{dead}:x")
    assert store.claim("r1", "me").lease_owner == "me"
    with pytest.raises(StoreError, match="being run by"):
        store.claim("r1", f"{socket.gethostname()}:{os.getpid()}:y")


def test_claim_reopens_a_failed_run_at_a_step(store: Store) -> None:
    store.create_run("r1", VERSION, {}, "one", "me")
    store.commit_step(
        "r1",
        "me",
        StepCommit(
            checkpoint=_checkpoint(1, "one"),
            position="dead_letter",
            status="failed",
            failed_step="one",
            error={"kind": "exception"},
        ),
    )
    store.release("r1", "me")
    with pytest.raises(StoreError, match="is failed"):
        store.claim("r1", "me")
    record = store.claim("r1", "me", statuses=("failed",), reopen_at="one")
    assert (record.status, record.position, record.error) == ("running", "one", None)


def test_list_runs_filters_and_prefix_lookup(store: Store) -> None:
    store.create_run("20260101-a", VERSION, {}, "one", "me")
    store.create_run("20260101-b", VERSION, {}, "one", "me")
    store.commit_step(
        "20260101-b",
        "me",
        StepCommit(checkpoint=_checkpoint(1, "one"), position="done", status="completed"),
    )
    assert [r.id for r in store.list_runs(status="completed")] == ["20260101-b"]
    assert store.list_runs(flow="nope") == []
    assert store.run("20260101-a").id == "20260101-a"
    assert store.run("20260101-b"[:-1] + "b").status == "completed"
    with pytest.raises(StoreError, match="ambiguous"):
        store.run("20260101-")
    with pytest.raises(StoreError, match="no run"):
        store.run("nothing")


def test_engine_runs_a_flow_end_to_end_on_the_store(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tools_contract.py").write_text("def echo(value):\n    return {'value': value}\n")
    monkeypatch.chdir(tmp_path)
    compiled = load_flow_text(FLOW, str(tmp_path / "contract.yaml"))
    result = Engine(store).start(compiled, {"n": 41})
    assert (result.status, result.position) == ("completed", "done")
    outputs = [c.output for c in store.checkpoints(result.run_id)]
    assert outputs == [{"value": 41}, {"value": 42}]
    assert store.run(result.run_id).lease_owner is None


def test_events_read_back_as_their_typed_records(store: Store) -> None:
    store.create_run("r1", VERSION, {}, "one", "me")
    alert = AlertSent(tool="mail", status="failed", error="no route")
    later = UnknownEvent(
        step_id="one", stored_kind="from_a_newer_runner", stored_data={"x": [1, "é"]}
    )
    store.add_events("r1", [alert, later])
    started, *rest = store.events("r1")
    assert isinstance(started, RunStarted)
    assert (started.flow, started.digest, started.git_commit) == (
        "contract",
        VERSION.digest,
        "abc123",
    )
    assert rest == [alert, later]
    assert (rest[1].kind, rest[1].data) == ("from_a_newer_runner", {"x": [1, "é"]})


def test_a_decision_moves_the_run_and_is_recorded_once(store: Store) -> None:
    store.create_run("r1", VERSION, {}, "one", "me")
    store.commit_step(
        "r1",
        "me",
        StepCommit(
            checkpoint=_checkpoint(1, "one"),
            position="human_review",
            status="escalated",
            failed_step="one",
            reason="low confidence",
        ),
    )
    record = store.run("r1")
    store.decide(
        record,
        Decision("r1", "one", "approved", "Ann", "h1", "fine"),
        status="running",
        position="two",
        owner="me",
        checkpoint=_checkpoint(2, "one"),
    )
    with pytest.raises(StoreError, match="changed while this decision was made"):
        store.decide(
            record,
            Decision("r1", "one", "rejected", "Bob"),
            status="rejected",
            position="human_review",
        )
    moved = store.run("r1")
    assert (moved.status, moved.position, moved.steps_run, moved.lease_owner) == (
        "running",
        "two",
        2,
        "me",
    )
    assert [(d.decision, d.decided_by, d.note) for d in store.decisions("r1")] == [
        ("approved", "Ann", "fine")
    ]
    decided = store.events("r1")[-1]
    assert isinstance(decided, DecisionMade)
    assert (decided.step_id, decided.by, decided.status, decided.position) == (
        "one",
        "Ann",
        "running",
        "two",
    )


def test_every_store_is_a_store(store: Store) -> None:
    assert isinstance(store, Store)


def test_a_version_without_its_file_location_reads_back_without_it(store: Store) -> None:
    bare = FlowVersion("e" * 64, "contract", "contract.yaml", FLOW)
    store.create_run("r1", bare, {}, "one", "me")
    read = store.flow_version(bare.digest)
    assert read == bare
    assert (read.abs_path, read.git_root, read.repo_path) == (None, None, None)


def test_a_store_opens_again(store: Store) -> None:
    store.create_run("r1", VERSION, {}, "one", "me")
    if store.url != "sqlite://":  # memory lives as long as its store
        again = open_store(store.url)
        assert again.run("r1").status == "running"
        again.close()
