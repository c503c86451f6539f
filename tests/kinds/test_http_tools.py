"""Tool faults against a real HTTP server on 127.0.0.1: retries, waits, routes, the
effect ledger, template data and secrets.

Every test drives the engine against the `http_server` fixture (tests/conftest.py; the
server is tests/scripted_server.py), which answers each path from a scripted queue and
records every request. Retry waits go through a FakeClock, so they are asserted exactly
and nothing sleeps; only the timeout cases spend real time (a 0.2 s client timeout
against a 1 s server delay).
"""

from __future__ import annotations

import io
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from scripted_server import Reply, ScriptedServer

from runner.cli import main as cli
from runner.core.errors import InputError
from runner.lang.compiler import CompiledFlow
from runner.lang.load import load_flow
from runner.runtime.engine import Engine, RunResult
from runner.store.sql import SqlStore
from runner.testing import FakeClock

TIMEOUT = 0.2  # the tool's timeout in the timeout cases (real seconds)
SLOW = 1.0  # how long the server stalls in the timeout cases (released at teardown)
INPUT_SCHEMA = {
    "type": "object",
    "required": ["item"],
    "additionalProperties": False,
    "properties": {"item": {"type": "string"}},
}
ITEM = {"item": "42"}


# -- building flows --------------------------------------------------------------------
def http_tool(
    path: str = "/items", *, retry: dict[str, Any] | None = None, timeout: float = 5, **extra: Any
) -> dict[str, Any]:
    """An http tool that POSTs {item} to the scripted server; waits are exact (no jitter)."""
    tool: dict[str, Any] = {
        "http": {
            "method": "POST",
            "url": "{{ env.BASE }}" + path,
            "json": {"item": "{{ args.item }}"},
        },
        "input": {
            "type": "object",
            "required": ["item"],
            "properties": {"item": {"type": "string"}},
        },
        "timeout_seconds": timeout,
    }
    if retry is not None:
        tool["retry"] = {"jitter": False, **retry}
    tool.update(extra)
    return tool


CALL = {"id": "call", "tool": "api", "args": {"item": "{{ input.item }}"}}


def write_flow(
    tmp_path: Path,
    tools: dict[str, Any],
    steps: list[dict[str, Any]] | None = None,
    *,
    on_error: str = "dead_letter",
    name: str = "http_faults",
    file: str = "flow.yaml",
) -> CompiledFlow:
    document = {
        "version": 1,
        "name": name,
        "input": INPUT_SCHEMA,
        "tools": tools,
        "steps": steps or [CALL],
        "on_error": on_error,
    }
    path = tmp_path / file
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return load_flow(path)


@dataclass
class Harness:
    """An engine on an in-memory store, a fake clock, and the scripted server."""

    server: ScriptedServer
    store: SqlStore
    base: str
    clock: FakeClock = field(default_factory=FakeClock)
    max_input_bytes: int = 1024 * 1024

    def engine(self) -> Engine:
        return Engine(
            self.store,
            clock=self.clock,
            environ={"BASE": self.base},
            rng=random.Random(0),
            max_input_bytes=self.max_input_bytes,
        )

    def start(self, compiled: CompiledFlow, value: Any = None) -> RunResult:
        return self.engine().start(compiled, ITEM if value is None else value)

    def route(self, run_id: str) -> list[tuple[str, str, str]]:
        """(step, outcome, route) of every checkpoint, in order."""
        return [(c.step_id, c.outcome, c.route) for c in self.store.checkpoints(run_id)]

    def failed_attempts(self, run_id: str) -> list[tuple[str, float | None]]:
        """(kind, wait) of every `attempt_failed` event, in order."""
        return [
            (e.data["kind"], e.data["wait"])
            for e in self.store.events(run_id)
            if e.kind == "attempt_failed"
        ]

    def step_error_kinds(self, run_id: str, step: str = "call") -> list[str]:
        """The kind of every attempt the step's error carries (from its `step` event)."""
        [data] = [
            e.data for e in self.store.events(run_id) if e.kind == "step" and e.step_id == step
        ]
        return [a["kind"] for a in data["error"]["attempts"]]

    def effect_events(self, run_id: str) -> list[dict[str, Any]]:
        return [dict(e.data) for e in self.store.events(run_id) if e.kind == "effect"]


