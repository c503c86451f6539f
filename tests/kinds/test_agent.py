"""agent steps: a model calls the flow's tools in a loop, then answers.

In-process with FakeLLM: bad tool arguments go back to the model as an error result,
the final answer is checked against the output schema, max_turns bounds the loop, and a
tool that keeps failing fails the step. Then the kill test with real processes: `runner
run` is SIGKILLed between two tool calls of an agent whose model is a scripted
OpenAI-compatible server; `runner resume` replays the recorded turn and the finished
tool call instead of asking or calling again.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from scripted_server import Reply, ScriptedServer

from runner.lang.load import load_flow
from runner.runtime.engine import Engine, RunResult
from runner.runtime.models import LLMResponse, ToolCallRequest
from runner.store.records import Event
from runner.store.sql import SqlStore
from runner.testing import FakeClock, FakeLLM

OUTPUT = {
    "type": "object",
    "required": ["answer"],
    "additionalProperties": False,
    "properties": {"answer": {"type": "string"}},
}

FLOW = """\
version: 1
name: agentic
models:
  default: openai/gpt-4o-mini
tools:
  lookup:
    description: Look up an order's status.
    python: MODULE:lookup
    input:
      type: object
      required: [order_id]
      additionalProperties: false
      properties: {order_id: {type: string, pattern: "^A[0-9]+$"}}
    output: {type: object, required: [status]}
    EFFECT
    retry: {max_attempts: 3, interval_seconds: 1, backoff_rate: 2, jitter: false}
steps:
  - id: helper
    agent:
      prompt: "Where is order {{ input.order }}?"
      tools: [lookup]
      max_turns: MAX_TURNS
      output:
        type: object
        required: [answer]
        additionalProperties: false
        properties: {answer: {type: string}}
on_error: dead_letter
"""

TOOL = '''\
"""Agent-test tool: logs each call; order A13's warehouse is unreachable."""

LOG = LOG_PATH


def lookup(order_id):
    with open(LOG, "a", encoding="utf-8") as log:
        log.write(order_id + "\\n")
    if order_id == "A13":
        raise ConnectionError("warehouse unreachable")
    return {"status": "shipped", "order_id": order_id}
