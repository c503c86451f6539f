"""The run queue and `runner worker`: submitting is idempotent, concurrent claims never
share a run, a lost lease fences commits and effects, a worker drains on SIGTERM at step
boundaries, a run that cannot go on here is parked with its reason, and overdue reviews
expire without a cron job. Each store test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_databases import postgres_database
from working import work_until

from runner.core.errors import StoreError
from runner.lang.load import load_flow
from runner.runtime.engine import Engine
from runner.runtime.versions import flow_version
from runner.service.intake import keyed_run_id, submit
from runner.service.worker import Worker, WorkerOptions
from runner.store.leases import owner_id
from runner.store.records import Checkpoint, StepCommit, now
from runner.store.sql import SqlStore

RUNNER = [sys.executable, "-m", "runner"]

FLOW = """\
version: 1
name: chores
description: Python steps that log `<id> <step>` when they finish, after a pause.
input:
  type: object
  required: [id]
  properties: {id: {type: string}, pause_ms: {type: integer}}
tools:
  work:
    python: tools.chores:work
    input: {type: object, required: [log, id, step]}
    output: {type: object, required: [step]}
    timeout_seconds: 30
    retry: 1
steps:
  - id: one
    tool: work
    args:
      log: "{{ env.CHORES_LOG }}"
      id: "{{ input.id }}"
      step: one
      pause_ms: "{{ input.pause_ms | default(0) }}"
  - id: two
    tool: work
    args:
      log: "{{ env.CHORES_LOG }}"
      id: "{{ input.id }}"
      step: two
      pause_ms: "{{ input.pause_ms | default(0) }}"
  - id: three
    tool: work
    args:
      log: "{{ env.CHORES_LOG }}"
      id: "{{ input.id }}"
      step: three
      pause_ms: "{{ input.pause_ms | default(0) }}"
on_error: dead_letter
"""

TOOLS = """\
import os
import time


def work(log, id, step, pause_ms=0):
    time.sleep(int(pause_ms) / 1000)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{id} {step}\\n".encode())
    finally:
        os.close(fd)
    return {"step": step}
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "__init__.py").write_text("")
    (tmp_path / "tools" / "chores.py").write_text(TOOLS)
    (tmp_path / "chores.yaml").write_text(FLOW)
    monkeypatch.setenv("CHORES_LOG", str(tmp_path / "chores.log"))
    return tmp_path


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'runs.db'}"
    else:
        yield from postgres_database()


def _store(url: str, **kwargs: Any) -> SqlStore:
    return SqlStore(url, **kwargs)


def _queue(store: SqlStore, folder: Path, count: int, pause_ms: int = 0) -> list[str]:
    compiled = load_flow(folder / "chores.yaml")
    flow = (compiled, flow_version(compiled))
    return [
        submit(store, flow, {"id": f"r{i}", "pause_ms": pause_ms}, key=f"k{i}").run.id
        for i in range(count)
    ]


def _log(folder: Path) -> list[str]:
    path = folder / "chores.log"
    return path.read_text().splitlines() if path.exists() else []


# -- the queue ---------------------------------------------------------------------------
@pytest.mark.postgres
def test_a_key_makes_one_run_and_a_new_input_under_it_is_a_conflict(
    folder: Path, db_url: str
) -> None:
    store = _store(db_url)
    compiled = load_flow(folder / "chores.yaml")
    flow = (compiled, flow_version(compiled))
    first = submit(store, flow, {"id": "a"}, key="ticket-1")
    again = submit(store, flow, {"id": "a"}, key="ticket-1")
    other = submit(store, flow, {"id": "b"}, key="ticket-1")
    assert (first.created, again.created, other.created) == (True, False, False)
    assert first.run.id == again.run.id == other.run.id == keyed_run_id("chores", "ticket-1")
    assert (again.conflict, other.conflict) == (False, True)
    assert first.run.status == "queued" and first.run.lease_owner is None
    assert [r.id for r in store.list_runs()] == [first.run.id]
    assert [e.kind for e in store.events(first.run.id)] == ["run_queued"]