@pytest.fixture
def harness(http_server: ScriptedServer) -> Iterator[Harness]:
    store = SqlStore.memory()
    yield Harness(http_server, store, http_server.url)
    store.close()


def error_kinds(result: RunResult) -> list[str]:
    """The kind of every attempt the run's error carries."""
    return [a["kind"] for a in result.error["attempts"]]


# -- retried failures --------------------------------------------------------------------
def test_503_then_200_completes_after_one_wait(harness: Harness, tmp_path: Path) -> None:
    compiled = write_flow(
        tmp_path, {"api": http_tool(retry={"max_attempts": 3, "interval_seconds": 1.5})}
    )
    harness.server.script("/items", Reply(503, "busy"), Reply(200, {"id": "i-1"}))

    result = harness.start(compiled)

    assert len(harness.server.requests_to("/items")) == 2
    assert [r.json() for r in harness.server.requests] == [ITEM, ITEM]
    assert harness.clock.sleeps == [1.5]
    assert (result.status, result.position) == ("completed", "done")
    assert harness.route(result.run_id) == [("call", "ok", "done")]
    [checkpoint] = harness.store.checkpoints(result.run_id)
    assert (checkpoint.output, checkpoint.attempts) == ({"id": "i-1"}, 2)
    assert harness.failed_attempts(result.run_id) == [("http_5xx", 1.5)]


@pytest.mark.parametrize(
    ("status", "retry_after", "interval", "kind", "wait"),
    [
        pytest.param(429, "7", 1, "http_429", 7.0, id="429-above-backoff"),
        pytest.param(503, "7", 1, "http_5xx", 7.0, id="503-above-backoff"),
        pytest.param(429, "1", 5, "http_429", 5.0, id="429-below-backoff"),
    ],
)
def test_retry_after_seconds_is_honoured(
    harness: Harness,
    tmp_path: Path,
    status: int,
    retry_after: str,
    interval: float,
    kind: str,
    wait: float,
) -> None:
    compiled = write_flow(
        tmp_path, {"api": http_tool(retry={"max_attempts": 3, "interval_seconds": interval})}
    )
    harness.server.script(
        "/items",
        Reply(status, "slow down", {"Retry-After": retry_after}),
        Reply(200, {"id": "i-1"}),
    )

    result = harness.start(compiled)

    assert len(harness.server.requests_to("/items")) == 2
    assert harness.clock.sleeps == [wait]
    assert result.status == "completed"
    assert harness.route(result.run_id) == [("call", "ok", "done")]
    assert harness.failed_attempts(result.run_id) == [(kind, wait)]


def test_retry_after_http_date_is_honoured(harness: Harness, tmp_path: Path) -> None:
    compiled = write_flow(
        tmp_path, {"api": http_tool(retry={"max_attempts": 3, "interval_seconds": 1})}
    )
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    harness.server.script(
        "/items", Reply(429, "slow down", {"Retry-After": when}), Reply(200, {"id": "i-1"})
    )

    result = harness.start(compiled)

    assert len(harness.server.requests_to("/items")) == 2
    [wait] = harness.clock.sleeps
    assert 28.0 <= wait <= 30.0  # an HTTP date has whole seconds
    assert result.status == "completed"
    assert harness.route(result.run_id) == [("call", "ok", "done")]
    assert [k for k, _ in harness.failed_attempts(result.run_id)] == ["http_429"]


