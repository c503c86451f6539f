"""OpenTelemetry tracing (runner.runtime.tracing) against a real OTLP/HTTP receiver on
127.0.0.1: the span tree of a drive (run -> steps -> model calls and tool attempts), its
names, attributes and times, error status, a resumed run's drive, an agent's calls, no
secret in what is exported, nothing (and no OpenTelemetry import) without an endpoint,
one warning without the packages, and `python -m runner run` sending before it exits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from otlp_receiver import OtlpReceiver, Span
from scripted_server import Reply, ScriptedServer

from runner.core.errors import LLMError
from runner.core.events import AttemptFailed, ModelCalled, StepFinished, now
from runner.lang.load import load_flow
from runner.runtime import tracing
from runner.runtime.alerts import Alerts
from runner.runtime.engine import Engine, RunResult
from runner.runtime.models import LLMRequest, LLMResponse, ToolCallRequest
from runner.store.sql import SqlStore
from runner.testing import FakeLLM

TOKEN = "tok-9f3c2a7b51e4"
CLIENT, INTERNAL, ERROR = 3, 1, 2  # OTLP's SpanKind and StatusCode numbers
LATENCY = 0.03  # seconds each model answer takes

FLOW = """\
version: 1
name: traced
models:
  default:
    model: openai/gpt-4o-mini
    retry: {max_attempts: 2, interval_seconds: 0.02, jitter: false}
tools:
  api:
    http:
      method: POST
      url: "{{ env.BASE }}/items"
      headers: {Authorization: "Bearer {{ secret.TOKEN }}"}
      json: {category: "{{ args.category }}"}
    timeout_seconds: 5
    retry: {max_attempts: 2, interval_seconds: 0.02, jitter: false}
  check:
    python: traced_tools:check
steps:
  - id: classify
    llm:
      prompt: "Classify: {{ input.text }}"
      output:
        type: object
        required: [category, confidence]
        properties: {category: {type: string}, confidence: {type: number}}
    confidence: {score: "{{ output.confidence }}", min: 0.5}
  - id: send
    tool: api
    args: {category: "{{ steps.classify.output.category }}"}
  - id: verify
    tool: check
    args: {token: "{{ secret.TOKEN }}"}
on_error: dead_letter
"""
TOOLS = """\
def check(token):
    raise ValueError("the upstream refused token " + token)


def pack(value):
    return {"value": value}
"""


class TimedLLM(FakeLLM):
    """FakeLLM whose answers take LATENCY seconds, and say so (`latency_ms`)."""

    def complete(self, request: LLMRequest) -> LLMResponse:
        started = time.perf_counter()
        time.sleep(LATENCY)
        response = super().complete(request)
        return replace(response, latency_ms=(time.perf_counter() - started) * 1000)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def traced(receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> OtlpReceiver:
    """Tracing on, to the receiver, with nothing else of the environment's OTEL_*."""
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme")
    return receiver


def write(tmp_path: Path, flow: str = FLOW) -> Path:
    (tmp_path / "traced_tools.py").write_text(TOOLS, encoding="utf-8")
    path = tmp_path / "flow.yaml"
    path.write_text(textwrap.dedent(flow), encoding="utf-8")
    return path


def children(spans: list[Span], parent: Span) -> list[Span]:
    """The spans under `parent`, in time order."""
    return sorted((s for s in spans if s.parent_id == parent.span_id), key=lambda s: s.start)


def root(spans: list[Span], drive: str = "start") -> Span:
    (found,) = [s for s in spans if not s.parent_id and s.attributes["runner.run.drive"] == drive]
    return found


