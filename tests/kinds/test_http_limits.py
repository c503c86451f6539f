"""The limits of an http tool call, against real HTTP servers on 127.0.0.1:

- `timeout_seconds` is the deadline of the whole call: a server that trickles its
  headers or its body does not hold a step past it;
- a response to a non-idempotent effect that reached the server (a 5xx) is never sent
  again: the run is held in doubt; a 429 was not processed and is retried; the client
  and the request are ready before the ledger says `started`;
- a server asking (Retry-After) for a wait longer than `max_interval_seconds` is not
  waited for: the step takes its error route and says why;
- output is limited (`max_output_bytes`, default 4 MiB): a longer response is not read
  to its end and not stored.

Retry waits go through a FakeClock; only the deadline cases spend real time.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from scripted_server import Received, Reply, ScriptedServer

from runner.lang.compiler import CompiledFlow
from runner.lang.load import load_flow
from runner.runtime.engine import Engine, RunResult
from runner.store.records import Effect
from runner.store.sql import SqlStore
from runner.testing import FakeClock

ITEM = {"item": "42"}
MiB = 1024 * 1024


def http_tool(path: str, *, timeout: float = 5, **extra: Any) -> dict[str, Any]:
    return {
        "http": {
            "method": "POST",
            "url": "{{ env.BASE }}" + path,
            "json": {"item": "{{ args.item }}"},
        },
        "timeout_seconds": timeout,
        **extra,
    }


def write_flow(tmp_path: Path, tool: dict[str, Any], **extra: Any) -> CompiledFlow:
    document = {
        "version": 1,
        "name": "http_limits",
        **extra,
        "tools": {"api": tool},
        "steps": [{"id": "call", "tool": "api", "args": {"item": "{{ input.item }}"}}],
        "on_error": "dead_letter",
    }
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return load_flow(path)


class LedgerLog(SqlStore):
    """The store, noting in a shared log when the effect ledger says `started`."""

    log: list[str]

    def start_effect(
        self, key: str, run_id: str, step_id: str, tool: str, owner: str | None = None
    ) -> Effect | None:
        existing = super().start_effect(key, run_id, step_id, tool, owner)
        self.log.append("ledger started")
        return existing


@pytest.fixture
def store() -> Iterator[LedgerLog]:
    store = LedgerLog("sqlite://")
    store.log = []
    yield store
    store.close()


def start(store: SqlStore, compiled: CompiledFlow, base: str, clock: FakeClock) -> RunResult:
    engine = Engine(store, clock=clock, environ={"BASE": base}, rng=random.Random(0))
    return engine.start(compiled, ITEM)


# -- a server that takes its time -------------------------------------------------------
class TricklingServer:
    """A real HTTP server on 127.0.0.1 that sends its answer a few bytes at a time:
    `/slow-headers` its status line and headers, `/slow-body` its body, `/endless` a
    chunked body of 64 KiB chunks that goes on for 64 MiB. Counts requests."""

    GAP = 0.1  # seconds between two pieces

    def __init__(self) -> None:
        self.requests = 0
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests += 1
                try:
                    getattr(server, self.path.strip("/").replace("-", "_"))(self.wfile)
                except OSError:  # the client gave up: the point of these tests
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def pieces(self, out: Any, pieces: list[bytes]) -> None:
        for piece in pieces:
            if self.stopping.wait(self.GAP):
                return
            out.write(piece)
            out.flush()

    def slow_headers(self, out: Any) -> None:
        body = b'{"id": "i-1"}'
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        head += b"X-Slow: " + b"a" * 30 + b"\r\n"
        self.pieces(out, [head[i : i + 3] for i in range(0, len(head), 3)])
        out.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    def slow_body(self, out: Any) -> None:
        body = b'{"id": "' + b"x" * 40 + b'"}'
        out.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        out.write(b"Content-Length: %d\r\n\r\n" % len(body))
        self.pieces(out, [body[i : i + 2] for i in range(0, len(body), 2)])

    def endless(self, out: Any) -> None:
        out.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        out.write(b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b" " * (64 * 1024)
        for _ in range(1024):
            if self.stopping.is_set():
                return
            out.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        out.write(b"0\r\n\r\n")


@pytest.fixture
def trickling() -> Iterator[TricklingServer]:
    server = TricklingServer()
    server.thread.start()
    yield server
    server.stopping.set()
    server.httpd.shutdown()
    server.httpd.server_close()


# -- the deadline -----------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/slow-headers", "/slow-body"])
def test_timeout_is_the_deadline_of_the_whole_call(
    trickling: TricklingServer, store: LedgerLog, tmp_path: Path, path: str
) -> None:
    compiled = write_flow(tmp_path, http_tool(path, timeout=0.5, retry=1))

    began = time.monotonic()
    result = start(store, compiled, trickling.url, FakeClock())
    took = time.monotonic() - began

    assert took < 1.5, f"the call took {took:.1f} s with a 0.5 s timeout"
    assert (result.status, result.position) == ("failed", "dead_letter")
    assert [(a["kind"], a["message"]) for a in result.error["attempts"]] == [
        ("timeout", "timed out after 0.5s")
    ]
    assert trickling.requests == 1


def test_an_effect_past_its_deadline_after_it_was_sent_is_in_doubt(
    trickling: TricklingServer, store: LedgerLog, tmp_path: Path
) -> None:
    tool = http_tool("/slow-body", timeout=0.5, effect=True, retry={"max_attempts": 3})
    compiled = write_flow(tmp_path, tool)

    result = start(store, compiled, trickling.url, FakeClock())

    assert (result.status, result.position) == ("escalated", "human_review")
    assert "may have happened (timed out after 0.5s)" in (result.reason or "")
    assert trickling.requests == 1


# -- what reached the server -------------------------------------------------------------
def effect_tool(**extra: Any) -> dict[str, Any]:
    retry = {"max_attempts": 3, "interval_seconds": 1, "jitter": False}
    return http_tool(
        "/orders", effect=True, idempotency_key="order-{{ args.item }}", retry=retry, **extra
    )


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_5xx_to_a_non_idempotent_effect_is_never_sent_again(
    http_server: ScriptedServer, store: LedgerLog, tmp_path: Path, status: int
) -> None:
    compiled = write_flow(tmp_path, effect_tool())
    http_server.script("/orders", Reply(status, "oops"), Reply(201, {"order": "o-1"}))
    clock = FakeClock()

    result = start(store, compiled, http_server.url, clock)

    assert len(http_server.requests_to("/orders")) == 1
    assert clock.sleeps == []
    assert (result.status, result.position) == ("escalated", "human_review")
    assert result.reason == (
        f"effect order-42 may have happened (HTTP {status}: oops); check before approving"
    )
    ledger = store.effect("order-42")
    assert ledger is not None and ledger.status == "started"


def test_a_5xx_to_an_idempotent_effect_is_sent_again_with_its_key(
    http_server: ScriptedServer, store: LedgerLog, tmp_path: Path
) -> None:
    compiled = write_flow(tmp_path, effect_tool(idempotent=True))
    http_server.script("/orders", Reply(503, "busy"), Reply(201, {"order": "o-1"}))

    result = start(store, compiled, http_server.url, FakeClock())

    requests = http_server.requests_to("/orders")
    assert [r.header("Idempotency-Key") for r in requests] == ["order-42", "order-42"]
    assert result.status == "completed"


def test_a_429_was_not_processed_so_a_non_idempotent_effect_is_retried(
    http_server: ScriptedServer, store: LedgerLog, tmp_path: Path
) -> None:
    compiled = write_flow(tmp_path, effect_tool())
    http_server.script("/orders", Reply(429, "slow down"), Reply(201, {"order": "o-1"}))
    clock = FakeClock()

    result = start(store, compiled, http_server.url, clock)

    assert len(http_server.requests_to("/orders")) == 2
    assert clock.sleeps == [1.0]
    assert result.status == "completed"
    ledger = store.effect("order-42")
    assert ledger is not None and (ledger.status, ledger.result) == ("done", {"order": "o-1"})


def test_client_and_request_are_ready_before_the_ledger_says_started(
    http_server: ScriptedServer,
    store: LedgerLog,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What runs after `started` may be cut short by a crash, and the effect is then in
    # doubt: only sending may be left by then.
    made, built = httpx.Client.__init__, httpx.Client.build_request

    def making(client: httpx.Client, *args: Any, **kwargs: Any) -> None:
        store.log.append("client made")
        made(client, *args, **kwargs)

    def building(client: httpx.Client, *args: Any, **kwargs: Any) -> httpx.Request:
        store.log.append("request built")
        return built(client, *args, **kwargs)

    def received(request: Received) -> dict[str, str]:
        store.log.append("request received")
        return {"order": "o-1"}

    monkeypatch.setattr(httpx.Client, "__init__", making)
    monkeypatch.setattr(httpx.Client, "build_request", building)
    compiled = write_flow(tmp_path, effect_tool())
    http_server.script("/orders", Reply(201, received))

    result = start(store, compiled, http_server.url, FakeClock())

    assert result.status == "completed"
    assert store.log == ["client made", "request built", "ledger started", "request received"]


# -- Retry-After ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("retry", "flow", "asked", "cap"),
    [
        pytest.param({}, {}, "3600", "30", id="default-max_interval"),
        pytest.param({"max_interval_seconds": 5}, {}, "6", "5", id="max_interval"),
        pytest.param(
            {"max_interval_seconds": 600},
            {"max_retry_wait_seconds": 90},
            "120",
            "90",
            id="flow-ceiling",
        ),
    ],
)
def test_a_retry_after_longer_than_max_interval_is_not_waited_for(
    http_server: ScriptedServer,
    store: LedgerLog,
    tmp_path: Path,
    retry: dict[str, Any],
    flow: dict[str, Any],
    asked: str,
    cap: str,
) -> None:
    tool = http_tool("/items", retry={"max_attempts": 3, **retry})
    compiled = write_flow(tmp_path, tool, **flow)
    http_server.script(
        "/items", Reply(429, "slow down", {"Retry-After": asked}), Reply(200, {"id": "i-1"})
    )
    clock = FakeClock()

    result = start(store, compiled, http_server.url, clock)

    assert len(http_server.requests_to("/items")) == 1
    assert clock.sleeps == []
    assert (result.status, result.position) == ("failed", "dead_letter")
    why = f"the server asked to wait {asked} s, more than max_interval_seconds ({cap} s)"
    assert [(a["kind"], a["message"]) for a in result.error["attempts"]] == [
        ("http_429", f"HTTP 429: slow down; {why}")
    ]
    assert (
        result.reason
        == f"step call failed: failed after 1 attempt: #1 http_429: HTTP 429: slow down; {why}"
    )


def test_a_retry_after_within_max_interval_is_waited_for(
    http_server: ScriptedServer, store: LedgerLog, tmp_path: Path
) -> None:
    tool = http_tool("/items", retry={"max_attempts": 3, "max_interval_seconds": 5})
    compiled = write_flow(tmp_path, tool)
    http_server.script(
        "/items", Reply(429, "slow down", {"Retry-After": "5"}), Reply(200, {"id": "i-1"})
    )
    clock = FakeClock()

    result = start(store, compiled, http_server.url, clock)

    assert clock.sleeps == [5.0]
    assert result.status == "completed"


# -- output size -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "size", "limit"),
    [
        pytest.param({"max_output_bytes": 1000}, 5000, "1,000", id="max_output_bytes"),
        pytest.param({}, 5 * MiB, "4,194,304", id="default-4-MiB"),
    ],
)
def test_a_response_larger_than_max_output_bytes_is_an_error_not_stored(
    http_server: ScriptedServer,
    store: LedgerLog,
    tmp_path: Path,
    extra: dict[str, Any],
    size: int,
    limit: str,
) -> None:
    retry = {"max_attempts": 3, "retry_on": ["http_5xx"]}
    compiled = write_flow(tmp_path, http_tool("/items", retry=retry, **extra))
    http_server.script("/items", *[Reply(200, {"id": "x" * size})] * 2)

    result = start(store, compiled, http_server.url, FakeClock())

    assert len(http_server.requests_to("/items")) == 1
    assert (result.status, result.position) == ("failed", "dead_letter")
    assert [(a["kind"], a["message"]) for a in result.error["attempts"]] == [
        ("invalid_output", f"the response is larger than max_output_bytes ({limit} bytes)")
    ]
    assert store.checkpoints(result.run_id)[0].output is None


def test_a_response_without_a_length_stops_being_read_at_the_limit(
    trickling: TricklingServer, store: LedgerLog, tmp_path: Path
) -> None:
    compiled = write_flow(tmp_path, http_tool("/endless", timeout=30, retry=1))

    began = time.monotonic()
    result = start(store, compiled, trickling.url, FakeClock())

    assert time.monotonic() - began < 10
    assert result.status == "failed"
    assert result.error["attempts"][0]["message"] == (
        "the response is larger than max_output_bytes (4,194,304 bytes)"
    )


def test_an_effect_whose_response_is_too_large_is_in_doubt(
    http_server: ScriptedServer, store: LedgerLog, tmp_path: Path
) -> None:
    compiled = write_flow(tmp_path, effect_tool(max_output_bytes=100))
    http_server.script("/orders", Reply(201, {"order": "o" * 200}))

    result = start(store, compiled, http_server.url, FakeClock())

    assert len(http_server.requests_to("/orders")) == 1
    assert (result.status, result.position) == ("escalated", "human_review")
    assert "may have happened (the response is larger than max_output_bytes" in (
        result.reason or ""
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b'{"v": NaN}', "output.v: NaN is not a finite JSON number", id="nan"),
        pytest.param(
            b'{"v": "a\\u0000"}',
            "output.v: a NUL character (\\u0000) cannot be stored",
            id="nul",
        ),
    ],
)
def test_output_no_store_can_keep_is_invalid_output(
    http_server: ScriptedServer, store: LedgerLog, tmp_path: Path, body: bytes, message: str
) -> None:
    compiled = write_flow(tmp_path, http_tool("/items", retry=1))
    http_server.script("/items", Reply(200, body, {"Content-Type": "application/json"}))

    result = start(store, compiled, http_server.url, FakeClock())

    assert result.status == "failed"
    assert [(a["kind"], a["message"]) for a in result.error["attempts"]] == [
        ("invalid_output", f"output cannot be stored as it is: {message}")
    ]


def test_a_python_tool_s_output_is_limited_too(store: LedgerLog, tmp_path: Path) -> None:
    (tmp_path / "big_tools.py").write_text("def big(item):\n    return 'x' * 5000\n")
    compiled = write_flow(tmp_path, {"python": "big_tools:big", "max_output_bytes": 1000})

    result = start(store, compiled, "", FakeClock())

    assert result.status == "failed"
    assert [(a["kind"], a["message"]) for a in result.error["attempts"]] == [
        ("invalid_output", "the output is 5,002 bytes of JSON, more than max_output_bytes (1,000)")
    ]