def test_backoff_grows_by_rate_up_to_the_cap(harness: Harness, tmp_path: Path) -> None:
    compiled = write_flow(
        tmp_path,
        {
            "api": http_tool(
                retry={
                    "max_attempts": 4,
                    "interval_seconds": 1,
                    "backoff_rate": 2,
                    "max_interval_seconds": 3,
                }
            )
        },
    )
    harness.server.script("/items", *[Reply(503, "busy")] * 3, Reply(200, {"id": "i-1"}))

    result = harness.start(compiled)

    assert len(harness.server.requests_to("/items")) == 4
    assert harness.clock.sleeps == [1.0, 2.0, 3.0]
    assert result.status == "completed"
    assert harness.route(result.run_id) == [("call", "ok", "done")]
    assert harness.failed_attempts(result.run_id) == [
        ("http_5xx", 1.0),
        ("http_5xx", 2.0),
        ("http_5xx", 3.0),
    ]


@pytest.mark.parametrize(
    ("replies", "deadline", "requests", "waits"),
    [
        # waits 2, 4 fit in 7 s; the next one (8) would end past the deadline
        pytest.param([Reply(503, "busy")] * 5, 7, 3, [2.0, 4.0], id="backoff"),
        # the server asks for a minute; the deadline is 10 s: stop now instead of waiting
        pytest.param(
            [Reply(503, "busy", {"Retry-After": "60"})] * 5,
            10,
            1,
            [],
            id="retry-after-past-deadline",
        ),
    ],
)
def test_deadline_stops_retrying_before_it_is_exceeded(
    harness: Harness,
    tmp_path: Path,
    replies: list[Reply],
    deadline: float,
    requests: int,
    waits: list[float],
) -> None:
    compiled = write_flow(
        tmp_path,
        {
            "api": http_tool(
                retry={
                    "max_attempts": 10,
                    "interval_seconds": 2,
                    "backoff_rate": 2,
                    "deadline_seconds": deadline,
                }
            )
        },
    )
    harness.server.script("/items", *replies)

    result = harness.start(compiled)

    assert len(harness.server.requests_to("/items")) == requests
    assert harness.clock.sleeps == waits
    assert sum(harness.clock.sleeps) <= deadline
    assert (result.status, result.position) == ("failed", "dead_letter")
    assert harness.route(result.run_id) == [("call", "error", "dead_letter")]
    assert error_kinds(result) == ["http_5xx"] * requests
    assert harness.failed_attempts(result.run_id) == [("http_5xx", w) for w in [*waits, None]]


def test_jittered_waits_stay_within_the_deadline(
    http_server: ScriptedServer, tmp_path: Path
) -> None:
    # Waits are jittered to 1-2 s, then 2-4 s: whether the second fits in 5 s depends on
    # the draw, and the wait that is checked against the deadline must be the one taken.
    compiled = write_flow(
        tmp_path,
        {
            "api": http_tool(
                retry={
                    "max_attempts": 10,
                    "interval_seconds": 2,
                    "backoff_rate": 2,
                    "jitter": True,
                    "deadline_seconds": 5,
                }
            )
        },
    )
    store = SqlStore.memory()
    over: dict[int, list[float]] = {}
    for seed in range(12):
        http_server.script("/items", *[Reply(503, "busy")] * 3)
        clock = FakeClock()
        engine = Engine(
            store, clock=clock, environ={"BASE": http_server.url}, rng=random.Random(seed)
        )
        result = engine.start(compiled, ITEM)
        assert result.status == "failed"
        assert all(1.0 <= w <= 4.0 for w in clock.sleeps), clock.sleeps
        if sum(clock.sleeps) > 5:
            over[seed] = clock.sleeps
    store.close()
    assert over == {}, "waits that end past deadline_seconds=5, by rng seed"