def ns(at: datetime) -> int:
    """A stored time as OTLP has it: nanoseconds since the epoch."""
    return (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def run_traced(tmp_path: Path, http_server: ScriptedServer) -> tuple[Engine, RunResult]:
    """The flow: a model call retried after a 429, an http call retried after a 503
    that echoes the secret, then a python tool that fails with the secret."""
    http_server.script(
        "/items", Reply(503, f"overloaded (got {TOKEN})"), Reply(200, {"accepted": True})
    )
    llm = TimedLLM(
        {
            "classify": [
                LLMError("rate limited", "http_429"),
                {"category": "billing", "confidence": 0.9},
            ]
        }
    )
    environ = {"TOKEN": TOKEN, "BASE": http_server.url}
    engine = Engine(SqlStore.memory(), llm=llm, environ=environ)
    return engine, engine.start(load_flow(write(tmp_path)), {"text": "charged twice"})


# -- one drive, end to end ---------------------------------------------------------------
def test_a_run_is_a_tree_of_spans_with_the_names_and_attributes_of_its_events(
    tmp_path: Path, traced: OtlpReceiver, http_server: ScriptedServer
) -> None:
    engine, result = run_traced(tmp_path, http_server)
    assert result.status == "failed"
    spans = traced.wait_for(9)
    assert len(spans) == 9
    run = root(spans)
    assert {s.trace_id for s in spans} == {run.trace_id}
    assert run.name == "run traced"
    compiled = engine.flow(engine.store.run(result.run_id).flow_digest)
    assert run.attributes["runner.run.id"] == result.run_id
    assert run.attributes["runner.flow.name"] == "traced"
    assert run.attributes["runner.flow.digest"] == compiled.flow.digest
    assert run.attributes["runner.run.status"] == "failed"
    assert (run.status, run.message) == (ERROR, result.reason)
    assert run.resource["service.name"] == "runner"
    assert traced.exports[0].headers["x-tenant"] == "acme"

    steps = children(spans, run)
    assert [s.name for s in steps] == ["step classify", "step send", "step verify"]
    expected = [("ok", "send", 1), ("ok", "verify", 2), ("error", "dead_letter", 1)]
    for step, (outcome, route, attempts) in zip(steps, expected, strict=True):
        assert step.attributes["runner.step.id"] == step.name.removeprefix("step ")
        assert step.attributes["runner.step.outcome"] == outcome
        assert step.attributes["runner.route"] == route
        assert step.attributes["runner.attempts"] == attempts
    assert [s.status for s in steps] == [0, 0, ERROR]
    assert "ValueError: the upstream refused token [secret TOKEN]" in steps[2].message


def test_model_calls_follow_the_genai_conventions(
    tmp_path: Path, traced: OtlpReceiver, http_server: ScriptedServer
) -> None:
    engine, result = run_traced(tmp_path, http_server)
    spans = traced.wait_for(9)
    classify = children(spans, root(spans))[0]
    failed, answered = children(spans, classify)
    (called,) = [e for e in engine.store.events(result.run_id) if isinstance(e, ModelCalled)]
    for span in (failed, answered):
        assert span.name == "chat gpt-4o-mini"
        assert span.kind == CLIENT
        assert span.attributes["gen_ai.operation.name"] == "chat"
        assert span.attributes["gen_ai.request.model"] == "gpt-4o-mini"
        assert span.attributes["gen_ai.provider.name"] == "openai"
        assert span.attributes["gen_ai.system"] == "openai"
    assert (failed.status, failed.message) == (ERROR, "http_429: rate limited")
    assert failed.attributes["error.type"] == "http_429"
    assert answered.status == 0
    assert answered.attributes["gen_ai.usage.input_tokens"] == called.prompt_tokens
    assert answered.attributes["gen_ai.usage.output_tokens"] == called.completion_tokens
    assert answered.attributes["runner.cost_usd"] == 0.0
    assert answered.attributes["runner.attempts"] == 2
    # the answer's own time: it ends when the event was written and lasts its latency
    assert answered.end == ns(called.at)
    assert answered.end - answered.start == pytest.approx(called.latency_ms * 1e6, abs=1000)
    assert answered.end - answered.start >= LATENCY * 1e9
    (gate,) = classify.events
    assert gate[0] == "confidence"
    assert gate[2]["runner.confidence.passed"] is True
    assert gate[2]["runner.confidence.score"] == 0.9
    assert classify.attributes["runner.confidence.passed"] is True


def test_tool_attempts_come_from_the_step_and_its_failed_attempts(
    tmp_path: Path, traced: OtlpReceiver, http_server: ScriptedServer
) -> None:
    _, _ = run_traced(tmp_path, http_server)
    spans = traced.wait_for(9)
    _, send, verify = children(spans, root(spans))
    refused, accepted = children(spans, send)
    for span in (refused, accepted):
        assert span.name == "execute_tool api"
        assert span.kind == INTERNAL
        assert span.attributes["gen_ai.tool.name"] == "api"
    assert refused.status == ERROR
    assert refused.attributes["error.type"] == "http_5xx"
    assert refused.message.startswith("http_5xx: HTTP 503: overloaded (got [secret TOKEN]")
    assert accepted.status == 0
    assert accepted.end == send.end  # the step's last attempt ends with it
    assert accepted.start >= refused.end + 20_000_000  # after the retry's wait (ns)
    (failed,) = children(spans, verify)
    assert failed.name == "execute_tool check"
    assert failed.status == ERROR


def test_children_lie_within_their_parents_and_steps_follow_each_other(
    tmp_path: Path, traced: OtlpReceiver, http_server: ScriptedServer
) -> None:
    engine, result = run_traced(tmp_path, http_server)
    spans = traced.wait_for(9)
    by_id = {s.span_id: s for s in spans}
    for span in spans:
        assert span.start <= span.end
        if span.parent_id:
            parent = by_id[span.parent_id]
            assert parent.start <= span.start <= span.end <= parent.end, span.name
    steps = children(spans, root(spans))
    for before, after in pairwise(steps):
        assert before.end <= after.start
    finished = [e for e in engine.store.events(result.run_id) if isinstance(e, StepFinished)]
    for step, event in zip(steps, finished, strict=True):
        assert step.end == ns(event.at)
        assert step.end - step.start == pytest.approx(event.ms * 1e6, abs=1000)


def test_no_secret_reaches_an_exported_span(
    tmp_path: Path, traced: OtlpReceiver, http_server: ScriptedServer
) -> None:
    run_traced(tmp_path, http_server)
    traced.wait_for(9)
    sent = [r.header("authorization") for r in http_server.requests_to("/items")]
    assert sent == [f"Bearer {TOKEN}"] * 2  # the secret was used, in a header
    raw = traced.raw()
    assert b"[secret TOKEN]" in raw  # where it was, redacted
    for piece in (TOKEN, TOKEN[4:12], json.dumps(TOKEN)):
        assert piece.encode() not in raw
    for export in traced.exports:
        assert all(TOKEN[4:12] not in v for v in export.headers.values())


# -- other drives ------------------------------------------------------------------------
TWO_STEPS = """\
version: 1
name: two
tools:
  pack:
    python: traced_tools:pack
steps:
  - id: first
    tool: pack
    args: {value: "{{ input.n }}"}
  - id: second
    tool: pack
    args: {value: "{{ steps.first.output.value }}"}
on_error: dead_letter
"""


def test_a_resumed_run_is_traced_from_its_resume_on(tmp_path: Path, traced: OtlpReceiver) -> None:
    store = SqlStore.memory()
    compiled = load_flow(write(tmp_path, TWO_STEPS))
    failed = Engine(store, faults={"second": "the disk is full"}).start(compiled, {"n": 1})
    assert failed.status == "failed"
    assert Engine(store).resume(failed.run_id).status == "completed"
    spans = traced.wait_for(6)
    started, resumed = root(spans, "start"), root(spans, "resume")
    assert started.trace_id != resumed.trace_id
    assert resumed.attributes["runner.run.id"] == started.attributes["runner.run.id"]
    assert [s.name for s in children(spans, started)] == ["step first", "step second"]
    assert children(spans, started)[1].message.endswith("the disk is full")
    (second,) = children(spans, resumed)
    assert (second.name, second.status) == ("step second", 0)
    assert resumed.attributes["runner.run.status"] == "completed"
    assert started.end <= resumed.start


def test_runs_on_several_threads_each_get_their_whole_trace(
    tmp_path: Path, traced: OtlpReceiver
) -> None:
    engine = Engine(SqlStore.memory())
    compiled = load_flow(write(tmp_path, TWO_STEPS))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda n: engine.start(compiled, {"n": n}), range(8)))
    spans = traced.wait_for(3 * 8)
    runs = [s for s in spans if not s.parent_id]
    assert sorted(r.attributes["runner.run.id"] for r in runs) == sorted(r.run_id for r in results)
    assert len({r.trace_id for r in runs}) == 8
    for run in runs:
        steps = children(spans, run)
        assert [s.name for s in steps] == ["step first", "step second"]
        assert {s.trace_id for s in steps} == {run.trace_id}