@pytest.mark.postgres
def test_concurrent_claims_never_take_one_run_twice(folder: Path, db_url: str) -> None:
    ids = _queue(_store(db_url), folder, 60)
    claimed: list[list[str]] = [[] for _ in range(4)]

    def claimer(mine: list[str]) -> None:
        store = _store(db_url)  # a store (and connections) of its own, like a process
        while batch := store.claim_queued([owner_id() for _ in range(3)]):
            mine += [r.id for r in batch]
        store.close()

    threads = [threading.Thread(target=claimer, args=(c,)) for c in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    every = [run for mine in claimed for run in mine]
    assert sorted(every) == sorted(ids)  # all claimed, none twice
    records = [_store(db_url).run(i) for i in ids]
    assert {r.status for r in records} == {"running"}
    assert len({r.lease_owner for r in records}) == 60  # a token per claim


@pytest.mark.postgres
def test_a_holder_that_lost_its_lease_can_neither_commit_nor_start_an_effect(
    folder: Path, db_url: str
) -> None:
    store = _store(db_url, lease_seconds=0.3)
    (run_id,) = _queue(store, folder, 1)
    (_mine,) = store.claim_queued(["paused-worker"])
    assert store.claim_queued(["other"]) == []  # a live lease is respected
    time.sleep(0.5)  # the holder is paused past its lease
    (taken,) = store.claim_queued(["new-holder"])
    assert taken.id == run_id and taken.lease_owner == "new-holder"
    stamp = now()
    late = StepCommit(
        checkpoint=Checkpoint(1, "one", "ok", "two", {"step": "one"}, 1, stamp, stamp),
        position="two",
        status="running",
        events=[],
    )
    with pytest.raises(StoreError, match="no longer leased"):
        store.commit_step(run_id, "paused-worker", late)
    with pytest.raises(StoreError, match="no longer leased"):
        store.start_effect("mail-1", run_id, "one", "mail", owner="paused-worker")
    assert store.effect("mail-1") is None and store.checkpoints(run_id) == []
    assert store.start_effect("mail-1", run_id, "one", "mail", owner="new-holder") is None
    store.commit_step(run_id, "new-holder", late)
    assert [c.step_id for c in store.checkpoints(run_id)] == ["one"]


@pytest.mark.postgres
def test_submitting_one_key_from_two_processes_at_once_makes_one_run(
    folder: Path, db_url: str
) -> None:
    _store(db_url).close()  # the schema exists before the race
    (folder / "in.json").write_text('{"id": "same"}')
    command = [*RUNNER, "submit", str(folder / "chores.yaml"), "--input", str(folder / "in.json")]
    command += ["--key", "order-77", "--db", db_url, "--format", "json"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sorted(o[0]["created"] for o in outputs) == [False, True]
    assert {o[0]["run"] for o in outputs} == {keyed_run_id("chores", "order-77")}
    assert len(_store(db_url).list_runs()) == 1


def test_submit_queues_each_line_once_and_reports_refused_lines(folder: Path) -> None:
    db = f"sqlite:///{folder / 'runs.db'}"
    lines = ['{"id": "a"}', '{"id": 5}', '{"id": "c"}']
    (folder / "in.jsonl").write_text("\n".join(lines) + "\n")
    command = [*RUNNER, "submit", str(folder / "chores.yaml"), "--inputs", str(folder / "in.jsonl")]
    first = subprocess.run([*command, "--db", db], capture_output=True, text=True, timeout=60)
    assert first.returncode == 1, first.stderr
    said = first.stdout.splitlines()
    assert said[0].startswith("line 1: queued in-1-")
    assert said[1].startswith("line 2: refused: ") and "id" in said[1]
    assert said[2].startswith("line 3: queued in-3-")
    again = subprocess.run([*command, "--db", db], capture_output=True, text=True, timeout=60)
    assert "was already submitted (queued)" in again.stdout.splitlines()[0]
    assert len(_store(db).list_runs()) == 2


# -- the worker ----------------------------------------------------------------------------
def _work(store: SqlStore, until: Any, environ: dict[str, str] | None = None) -> Worker:
    """A worker on its own thread until `until()` holds (or 30 s), then stopped."""
    engine = Engine(store, environ=os.environ if environ is None else environ)
    options = WorkerOptions(concurrency=4, poll_seconds=0.05, expire_seconds=0)
    return work_until(engine, options, until)


@pytest.mark.postgres
def test_a_worker_runs_queued_and_interrupted_runs_to_the_end(folder: Path, db_url: str) -> None:
    store = _store(db_url)
    ids = _queue(store, folder, 6)
    (left,) = store.claim_queued(["gone"])  # a holder that gave up its lease mid-run
    store.release(left.id, "gone")
    worker = _work(store, lambda: all(store.run(i).status == "completed" for i in ids))
    assert {store.run(i).status for i in ids} == {"completed"}
    assert worker.tally.by_status == {"completed": 6}
    assert sorted(_log(folder)) == sorted(
        f"r{i} {s}" for i in range(6) for s in ("one", "two", "three")
    )


@pytest.mark.postgres
def test_a_run_that_cannot_run_here_is_parked_with_the_reason(folder: Path, db_url: str) -> None:
    store = _store(db_url)
    (run_id,) = _queue(store, folder, 1)
    _work(store, lambda: bool(store.run(run_id).reason), environ={})  # no CHORES_LOG here
    record = store.run(run_id)
    assert record.status == "queued" and record.lease_owner is None
    assert record.reason is not None and "CHORES_LOG" in record.reason
    assert record.due_at is not None and record.due_at > now()
    assert store.claim_queued(["eager"]) == []  # not before it is due
    assert _log(folder) == []


REVIEWED = FLOW.replace(
    "on_error: dead_letter",
    """  - id: sign
    approval: {title: "Sign {{ input.id }}"}
review: {expires_after_seconds: 1, on_expired: dead_letter}
on_error: dead_letter""",
)


def test_a_worker_expires_an_overdue_review_without_a_cron_job(folder: Path) -> None:
    (folder / "chores.yaml").write_text(REVIEWED)
    store = _store(f"sqlite:///{folder / 'runs.db'}")
    (run_id,) = _queue(store, folder, 1)
    _work(store, lambda: store.run(run_id).status == "escalated")
    assert store.run(run_id).failed_step == "sign"
    time.sleep(1.1)
    _work(store, lambda: store.run(run_id).status == "failed")
    record = store.run(run_id)
    assert record.status == "failed"
    assert [(d.decision, d.decided_by) for d in store.decisions(run_id)] == [("expired", "runner")]


# -- a worker process ------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_drains_at_step_boundaries_and_another_worker_finishes(folder: Path) -> None:
    db = f"sqlite:///{folder / 'runs.db'}"
    store = _store(db)
    ids = _queue(store, folder, 4, pause_ms=400)
    command = [*RUNNER, "worker", "--db", db, "--concurrency", "4", "--poll", "0.1"]
    worker = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not any(line.endswith(" one") for line in _log(folder)) and time.monotonic() < deadline:
        time.sleep(0.02)
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert out.startswith("worker stopped: 4 running"), out  # each left at a step boundary
    records = [store.run(i) for i in ids]
    assert {(r.status, r.lease_owner) for r in records} == {("running", None)}
    assert all(r.steps_run < 3 for r in records)
    _work(store, lambda: all(store.run(i).status == "completed" for i in ids))
    logged = _log(folder)
    assert sorted(logged) == sorted(set(logged))  # no step ran twice
    assert len(logged) == 12


@pytest.mark.slow
def test_a_worker_waits_for_a_database_that_is_not_up_yet(refused_url: str) -> None:
    port = refused_url.rsplit(":", 1)[1]
    db = f"postgresql+psycopg://postgres@127.0.0.1:{port}/runner"
    worker = subprocess.Popen(
        [*RUNNER, "worker", "--db", db], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert worker.stderr is not None
    first = worker.stderr.readline()  # once it says so, its SIGTERM handler is in place
    assert "waiting for the run store: cannot reach the database server" in first
    time.sleep(1.0)
    assert worker.poll() is None  # still waiting, not gone with an error
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=20)
    assert (worker.returncode, out) == (0, "")