@pytest.mark.parametrize(
    ("retry_on", "requests"),
    [
        pytest.param(["timeout"], 3, id="retried"),
        pytest.param(["http_5xx"], 1, id="not-in-retry_on"),
    ],
)
def test_timeouts_are_retried_per_retry_on_then_dead_lettered(
    harness: Harness, tmp_path: Path, retry_on: list[str], requests: int
) -> None:
    compiled = write_flow(
        tmp_path,
        {
            "api": http_tool(
                timeout=TIMEOUT,
                retry={
                    "max_attempts": 3,
                    "interval_seconds": 1,
                    "backoff_rate": 2,
                    "retry_on": retry_on,
                },
            )
        },
    )
    harness.server.script("/items", *[Reply(200, {"id": "late"}, delay=SLOW)] * 3)

    result = harness.start(compiled)

    harness.server.wait_for_requests(requests, path="/items")
    assert len(harness.server.requests_to("/items")) == requests
    waits = [1.0, 2.0][: requests - 1]
    assert harness.clock.sleeps == waits
    assert (result.status, result.position) == ("failed", "dead_letter")
    assert harness.route(result.run_id) == [("call", "error", "dead_letter")]
    run = harness.store.run(result.run_id)
    assert run.failed_step == "call"
    assert [a["kind"] for a in run.error["attempts"]] == ["timeout"] * requests
    assert all(f"{TIMEOUT:g}s" in a["message"] for a in run.error["attempts"])
    assert harness.failed_attempts(result.run_id) == [("timeout", w) for w in [*waits, None]]


def test_connection_refused_is_retried_then_routed(
    harness: Harness, tmp_path: Path, refused_url: str
) -> None:
    harness.base = refused_url
    compiled = write_flow(
        tmp_path,
        {"api": http_tool(retry={"max_attempts": 3, "interval_seconds": 1, "backoff_rate": 2})},
        on_error="human_review",
    )

    result = harness.start(compiled)

    assert harness.server.requests == []
    assert harness.clock.sleeps == [1.0, 2.0]
    assert (result.status, result.position) == ("escalated", "human_review")
    assert harness.route(result.run_id) == [("call", "error", "human_review")]
    [checkpoint] = harness.store.checkpoints(result.run_id)
    assert checkpoint.attempts == 3
    assert "connection" in (result.reason or "")
    assert harness.step_error_kinds(result.run_id) == ["connection"] * 3
    assert harness.failed_attempts(result.run_id) == [
        ("connection", 1.0),
        ("connection", 2.0),
        ("connection", None),
    ]


def test_dropped_connection_is_retried(harness: Harness, tmp_path: Path) -> None:
    compiled = write_flow(
        tmp_path, {"api": http_tool(retry={"max_attempts": 3, "interval_seconds": 1})}
    )
    harness.server.script("/items", Reply(drop=True), Reply(200, {"id": "i-1"}))

    result = harness.start(compiled)

    assert len(harness.server.requests_to("/items")) == 2
    assert harness.clock.sleeps == [1.0]
    assert (result.status, result.position) == ("completed", "done")
    assert harness.route(result.run_id) == [("call", "ok", "done")]
    assert harness.failed_attempts(result.run_id) == [("connection", 1.0)]


# -- failures that are not retried (unless asked) ----------------------------------------
MALFORMED = Reply(200, b'{"id": "i-1", ', {"Content-Type": "application/json"})


@pytest.mark.parametrize(
    ("retry_on", "requests", "status", "waits"),
    [
        pytest.param(None, 1, "failed", [], id="default-retry_on"),
        pytest.param(["invalid_output", "http_5xx"], 2, "completed", [1.0], id="retried"),
    ],
)
def test_malformed_json_is_invalid_output(
    harness: Harness,
    tmp_path: Path,
    retry_on: list[str] | None,
    requests: int,
    status: str,
    waits: list[float],
) -> None:
    retry: dict[str, Any] = {"max_attempts": 3, "interval_seconds": 1}
    if retry_on is not None:
        retry["retry_on"] = retry_on
    compiled = write_flow(tmp_path, {"api": http_tool(retry=retry)})
    harness.server.script("/items", MALFORMED, Reply(200, {"id": "i-1"}))

    result = harness.start(compiled)

    assert len(harness.server.requests_to("/items")) == requests
    assert harness.clock.sleeps == waits
    assert result.status == status
    if status == "completed":
        assert harness.route(result.run_id) == [("call", "ok", "done")]
        assert harness.store.checkpoints(result.run_id)[0].output == {"id": "i-1"}
        assert harness.failed_attempts(result.run_id) == [("invalid_output", 1.0)]
    else:
        assert harness.route(result.run_id) == [("call", "error", "dead_letter")]
        assert error_kinds(result) == ["invalid_output"]
        assert "malformed JSON" in result.error["message"]
        assert harness.failed_attempts(result.run_id) == [("invalid_output", None)]