AGENT = """\
version: 1
name: agentic
models:
  default: anthropic/claude-haiku-4-5
tools:
  pack:
    python: traced_tools:pack
steps:
  - id: helper
    agent:
      prompt: "Pack {{ input.n }}."
      tools: [pack]
      output: {type: object, required: [answer], properties: {answer: {type: string}}}
on_error: dead_letter
"""


def test_an_agents_model_and_tool_calls_are_in_the_order_they_were_made(
    tmp_path: Path, traced: OtlpReceiver
) -> None:
    call = LLMResponse(text="", tool_calls=(ToolCallRequest("c1", "pack", '{"value": 7}'),))
    llm = TimedLLM({"helper": [call, {"answer": "packed"}]})
    engine = Engine(SqlStore.memory(), llm=llm)
    result = engine.start(load_flow(write(tmp_path, AGENT)), {"n": 7})
    assert result.status == "completed"
    spans = traced.wait_for(5)
    (step,) = children(spans, root(spans))
    calls = children(spans, step)
    assert [s.name for s in calls] == [
        "chat claude-haiku-4-5",
        "execute_tool pack",
        "chat claude-haiku-4-5",
    ]
    assert calls[0].attributes["gen_ai.provider.name"] == "anthropic"
    assert calls[0].end <= calls[1].start <= calls[1].end <= calls[2].start


