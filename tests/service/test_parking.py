"""Parked runs: under a worker, a retry wait longer than `park_after` (a long backoff,
or a server's Retry-After beyond the policy's cap) puts the run back in the queue, due
when the wait is over, instead of holding a thread and a lease. The step's attempts so
far count when it comes back, and an effect that was set aside starts again with its
key. Against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from scripted_server import Reply, ScriptedServer
from working import work_until

from runner.core.events import AttemptFailed, RunParked
from runner.lang.load import load_flow
from runner.runtime.engine import Engine
from runner.runtime.versions import flow_version
from runner.service.intake import submit
from runner.service.worker import Worker, WorkerOptions
from runner.store.records import now
from runner.store.sql import SqlStore

FLOW = """\
version: 1
name: notify
description: One idempotent effect against a server that may ask to wait.
input: {type: object, required: [id], properties: {id: {type: string}}}
tools:
  hook:
    http:
      method: POST
      url: "{{ env.BASE }}/hook"
      json: {id: "{{ input.id }}"}
    effect: true
    idempotent: true
    idempotency_key: "hook-{{ input.id }}"
    timeout_seconds: 5
    retry:
      max_attempts: MAX
      interval_seconds: 0.05
      max_interval_seconds: 0.2
      retry_on: [http_429, http_5xx]
steps:
  - id: call
    tool: hook
    args: {}
on_error: dead_letter
"""


def _setup(tmp_path: Path, server: ScriptedServer, attempts: int) -> tuple[SqlStore, str]:
    (tmp_path / "notify.yaml").write_text(FLOW.replace("MAX", str(attempts)))
    store = SqlStore(f"sqlite:///{tmp_path / 'runs.db'}")
    compiled = load_flow(tmp_path / "notify.yaml")
    made = submit(store, (compiled, flow_version(compiled)), {"id": "n1"}, key="n1")
    os.environ["BASE"] = server.url
    return store, made.run.id


def _work(store: SqlStore, until: Callable[[], bool], park_after: float = 0.5) -> Worker:
    options = WorkerOptions(
        concurrency=2, poll_seconds=0.05, expire_seconds=3600, park_after_seconds=park_after
    )
    return work_until(Engine(store), options, until, seconds=20)


@pytest.fixture(autouse=True)
def _base_env() -> object:
    saved = os.environ.get("BASE")
    yield None
    if saved is None:
        os.environ.pop("BASE", None)
    else:
        os.environ["BASE"] = saved


def test_a_long_retry_after_parks_the_run_and_a_worker_finishes_it_when_due(
    tmp_path: Path, http_server: ScriptedServer
) -> None:
    http_server.script(
        "/hook",
        Reply(429, {"error": "slow down"}, {"Retry-After": "2"}),
        Reply(200, {"ok": True}),
    )
    store, run_id = _setup(tmp_path, http_server, attempts=3)
    _work(
        store, lambda: store.run(run_id).status == "queued" and store.run(run_id).due_at is not None
    )
    parked = store.run(run_id)
    assert parked.status == "queued" and parked.lease_owner is None
    assert parked.reason is not None and parked.reason.startswith("waiting 2 s to retry step call")
    assert 1.0 < (parked.due_at - now()).total_seconds() <= 2.0  # type: ignore[operator]
    assert store.effect("hook-n1").status == "failed"  # type: ignore[union-attr]
    assert len(http_server.requests_to("/hook")) == 1  # nobody waited inside a thread
    assert store.claim_queued(["eager"]) == []  # not before it is due

    _work(store, lambda: store.run(run_id).status == "completed")
    assert store.run(run_id).status == "completed"
    calls = http_server.requests_to("/hook")
    assert len(calls) == 2
    assert {c.header("Idempotency-Key") for c in calls} == {"hook-n1"}
    events = store.events(run_id)
    assert [e.attempts for e in events if isinstance(e, RunParked)] == [1]
    assert [e.attempt for e in events if isinstance(e, AttemptFailed)] == [1]
    assert store.effect("hook-n1").status == "done"  # type: ignore[union-attr]


def test_attempts_before_a_park_count_against_the_retry_policy(
    tmp_path: Path, http_server: ScriptedServer
) -> None:
    asks = Reply(429, {"error": "slow down"}, {"Retry-After": "1"})
    http_server.script("/hook", asks, asks, asks)
    store, run_id = _setup(tmp_path, http_server, attempts=2)
    _work(store, lambda: store.run(run_id).status == "failed")
    record = store.run(run_id)
    assert record.status == "failed" and record.failed_step == "call"
    assert len(http_server.requests_to("/hook")) == 2  # max_attempts, across the park
    failed = [e.attempt for e in store.events(run_id) if isinstance(e, AttemptFailed)]
    assert failed == [1, 2]


def test_a_short_wait_is_waited_for_in_place(tmp_path: Path, http_server: ScriptedServer) -> None:
    http_server.script("/hook", Reply(503, "busy"), Reply(200, {"ok": True}))
    store, run_id = _setup(tmp_path, http_server, attempts=3)
    _work(store, lambda: store.run(run_id).status == "completed")
    assert store.run(run_id).status == "completed"
    assert not [e for e in store.events(run_id) if isinstance(e, RunParked)]


def test_runner_run_still_refuses_a_wait_beyond_the_cap(
    tmp_path: Path, http_server: ScriptedServer
) -> None:
    """Without a worker nothing would pick a parked run up: the cap holds, as before."""
    http_server.script("/hook", Reply(429, {"error": "later"}, {"Retry-After": "30"}))
    store, _ = _setup(tmp_path, http_server, attempts=3)
    compiled = load_flow(tmp_path / "notify.yaml")
    result = Engine(store).start(compiled, {"id": "n2"})
    assert result.status == "failed"
    assert "more than max_interval_seconds" in store.run(result.run_id).reason  # type: ignore[operator]