def test_output_breaking_the_schema_is_invalid_output_and_routed(
    harness: Harness, tmp_path: Path
) -> None:
    output = {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}
    compiled = write_flow(
        tmp_path,
        {"api": http_tool(output=output, retry={"max_attempts": 3, "interval_seconds": 1})},
        on_error="human_review",
    )
    harness.server.script("/items", Reply(200, {"id": 7}), Reply(200, {"id": "i-1"}))

    result = harness.start(compiled)

    assert len(harness.server.requests_to("/items")) == 1
    assert harness.clock.sleeps == []
    assert (result.status, result.position) == ("escalated", "human_review")
    assert harness.route(result.run_id) == [("call", "error", "human_review")]
    assert "output schema" in (result.reason or "")
    assert harness.failed_attempts(result.run_id) == [("invalid_output", None)]


@pytest.mark.parametrize("status", [400, 404])
def test_4xx_is_not_retried(harness: Harness, tmp_path: Path, status: int) -> None:
    compiled = write_flow(
        tmp_path, {"api": http_tool(retry={"max_attempts": 5, "interval_seconds": 1})}
    )
    harness.server.script("/items", Reply(status, "no such item"), Reply(200, {"id": "i-1"}))

    result = harness.start(compiled)

    assert len(harness.server.requests_to("/items")) == 1
    assert harness.clock.sleeps == []
    assert (result.status, result.position) == ("failed", "dead_letter")
    assert harness.route(result.run_id) == [("call", "error", "dead_letter")]
    assert error_kinds(result) == ["http_4xx"]
    assert f"HTTP {status}" in result.error["message"]
    assert harness.failed_attempts(result.run_id) == [("http_4xx", None)]


# -- routes to a step --------------------------------------------------------------------
FALLBACK_MODULE = "http_tools_fallback"
FALLBACK_CODE = """
def record(item):
    return {"fallback": True, "item": item}
"""


@pytest.mark.parametrize(
    ("replies", "requests", "kinds"),
    [
        pytest.param([Reply(404, "gone")], 1, ["http_4xx"], id="http_4xx"),
        pytest.param([Reply(503, "busy")] * 2, 2, ["http_5xx"] * 2, id="retries-exhausted"),
        pytest.param([Reply(200, {"unexpected": True})], 1, ["invalid_output"], id="output-schema"),
    ],
)
def test_on_error_routes_to_a_fallback_step(
    harness: Harness, tmp_path: Path, replies: list[Reply], requests: int, kinds: list[str]
) -> None:
    (tmp_path / f"{FALLBACK_MODULE}.py").write_text(FALLBACK_CODE, encoding="utf-8")
    tools = {
        "api": http_tool(
            retry={"max_attempts": 2, "interval_seconds": 1},
            output={"type": "object", "required": ["id"]},
        ),
        "record_fallback": {
            "python": f"{FALLBACK_MODULE}:record",
            "input": {"type": "object", "required": ["item"]},
        },
    }
    steps = [
        {**CALL, "on_error": "fallback", "next": "done"},
        {"id": "fallback", "tool": "record_fallback", "args": {"item": "{{ input.item }}"}},
    ]
    compiled = write_flow(tmp_path, tools, steps)
    harness.server.script("/items", *replies)

    result = harness.start(compiled)

    assert len(harness.server.requests_to("/items")) == requests
    assert harness.clock.sleeps == [1.0] * (requests - 1)
    assert (result.status, result.position) == ("completed", "done")
    assert harness.route(result.run_id) == [
        ("call", "error", "fallback"),
        ("fallback", "ok", "done"),
    ]
    fallback = harness.store.checkpoints(result.run_id)[1]
    assert fallback.output == {"fallback": True, "item": "42"}
    assert harness.step_error_kinds(result.run_id) == kinds
    assert [k for k, _ in harness.failed_attempts(result.run_id)] == kinds