def test_failed_attempts_share_the_time_their_waits_leave() -> None:
    start = now()
    second = timedelta(seconds=1)
    lane = tracing.Lane(start, start + second, None)
    for number in (1, 2):
        failed = AttemptFailed(
            at=start + 0.9 * second, attempt=number, error_kind="http_429", message="", wait=0.3
        )
        lane.add(failed)
    lane.add(
        ModelCalled(
            at=start + 0.9 * second,
            model="openai/gpt-4o-mini",
            attempts=3,
            repair=0,
            prompt_tokens=1,
            completion_tokens=1,
            cost_usd=None,
            latency_ms=100,
        )
    )
    times = [((s.start - start) / second, (s.end - start) / second) for s in lane.spans]
    assert times == [(0, 0.1), (0.4, 0.5), (0.8, 0.9)]


def test_a_collector_that_is_down_holds_up_one_run_not_every_run(
    tmp_path: Path, traced: OtlpReceiver, refused_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", refused_url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    monkeypatch.setattr(tracing, "_exporters", {})  # this test's alone, shut down below
    engine = Engine(SqlStore.memory())
    compiled = load_flow(write(tmp_path, TWO_STEPS))
    took = []
    for n in range(3):
        started = time.perf_counter()
        assert engine.start(compiled, {"n": n}).status == "completed"
        took.append(time.perf_counter() - started)
    assert took[0] < 3  # one export, given up after OTEL_EXPORTER_OTLP_TIMEOUT
    assert max(took[1:]) < 0.5  # then no run waits for the collector
    (exporter,) = tracing._exporters.values()
    assert exporter is not None
    exporter.provider.shutdown()  # now, not at exit: its complaints go to this test's log


# -- off ---------------------------------------------------------------------------------
def test_without_an_endpoint_nothing_is_traced(
    tmp_path: Path, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    engine = Engine(SqlStore.memory())
    assert [type(h) for h in engine.hooks] == [Alerts]
    assert engine.start(load_flow(write(tmp_path, TWO_STEPS)), {"n": 1}).status == "completed"
    assert receiver.exports == []


def test_without_an_endpoint_opentelemetry_is_not_even_imported(tmp_path: Path) -> None:
    write(tmp_path, TWO_STEPS)
    script = (
        "import sys; from runner.runtime.engine import Engine; "
        "from runner.lang.load import load_flow; from runner.store.sql import SqlStore; "
        "print(Engine(SqlStore.memory()).start(load_flow('flow.yaml'), {'n': 1}).status); "
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.stdout.split("\n")[:2] == ["completed", "[]"], done.stderr


def test_an_endpoint_without_the_packages_is_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/v1/traces")
    monkeypatch.setattr(tracing, "_exporters", {})
    monkeypatch.setattr(tracing, "_warned", set())
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    compiled = load_flow(write(tmp_path, TWO_STEPS))
    for _ in range(2):
        engine = Engine(SqlStore.memory())
        assert [type(h) for h in engine.hooks] == [Alerts]
        assert engine.start(compiled, {"n": 1}).status == "completed"
    assert capsys.readouterr().err == (
        "runner: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set but OpenTelemetry is not "
        "installed (pip install 'runner-flows[otel]'); runs are not traced\n"
    )


# -- the command line --------------------------------------------------------------------
def test_runner_run_has_sent_its_spans_when_it_exits(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    flow = write(tmp_path, TWO_STEPS)
    (tmp_path / "input.json").write_text('{"n": 3}', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env |= {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_SERVICE_NAME": "orders",
        "OTEL_BSP_SCHEDULE_DELAY": "600000",  # the processor's own timer never fires
    }
    command = [sys.executable, "-m", "runner", "run", str(flow), "--input", "input.json"]
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    done = subprocess.run(
        [*command, "--db", db], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    assert receiver.exports  # no waiting: the process is gone
    assert [e.headers.get("content-encoding") for e in receiver.exports] == ["gzip"]
    run = root(receiver.spans)
    assert run.resource["service.name"] == "orders"
    assert run.attributes["runner.run.status"] == "completed"
    assert [s.name for s in children(receiver.spans, run)] == ["step first", "step second"]