'''


class Agent:
    """One agent flow in tmp_path with its own tool module and call log."""

    def __init__(self, root: Path, *, max_turns: int = 4, effect: bool = False) -> None:
        module = f"agent_tools_{uuid.uuid4().hex[:10]}"  # never cached across tests
        self.log = root / "calls.log"
        (root / f"{module}.py").write_text(
            TOOL.replace("LOG_PATH", repr(str(self.log))), encoding="utf-8"
        )
        text = (
            FLOW.replace("MODULE", module)
            .replace("MAX_TURNS", str(max_turns))
            .replace("EFFECT", "effect: true" if effect else "")
        )
        (root / "agent.yaml").write_text(text, encoding="utf-8")
        self.compiled = load_flow(root / "agent.yaml")

    def calls(self) -> list[str]:
        return self.log.read_text(encoding="utf-8").split() if self.log.exists() else []


def turn(*calls: tuple[str, str, str]) -> LLMResponse:
    """A model turn that asks for tool calls: (call id, tool name, JSON arguments)."""
    return LLMResponse(
        text="",
        tool_calls=tuple(ToolCallRequest(*c) for c in calls),
        prompt_tokens=30,
        completion_tokens=8,
        cost_usd=0.0,
    )


def make_engine(llm: FakeLLM, clock: FakeClock | None = None) -> Engine:
    return Engine(SqlStore.memory(), llm=llm, clock=clock or FakeClock(), rng=random.Random(0))


def kinds(engine: Engine, result: RunResult, kind: str) -> list[Event]:
    return [e for e in engine.store.events(result.run_id) if e.kind == kind]


def tool_messages(messages: Any) -> list[tuple[str, Any]]:
    return [(m["tool_call_id"], json.loads(m["content"])) for m in messages if m["role"] == "tool"]


# -- in-process --------------------------------------------------------------------------
def test_bad_arguments_go_back_to_the_model_then_a_valid_call_then_the_answer(
    tmp_path: Path,
) -> None:
    agent = Agent(tmp_path)
    llm = FakeLLM(
        {
            "helper": [
                turn(("c1", "lookup", '{"order_id": 42}')),  # breaks the input schema
                turn(("c2", "lookup", '{"order_id": "A42"}')),
                {"reply": "It shipped."},  # breaks the output schema: repaired
                {"answer": "Order A42 has shipped."},
            ]
        }
    )
    engine = make_engine(llm)
    result = engine.start(agent.compiled, {"order": "A42"})

    assert result.status == "completed"
    assert engine.store.checkpoints(result.run_id)[-1].output == {
        "answer": "Order A42 has shipped."
    }
    assert agent.calls() == ["A42"]  # the bad call never reached the tool

    # the tool as the model sees it
    first = llm.requests[0]
    assert [dict(t) for t in first.tools] == [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Look up an order's status.",
                "parameters": agent.compiled.flow.tools["lookup"].input_schema,
            },
        }
    ]
    assert first.messages == [{"role": "user", "content": "Where is order A42?"}]

    # the schema problem went back to the model as the call's result
    problem = {
        "error": "the arguments do not match the tool's input schema: "
        "order_id: expected text, found a whole number 42"
    }
    assert tool_messages(llm.requests[1].messages) == [("c1", problem)]
    assert tool_messages(llm.requests[2].messages) == [
        ("c1", problem),
        ("c2", {"status": "shipped", "order_id": "A42"}),
    ]

    # the invalid final answer was sent back with its validation error
    assert len(llm.requests) == 4
    assert llm.requests[3].messages[-1] == {
        "role": "user",
        "content": "That answer is not valid: it does not match the JSON "
        "Schema: (the value): missing required key `answer`; (the value): Additional "
        "properties are not allowed ('reply' was unexpected). Reply again with only the "
        "corrected JSON.",
    }
    assert len(kinds(engine, result, "llm_invalid")) == 1

    assert [
        (e.data["turn"], e.data["assistant"]["tool_calls"][0]["id"])
        for e in kinds(engine, result, "agent_turn")
    ] == [(0, "c1"), (1, "c2")]
    assert [
        (e.data["turn"], e.data["call_id"], e.data["result"])
        for e in kinds(engine, result, "agent_call")
    ] == [(0, "c1", problem), (1, "c2", {"status": "shipped", "order_id": "A42"})]
    assert kinds(engine, result, "agent_replay") == []
    assert engine.store.run(result.run_id).llm_calls == 4


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (
            "{not json",
            "the arguments are not JSON: Expecting property name enclosed in double quotes",
        ),
        (
            '{"order": "A1"}',
            "the arguments do not match the tool's input schema: (the value): "
            "missing required key `order_id`; (the value): Additional "
            "properties are not allowed ('order' was unexpected)",
        ),
    ],
)
def test_unusable_arguments_are_reported_to_the_model(
    tmp_path: Path, arguments: str, error: str
) -> None:
    agent = Agent(tmp_path)
    llm = FakeLLM({"helper": [turn(("c1", "lookup", arguments)), {"answer": "unsure"}]})
    engine = make_engine(llm)
    result = engine.start(agent.compiled, {"order": "A1"})

    assert result.status == "completed"
    assert tool_messages(llm.requests[1].messages) == [("c1", {"error": error})]
    assert agent.calls() == []


def test_max_turns_exceeded_takes_the_error_route(tmp_path: Path) -> None:
    agent = Agent(tmp_path, max_turns=2)
    llm = FakeLLM(
        {
            "helper": [
                turn(("c1", "lookup", '{"order_id": "A1"}')),
                turn(("c2", "lookup", '{"order_id": "A2"}')),
            ]
        }
    )
    engine = make_engine(llm)
    result = engine.start(agent.compiled, {"order": "A1"})

    assert (result.status, result.position) == ("failed", "dead_letter")
    assert len(llm.requests) == 2  # no third turn was asked for
    assert agent.calls() == ["A1", "A2"]
    run = engine.store.run(result.run_id)
    assert run.failed_step == "helper"
    assert run.error["kind"] == "max_turns"
    assert run.error["message"] == "the agent gave no final answer within 2 turns"
    assert run.reason == "step helper failed: the agent gave no final answer within 2 turns"


@pytest.mark.parametrize("effect", [False, True], ids=["plain-tool", "effect-tool"])
def test_a_tool_that_fails_after_its_retries_fails_the_step(tmp_path: Path, effect: bool) -> None:
    agent = Agent(tmp_path, effect=effect)
    llm = FakeLLM({"helper": [turn(("c1", "lookup", '{"order_id": "A13"}'))]})
    clock = FakeClock()
    engine = make_engine(llm, clock)
    result = engine.start(agent.compiled, {"order": "A13"})

    assert (result.status, result.position) == ("failed", "dead_letter")
    assert len(llm.requests) == 1  # the model is not asked to carry on past the failure
    assert agent.calls() == ["A13", "A13", "A13"]
    assert clock.sleeps == [1.0, 2.0]
    message = "connection failed: warehouse unreachable"
    attempts = [
        (e.step_id, e.data["attempt"], e.data["kind"], e.data["message"])
        for e in kinds(engine, result, "attempt_failed")
    ]
    assert attempts == [("helper", n, "connection", message) for n in (1, 2, 3)]
    run = engine.store.run(result.run_id)
    assert run.failed_step == "helper"
    assert run.error["kind"] == "connection"
    assert [(a["number"], a["kind"]) for a in run.error["attempts"]] == [
        (1, "connection"),
        (2, "connection"),
        (3, "connection"),
    ]
    (step,) = [e for e in kinds(engine, result, "step")]
    assert (step.data["outcome"], step.data["route"]) == ("error", "dead_letter")


# -- the kill test: real processes -------------------------------------------------------
KILL_FLOW = """\
version: 1
name: killagent
models:
  default: {model: openai/scripted, api_base: "{{ env.SCRIPTED_BASE }}", timeout_seconds: 30,
            retry: 1}
tools:
  work:
    python: tools.killtool:work
    input: {type: object, required: [name], properties: {name: {enum: [A, B]}}}
    output: {type: object, required: [did]}
    timeout_seconds: 120
    retry: 1
steps:
  - id: agent
    agent:
      prompt: "Do A, then B, then report."
      tools: [work]
      max_turns: 5
      output: {type: object, required: [answer], properties: {answer: {type: string}}}
on_error: dead_letter
"""

KILL_TOOL = '''\
"""Kill-test tool: logs `<name> start` and `<name> done`; call B waits for a marker file
(the test creates it after the kill), so the kill lands between the two calls."""