# -- the effect ledger -------------------------------------------------------------------
def effect_tool(**extra: Any) -> dict[str, Any]:
    return http_tool("/orders", effect=True, idempotency_key="order-{{ args.item }}", **extra)


def test_effect_sends_its_key_and_runs_once_per_key(harness: Harness, tmp_path: Path) -> None:
    compiled = write_flow(tmp_path, {"api": effect_tool()})
    harness.server.script("/orders", Reply(201, {"order": "o-1"}), Reply(201, {"order": "o-2"}))

    first = harness.start(compiled)
    second = harness.engine().start(compiled, ITEM)  # a new engine: as another process

    [request] = harness.server.requests_to("/orders")
    assert request.header("Idempotency-Key") == "order-42"
    assert (first.status, second.status) == ("completed", "completed")
    assert harness.route(second.run_id) == [("call", "ok", "done")]
    assert harness.store.checkpoints(second.run_id)[0].output == {"order": "o-1"}
    ledger = harness.store.effect("order-42")
    assert ledger is not None
    assert (ledger.status, ledger.run_id, ledger.result) == ("done", first.run_id, {"order": "o-1"})
    assert harness.effect_events(first.run_id) == [{"key": "order-42", "status": "done"}]
    assert harness.effect_events(second.run_id) == [
        {"key": "order-42", "status": "reused", "first_run": first.run_id}
    ]


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        pytest.param(Reply(201, {"order": "o-1"}, delay=SLOW), "timeout", id="timeout"),
        pytest.param(Reply(drop=True), "connection", id="connection-dropped"),
    ],
)
def test_non_idempotent_effect_whose_outcome_is_unknown_is_held_in_doubt(
    harness: Harness, tmp_path: Path, reply: Reply, kind: str
) -> None:
    compiled = write_flow(
        tmp_path,
        {
            "api": effect_tool(
                timeout=TIMEOUT,
                retry={
                    "max_attempts": 3,
                    "interval_seconds": 1,
                    "retry_on": ["timeout", "connection", "http_5xx"],
                },
            )
        },
    )
    harness.server.script("/orders", *[reply] * 3)

    result = harness.start(compiled)

    [request] = harness.server.wait_for_requests(1, path="/orders")
    assert len(harness.server.requests_to("/orders")) == 1
    assert request.header("Idempotency-Key") == "order-42"
    assert harness.clock.sleeps == []
    assert (result.status, result.position) == ("escalated", "human_review")
    assert harness.route(result.run_id) == [("call", "in_doubt", "human_review")]
    assert "order-42" in (result.reason or "")
    assert "may have happened" in (result.reason or "")
    ledger = harness.store.effect("order-42")
    assert ledger is not None and ledger.status != "done"
    assert [e["status"] for e in harness.effect_events(result.run_id)] == ["in_doubt"]
    assert harness.failed_attempts(result.run_id) == [(kind, None)]


def test_idempotent_effect_that_times_out_is_retried_with_the_same_key(
    harness: Harness, tmp_path: Path
) -> None:
    compiled = write_flow(
        tmp_path,
        {
            "api": effect_tool(
                idempotent=True, timeout=TIMEOUT, retry={"max_attempts": 3, "interval_seconds": 1}
            )
        },
    )
    harness.server.script(
        "/orders", Reply(201, {"order": "late"}, delay=SLOW), Reply(201, {"order": "o-1"})
    )

    result = harness.start(compiled)

    requests = harness.server.wait_for_requests(2, path="/orders")
    assert len(requests) == 2
    assert [r.header("Idempotency-Key") for r in requests] == ["order-42", "order-42"]
    assert harness.clock.sleeps == [1.0]
    assert (result.status, result.position) == ("completed", "done")
    assert harness.route(result.run_id) == [("call", "ok", "done")]
    assert harness.store.checkpoints(result.run_id)[0].output == {"order": "o-1"}
    ledger = harness.store.effect("order-42")
    assert ledger is not None and (ledger.status, ledger.result) == ("done", {"order": "o-1"})
    assert harness.failed_attempts(result.run_id) == [("timeout", 1.0)]


