"""`mcp` tools against real MCP servers: tests/mcp_server.py, started as a stdio
subprocess (in the flow's folder) and served over streamable HTTP from a thread here.

Runs go through the engine on an in-memory store with a FakeClock, so retry waits are
recorded, not slept; a timeout spends real time (0.5 s against a 60 s stall). Every test
closes the sessions it opened, so its stdio servers stop (on their stdin closing: no
process is signalled).
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import random
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mcp_server
import pytest
import uvicorn
import yaml

from runner.cli import main as cli
from runner.core.errors import ToolError
from runner.kinds.base import Call
from runner.kinds.tools import mcp
from runner.lang.compiler import CompiledFlow
from runner.lang.load import load_flow
from runner.runtime.engine import Engine, RunResult
from runner.store.sql import SqlStore
from runner.testing import FakeClock

COMMAND = [sys.executable, str(Path(mcp_server.__file__).resolve())]
TIMEOUT = 0.5  # a call's timeout in the timeout cases (real seconds)
STALL = 60  # how long the server stalls then: far past any bound asserted
SECRET = "s3cret-token-for-the-mcp-server"
ONCE = {"max_attempts": 1}


# -- servers and flows -------------------------------------------------------------------
class HttpServer:
    """tests/mcp_server.py over streamable HTTP, by uvicorn on a thread, on a socket
    bound (so connections are refused) until `start`."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/mcp"
        config = uvicorn.Config(
            mcp_server.http_app(), log_level="warning", timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.server.started, "the MCP test server did not start"

    def stop(self) -> None:
        mcp.close_sessions(10)  # before the server: no session waits on it
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(10)
        self.sock.close()


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    server = HttpServer()
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(autouse=True)
def _sessions_closed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test's sessions are closed after it, and its stdio servers stop on their own:
    the SDK waits for a server to exit after its stdin closes, then signals it (which
    tests/conftest.py allows only in `slow` tests), so the wait is made long."""
    monkeypatch.setattr("mcp.client.stdio.PROCESS_TERMINATION_TIMEOUT", 10.0)
    yield
    mcp.close_sessions(15)


def stdio(tool: str, **extra: Any) -> dict[str, Any]:
    return {"mcp": {"command": COMMAND, "tool": tool}, **extra}


def http(url: str, tool: str, **extra: Any) -> dict[str, Any]:
    return {"mcp": {"url": url, "tool": tool}, **extra}


def step(id_: str, tool: str, args: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": id_, "tool": tool, "args": args, **extra}


def write_flow(tmp_path: Path, tools: dict[str, Any], steps: list[dict[str, Any]]) -> CompiledFlow:
    return load_flow(write_document(tmp_path / "flow.yaml", tools, steps))


def write_document(path: Path, tools: dict[str, Any], steps: list[dict[str, Any]]) -> Path:
    document = {
        "version": 1,
        "name": "mcp_tools",
        "input": {"type": "object"},
        "tools": tools,
        "steps": steps,
        "on_error": "dead_letter",
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def engine(store: SqlStore, clock: FakeClock | None = None, secret: str = SECRET) -> Engine:
    environ = {"MCP_TOKEN": secret}
    return Engine(store, clock=clock or FakeClock(), environ=environ, rng=random.Random(0))


@pytest.fixture
def store() -> Iterator[SqlStore]:
    store = SqlStore.memory()
    yield store
    store.close()


def outputs(store: SqlStore, result: RunResult) -> dict[str, Any]:
    return {c.step_id: c.output for c in store.checkpoints(result.run_id)}


def route(store: SqlStore, result: RunResult) -> list[tuple[str, str, str]]:
    return [(c.step_id, c.outcome, c.route) for c in store.checkpoints(result.run_id)]


def attempt_kinds(result: RunResult) -> list[str]:
    return [a["kind"] for a in result.error["attempts"]]


# -- results -----------------------------------------------------------------------------
def test_stdio_results_and_env_with_a_secret(tmp_path: Path, store: SqlStore) -> None:
    def tool(name: str) -> dict[str, Any]:  # one server for all: the same command and env
        return {
            "mcp": {"command": COMMAND, "tool": name, "env": {"TOKEN": "{{ secret.MCP_TOKEN }}"}}
        }

    tools = {"order": tool("get_order"), "greet": tool("greet"), "totals": tool("totals")}
    tools["env"] = tool("read_env")
    steps = [
        step("order", "order", {"order_id": "A-1"}),
        step("greet", "greet", {"name": "Ada"}),
        step("totals", "totals", {"count": 3}),
        step("env", "env", {"name": "TOKEN"}),
    ]
    result = engine(store).start(write_flow(tmp_path, tools, steps), {})

    assert result.status == "completed", result.error
    assert outputs(store, result) == {
        "order": {"id": "A-1", "quantity": 1, "status": "shipped"},
        "greet": "hello Ada",
        "totals": {"count": 3, "items": []},
        "env": "[secret MCP_TOKEN]",  # the server had the secret; runner keeps it out
    }
    events = json.dumps([e.data for e in store.events(result.run_id)])
    assert SECRET not in events


def test_http_results_and_headers_with_a_secret(
    tmp_path: Path, store: SqlStore, http_url: str
) -> None:
    header = http(http_url, "read_header")
    header["mcp"]["headers"] = {"Authorization": "Bearer {{ secret.MCP_TOKEN }}"}
    tools = {"get_order": http(http_url, "get_order"), "header": header}
    steps = [
        step("order", "get_order", {"order_id": "B-2", "quantity": 2}),
        step("header", "header", {"name": "Authorization"}),
    ]
    result = engine(store).start(write_flow(tmp_path, tools, steps), {})

    assert result.status == "completed", result.error
    # The server saw the secret; what runner keeps has it taken out.
    assert outputs(store, result) == {
        "order": {"id": "B-2", "quantity": 2, "status": "shipped"},
        "header": "Bearer [secret MCP_TOKEN]",
    }


# -- errors ------------------------------------------------------------------------------
def test_is_error_takes_the_error_route_and_is_not_retried(tmp_path: Path, store: SqlStore) -> None:
    tools = {
        "refuse": stdio("refuse", retry={"max_attempts": 3}),
        "greet": stdio("greet"),
        "nothing": stdio("no_such_tool"),
    }
    steps = [
        step("call", "refuse", {"reason": "no stock"}, on_error="unknown"),
        step("unknown", "nothing", {}, on_error="fallback"),
        step("fallback", "greet", {"name": "fallback"}),
    ]
    compiled = write_flow(tmp_path, tools, steps)
    result = engine(store).start(compiled, {})

    assert result.status == "completed", result.error
    assert route(store, result) == [
        ("call", "error", "unknown"),
        ("unknown", "error", "fallback"),
        ("fallback", "ok", "done"),
    ]
    errors = {
        e.step_id: e.data["error"]
        for e in store.events(result.run_id)
        if e.kind == "step" and e.data.get("error")
    }
    assert [a["kind"] for a in errors["call"]["attempts"]] == ["exception"]
    assert "refused: no stock" in errors["call"]["message"]
    assert errors["unknown"]["kind"] == "error"
    assert "has no tool `no_such_tool`" in errors["unknown"]["message"]
    assert "get_order" in errors["unknown"]["message"]  # the tools it has


def test_a_header_http_cannot_carry_is_refused_without_its_value(
    tmp_path: Path, store: SqlStore, http_url: str
) -> None:
    tool = http(http_url, "read_header", retry=ONCE)
    tool["mcp"]["headers"] = {"Authorization": "Bearer {{ secret.MCP_TOKEN }}"}
    steps = [step("header", "header", {"name": "Authorization"})]
    compiled = write_flow(tmp_path, {"header": tool}, steps)
    result = engine(store, secret=SECRET + "\n").start(compiled, {})  # read from a file

    assert (result.status, result.position) == ("failed", "dead_letter")
    assert attempt_kinds(result) == ["invalid_input"]
    assert "header `Authorization` holds a line break" in result.error["message"]
    assert SECRET not in json.dumps(result.error)


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_a_stalled_call_times_out_in_time(
    tmp_path: Path, store: SqlStore, http_url: str, transport: str
) -> None:
    def tool(name: str, **extra: Any) -> dict[str, Any]:
        return stdio(name, **extra) if transport == "stdio" else http(http_url, name, **extra)

    tools = {"greet": tool("greet"), "stall": tool("stall", timeout_seconds=TIMEOUT, retry=ONCE)}
    steps = [  # the first call starts the server: the stall's timeout is all for its call
        step("warm", "greet", {"name": "x"}),
        step("stall", "stall", {"seconds": STALL}),
    ]
    compiled = write_flow(tmp_path, tools, steps)
    started = time.monotonic()
    result = engine(store).start(compiled, {})
    stalled = time.monotonic() - started

    assert stalled < 10  # the stall would take a minute
    assert (result.status, result.position) == ("failed", "dead_letter")
    assert attempt_kinds(result) == ["timeout"]
    assert f"within {TIMEOUT:g}s" in result.error["message"]


def test_arguments_are_checked_against_the_listed_schema_before_the_call(
    tmp_path: Path, store: SqlStore
) -> None:
    tools = {"append": stdio("append_line")}  # no `input`: the server's listing is the schema
    steps = [step("append", "append", {"file": "out.txt", "line": 5})]
    compiled = write_flow(tmp_path, tools, steps)
    result = engine(store).start(compiled, {})

    assert (result.status, result.position) == ("failed", "dead_letter")
    assert attempt_kinds(result) == ["invalid_input"]
    assert "line" in result.error["message"]
    assert "input schema the server lists" in result.error["message"]
    assert not (tmp_path / "out.txt").exists()  # never called


def test_connection_refused_is_retried_then_dead_lettered(
    tmp_path: Path, store: SqlStore, refused_url: str
) -> None:
    retry = {"max_attempts": 3, "interval_seconds": 1, "backoff_rate": 1, "jitter": False}
    tools = {"order": http(f"{refused_url}/mcp", "get_order", retry=retry)}
    compiled = write_flow(tmp_path, tools, [step("order", "order", {"order_id": "x"})])
    clock = FakeClock()
    result = engine(store, clock).start(compiled, {})

    assert (result.status, result.position) == ("failed", "dead_letter")
    assert attempt_kinds(result) == ["connection"] * 3
    assert clock.sleeps == [1.0, 1.0]
    assert "cannot connect to the MCP server" in result.error["message"]


class StartingClock(FakeClock):
    """A FakeClock that starts a server at the first retry wait."""

    def __init__(self, server: HttpServer) -> None:
        super().__init__()
        self.server = server

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if not self.server.thread.is_alive():
            self.server.start()


def test_a_server_that_is_down_then_up_is_reached_on_retry(tmp_path: Path, store: SqlStore) -> None:
    server = HttpServer()
    try:
        retry = {"max_attempts": 3, "interval_seconds": 1, "jitter": False}
        tools = {"order": http(server.url, "get_order", retry=retry)}
        compiled = write_flow(tmp_path, tools, [step("order", "order", {"order_id": "C-3"})])
        clock = StartingClock(server)
        result = engine(store, clock).start(compiled, {})
    finally:
        server.stop()

    assert result.status == "completed", result.error
    assert clock.sleeps == [1.0]
    assert outputs(store, result)["order"]["id"] == "C-3"
    [failed] = [e.data for e in store.events(result.run_id) if e.kind == "attempt_failed"]
    assert failed["kind"] == "connection"


@pytest.mark.parametrize(
    "command",
    [
        pytest.param([sys.executable, "-c", "import sys; sys.exit('broken')"], id="exits"),
        pytest.param(["./no-such-server"], id="missing"),
    ],
)
def test_a_server_that_cannot_start_is_a_connection_failure(
    tmp_path: Path, store: SqlStore, command: list[str]
) -> None:
    tools = {"order": {"mcp": {"command": command, "tool": "get_order"}, "retry": ONCE}}
    compiled = write_flow(tmp_path, tools, [step("order", "order", {"order_id": "x"})])
    result = engine(store).start(compiled, {})

    assert (result.status, result.position) == ("failed", "dead_letter")
    assert attempt_kinds(result) == ["connection"]
    assert "cannot connect to the MCP server" in result.error["message"]


def test_a_server_that_dies_mid_call_is_started_again_on_retry(
    tmp_path: Path, store: SqlStore
) -> None:
    retry = {"max_attempts": 2, "interval_seconds": 1, "jitter": False}
    tools = {"crash": stdio("exit_once", retry=retry)}
    compiled = write_flow(tmp_path, tools, [step("crash", "crash", {"marker": "crashed"})])
    clock = FakeClock()
    result = engine(store, clock).start(compiled, {})

    assert result.status == "completed", result.error
    assert outputs(store, result) == {"crash": "back"}
    [failed] = [e.data for e in store.events(result.run_id) if e.kind == "attempt_failed"]
    assert failed["kind"] == "connection"
    assert clock.sleeps == [1.0]


# -- the effect ledger -------------------------------------------------------------------
def test_an_effect_is_not_called_again_when_the_run_is_resumed(
    tmp_path: Path, store: SqlStore
) -> None:
    append = stdio("append_line", effect=True, idempotency_key="order-{{ args.line }}")
    tools = {"append": append, "refuse": stdio("refuse")}
    steps = [
        step("append", "append", {"file": "effects.txt", "line": "{{ input.id }}"}),
        step("fail", "refuse", {"reason": "after the effect"}),
    ]
    compiled = write_flow(tmp_path, tools, steps)
    first = engine(store).start(compiled, {"id": "A-1"})
    assert (first.status, store.run(first.run_id).failed_step) == ("failed", "fail")

    again = engine(store).resume(first.run_id, from_step="append")

    assert again.status == "failed"
    # The server ran in the flow's folder, got the key, and appended once.
    lines = (tmp_path / "effects.txt").read_text(encoding="utf-8").splitlines()
    assert lines == ["order-A-1 A-1"]
    statuses = [e.data["status"] for e in store.events(first.run_id) if e.kind == "effect"]
    assert statuses == ["done", "reused"]
    ledger = store.effect("order-A-1")
    assert ledger is not None and (ledger.status, ledger.result) == ("done", {"lines": 1})


# -- checks ------------------------------------------------------------------------------
def test_validate_starts_no_server_and_checks_the_templates(tmp_path: Path) -> None:
    starts = [sys.executable, "-c", "open('started', 'w')"]
    fine = {"mcp": {"command": starts, "env": {"T": "{{ secret.MCP_TOKEN }}"}}}
    flow = write_document(tmp_path / "fine.yaml", {"fine": fine}, [step("a", "fine", {})])
    out = io.StringIO()
    assert cli.main(["validate", str(flow)], out=out) == 0, out.getvalue()
    assert not (tmp_path / "started").exists()

    wrong = {"mcp": {"command": starts, "env": {"ID": "{{ args.id }}"}, "headers": {"X": "y"}}}
    flow = write_document(tmp_path / "wrong.yaml", {"wrong": wrong}, [step("a", "wrong", {})])
    out = io.StringIO()
    assert cli.main(["validate", str(flow)], out=out) == 1
    assert "unknown name `args`: templates here read env, secret" in out.getvalue()
    assert "`headers` are for a server at a `url`" in out.getvalue()


# -- threads -----------------------------------------------------------------------------
def test_calls_from_many_threads_share_a_session_and_survive_a_timeout(tmp_path: Path) -> None:
    tools = {"greet": stdio("greet"), "stall": stdio("stall")}
    compiled = write_flow(tmp_path, tools, [step("a", "greet", {"name": "x"})])
    ctx = {"env": {}, "secret": {}}

    def client(name: str) -> Any:
        tool = compiled.flow.tools[name]
        return mcp.KIND.connect(tool, flow_file=tmp_path / "flow.yaml"), mcp.KIND.request(tool, ctx)

    (greet, greet_request), (stall, stall_request) = client("greet"), client("stall")

    def hello(n: int) -> Any:
        return greet(Call({"name": str(n)}, 20, None, greet_request))

    def stalled() -> Any:
        return stall(Call({"seconds": STALL}, 1, None, stall_request))

    with concurrent.futures.ThreadPoolExecutor(max_workers=9) as pool:
        assert hello(0) == "hello 0"  # the server is up
        late = pool.submit(stalled)
        answers = list(pool.map(hello, range(1, 17)))
        with pytest.raises(ToolError) as caught:
            late.result()
        after = list(pool.map(hello, range(17, 25)))  # on a new session

    assert answers == [f"hello {n}" for n in range(1, 17)]
    assert after == [f"hello {n}" for n in range(17, 25)]
    assert (caught.value.kind, caught.value.maybe_sent) == ("timeout", True)