import os
import time


def _log(line):
    fd = os.open(os.environ["AGENT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)


def work(name):
    _log(f"{name} start")
    if name == "B":
        deadline = time.monotonic() + 90
        while not os.path.exists(os.environ["AGENT_MARKER"]):
            if time.monotonic() > deadline:
                raise TimeoutError("the marker file never appeared")
            time.sleep(0.01)
    _log(f"{name} done")
    return {"did": name}
'''

FINAL = {"answer": "A and B are done."}
PROCESS_TIMEOUT = 120.0


def completion(number: int, message: dict[str, Any], finish: str) -> dict[str, Any]:
    """An OpenAI chat.completion response."""
    return {
        "id": f"chatcmpl-scripted-{number}",
        "object": "chat.completion",
        "created": 1_700_000_000 + number,
        "model": "scripted",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": 40 + number,
            "completion_tokens": 9,
            "total_tokens": 49 + number,
        },
    }


def tool_call(number: int, name: str) -> dict[str, Any]:
    return completion(
        number,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{name}",
                    "type": "function",
                    "function": {"name": "work", "arguments": json.dumps({"name": name})},
                }
            ],
        },
        "tool_calls",
    )


def wait_until(
    condition: Callable[[], bool],
    what: str,
    process: subprocess.Popen[str],
    timeout: float = PROCESS_TIMEOUT,
) -> None:
    """Poll `condition` until it holds; fail early if the process ended first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"runner exited {process.returncode} before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.mark.slow
def test_kill_between_tool_calls_then_resume_replays_the_recorded_turn(
    tmp_path: Path, http_server: ScriptedServer, processes: list[subprocess.Popen[str]]
) -> None:
    path = "/v1/chat/completions"
    http_server.script(
        path,
        Reply(body=tool_call(1, "A")),
        Reply(body=tool_call(2, "B")),
        Reply(body=completion(3, {"role": "assistant", "content": json.dumps(FINAL)}, "stop")),
    )
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "killtool.py").write_text(KILL_TOOL, encoding="utf-8")
    flow = tmp_path / "killagent.yaml"
    flow.write_text(KILL_FLOW, encoding="utf-8")
    (tmp_path / "input.json").write_text("{}", encoding="utf-8")
    log, marker = tmp_path / "tools.log", tmp_path / "release-B"
    db = "sqlite:///" + str(tmp_path / "runs.db")
    env = {
        **os.environ,
        "SCRIPTED_BASE": http_server.url + "/v1",
        "OPENAI_API_KEY": "dummy",
        "AGENT_LOG": str(log),
        "AGENT_MARKER": str(marker),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }

    def log_lines() -> list[str]:
        return log.read_text(encoding="utf-8").splitlines() if log.exists() else []

    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runner",
            "run",
            str(flow),
            "--input",
            str(tmp_path / "input.json"),
            "--db",
            db,
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    processes.append(run)
    wait_until(lambda: "B start" in log_lines(), "tool call B to start", run)

    # Call A finished and is recorded: the turn that asked for it, and its result.
    store = SqlStore(db)
    (record,) = store.list_runs()
    recorded = [
        (e.kind, e.data.get("turn"))
        for e in store.events(record.id)
        if e.kind in ("agent_turn", "agent_call")
    ]
    assert recorded == [("agent_turn", 0), ("agent_call", 0), ("agent_turn", 1)]
    assert len(http_server.requests_to(path)) == 2

    run.send_signal(signal.SIGKILL)
    run.wait(timeout=PROCESS_TIMEOUT)
    assert run.returncode == -signal.SIGKILL
    assert log_lines() == ["A start", "A done", "B start"]
    assert store.run(record.id).status == "running"

    marker.write_text("go", encoding="utf-8")  # B may finish when it runs again
    resume = subprocess.run(
        [sys.executable, "-m", "runner", "resume", record.id, "--db", db, "--format", "json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
    )
    assert resume.returncode == 0, resume.stdout + resume.stderr
    assert json.loads(resume.stdout)["status"] == "completed"

    # Tool A ran exactly once overall; B, in flight at the kill, ran again to finish.
    assert log_lines() == ["A start", "A done", "B start", "B start", "B done"]
    assert [line for line in log_lines() if line.startswith("A ")] == ["A start", "A done"]

    final = store.run(record.id)
    assert (final.status, final.position) == ("completed", "done")
    (checkpoint,) = store.checkpoints(record.id)
    assert (checkpoint.step_id, checkpoint.outcome, checkpoint.output) == ("agent", "ok", FINAL)

    # The recorded turns were replayed, not asked again: the server saw one request per
    # turn, and the resumed process asked only for the final answer.
    events = store.events(record.id)
    assert [e.data["turn"] for e in events if e.kind == "agent_replay"] == [0, 1]
    assert [e.data["turn"] for e in events if e.kind == "agent_turn"] == [0, 1]
    assert [(e.data["turn"], e.data["call_id"]) for e in events if e.kind == "agent_call"] == [
        (0, "call_A"),
        (1, "call_B"),
    ]
    requests = http_server.requests_to(path)
    assert len(requests) == 3
    last = requests[2].json()
    assert last["model"] == "scripted"
    assert requests[2].header("authorization") == "Bearer dummy"
    assert [m["role"] for m in last["messages"]] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
    ]
    assert [
        (m["tool_call_id"], json.loads(m["content"]))
        for m in last["messages"]
        if m["role"] == "tool"
    ] == [("call_A", {"did": "A"}), ("call_B", {"did": "B"})]
    assert [m["tool_calls"][0]["id"] for m in last["messages"] if m["role"] == "assistant"] == [
        "call_A",
        "call_B",
    ]
    store.close()