def test_refused_connection_is_retried_even_for_a_non_idempotent_effect(
    harness: Harness, tmp_path: Path, refused_url: str
) -> None:
    # Nothing was sent, so nothing can have happened: safe to try again, not in doubt.
    harness.base = refused_url
    compiled = write_flow(
        tmp_path,
        {"api": effect_tool(retry={"max_attempts": 3, "interval_seconds": 1, "backoff_rate": 2})},
    )

    result = harness.start(compiled)

    assert harness.clock.sleeps == [1.0, 2.0]
    assert (result.status, result.position) == ("failed", "dead_letter")
    assert harness.route(result.run_id) == [("call", "error", "dead_letter")]
    assert error_kinds(result) == ["connection"] * 3
    ledger = harness.store.effect("order-42")
    assert ledger is not None and ledger.status == "failed"
    assert harness.failed_attempts(result.run_id) == [
        ("connection", 1.0),
        ("connection", 2.0),
        ("connection", None),
    ]


def test_unfollowed_redirect_is_not_an_effect_done(harness: Harness, tmp_path: Path) -> None:
    # A 307 means "send it there instead": the order was not placed here. Either the
    # redirect is followed, or the step fails; it must never count as done with no result.
    compiled = write_flow(tmp_path, {"api": effect_tool(retry={"max_attempts": 1})})
    harness.server.script("/orders", Reply(307, "", {"Location": "/orders/v2"}))
    harness.server.script("/orders/v2", Reply(201, {"order": "o-1"}))

    result = harness.start(compiled)

    ledger = harness.store.effect("order-42")
    assert ledger is not None
    if harness.server.requests_to("/orders/v2"):  # followed
        assert (result.status, ledger.status, ledger.result) == (
            "completed",
            "done",
            {"order": "o-1"},
        )
    else:  # not followed: an error, routed
        assert (result.status, result.position) == ("failed", "dead_letter"), (
            f"run {result.status} and ledger {ledger.status} with result {ledger.result!r} "
            "after a 307 that was not followed"
        )
        assert ledger.status != "done"


# -- input -------------------------------------------------------------------------------
def test_template_syntax_in_input_is_sent_literally(harness: Harness, tmp_path: Path) -> None:
    compiled = write_flow(tmp_path, {"api": http_tool()})
    harness.server.script("/items", Reply(200, {"id": "i-1"}))

    result = harness.start(compiled, {"item": "{{ 7*7 }}"})

    [request] = harness.server.requests_to("/items")
    assert b"{{ 7*7 }}" in request.body
    assert request.json() == {"item": "{{ 7*7 }}"}
    assert result.status == "completed"


@pytest.mark.parametrize(
    ("value", "limit", "message"),
    [
        pytest.param({"item": 42}, 1024 * 1024, "input schema", id="schema"),
        pytest.param({"item": "x", "extra": True}, 1024 * 1024, "input schema", id="extra-field"),
        pytest.param({"item": "x" * 200}, 100, "limit is 100", id="oversized"),
    ],
)
def test_refused_input_raises_before_any_request(
    harness: Harness, tmp_path: Path, value: Any, limit: int, message: str
) -> None:
    compiled = write_flow(tmp_path, {"api": http_tool()})
    harness.server.script("/items", Reply(200, {"id": "i-1"}))
    harness.max_input_bytes = limit

    with pytest.raises(InputError, match=message):
        harness.start(compiled, value)

    assert harness.server.requests == []
    assert harness.store.list_runs() == []


# -- secrets -----------------------------------------------------------------------------
TOKEN = "tok-9f3c2a7b51e4"


def echo_authorization(request: Any) -> dict[str, Any]:
    return {"id": "i-1", "authorization": request.header("Authorization")}


@pytest.mark.parametrize(
    ("replies", "status"),
    [
        pytest.param(
            [Reply(500, f"token Bearer {TOKEN} refused"), Reply(200, echo_authorization)],
            "completed",
            id="echoed",
        ),
        pytest.param(
            [Reply(500, f"token Bearer {TOKEN} refused")] * 2, "failed", id="in-every-error"
        ),
    ],
)
def test_secret_is_sent_but_never_stored_or_shown(
    http_server: ScriptedServer, tmp_path: Path, replies: list[Reply], status: str
) -> None:
    db = tmp_path / "runs.db"
    url = f"sqlite:///{db}"
    tool = http_tool(retry={"max_attempts": 2, "interval_seconds": 1})
    tool["http"]["headers"] = {"Authorization": "Bearer {{ secret.TOKEN }}"}
    compiled = write_flow(tmp_path, {"api": tool})
    http_server.script("/items", *replies)
    store = SqlStore(url)
    engine = Engine(
        store,
        clock=FakeClock(),
        rng=random.Random(0),
        environ={"BASE": http_server.url, "TOKEN": TOKEN},
    )

    result = engine.start(compiled, ITEM)

    requests = http_server.requests_to("/items")
    assert [r.header("Authorization") for r in requests] == [f"Bearer {TOKEN}"] * 2
    assert result.status == status
    assert TOKEN not in json.dumps([result.reason, result.error])
    raw = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("runs.db*")))
    assert result.run_id.encode() in raw  # the run is in these bytes ...
    assert TOKEN.encode() not in raw  # ... and the token is not
    store.close()
    for form in ("text", "json"):
        out = io.StringIO()
        assert cli.main(["show", result.run_id, "--db", url, "--format", form], out=out) == 0
        shown = out.getvalue()
        assert result.run_id in shown
        assert TOKEN not in shown


# -- the command line --------------------------------------------------------------------
def cli_run(flow: Path, input_file: Path, url: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(["run", str(flow), "--input", str(input_file), "--db", url], out=out)
    match = re.search(r"^run (\S+) (\w+)", out.getvalue(), re.MULTILINE)
    assert match, out.getvalue()
    return code, match.group(1)


def test_cli_run_exit_codes_and_listing(
    http_server: ScriptedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASE", http_server.url)
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    tool = {"api": http_tool(retry={"max_attempts": 1})}
    to_dead_letter = write_flow(tmp_path, tool, file="dead_letter.yaml")
    to_review = write_flow(tmp_path, tool, on_error="human_review", file="review.yaml")
    input_file = tmp_path / "input.json"
    input_file.write_text(json.dumps(ITEM), encoding="utf-8")
    http_server.script("/items", Reply(200, {"id": "i-1"}), Reply(404, "gone"), Reply(404, "gone"))
    flows = {
        "completed": Path(to_dead_letter.flow.document.file),
        "failed": Path(to_dead_letter.flow.document.file),
        "escalated": Path(to_review.flow.document.file),
    }

    codes, ids = {}, {}
    for status, flow in flows.items():
        codes[status], ids[status] = cli_run(flow, input_file, url)

    assert codes == {"completed": 0, "failed": 1, "escalated": 4}
    assert len(http_server.requests_to("/items")) == 3
    out = io.StringIO()
    assert cli.main(["runs", "--format", "json", "--db", url], out=out) == 0
    listed = {r["run"]: (r["status"], r["position"]) for r in json.loads(out.getvalue())}
    assert listed == {
        ids["completed"]: ("completed", "done"),
        ids["failed"]: ("failed", "dead_letter"),
        ids["escalated"]: ("escalated", "human_review"),
    }
    out = io.StringIO()
    assert cli.main(["runs", "--status", "failed", "--db", url], out=out) == 0
    table = out.getvalue()
    assert ids["failed"] in table
    assert ids["completed"] not in table and ids["escalated"] not in table
