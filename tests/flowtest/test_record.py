"""`runner record`: a real run written as a test case, which then passes `runner test`."""

from __future__ import annotations

import io
from pathlib import Path

import yaml

from runner.cli.main import main
from runner.core.errors import LLMError
from runner.flowtest.record import append_case, record_case
from runner.lang.load import load_flow
from runner.runtime.engine import Engine
from runner.store.sql import SqlStore
from runner.testing import FakeLLM

FLOW = """\
version: 1
name: recorded
models:
  default: {model: openai/any, retry: {max_attempts: 2, jitter: false, interval_seconds: 0}}
tools:
  lookup:
    python: "tools.rec:lookup"
    output: {type: object, required: [status]}
  notify:
    python: "tools.rec:notify"
    effect: true
steps:
  - id: answer
    llm:
      prompt: "Order {{ input.order }}: where is it? Key {{ secret.API_KEY }}"
      output: {type: object, required: [reply], properties: {reply: {type: string}}}
  - id: find
    tool: lookup
    args: {order: "{{ input.order }}"}
  - id: tell
    tool: notify
    args: {text: "{{ steps.answer.output.reply }} ({{ steps.find.output.status }})"}
on_error: dead_letter
"""

TOOLS = """\
def lookup(order):
    return {"status": "shipped", "order": order}


def notify(text):
    return {"sent": text}
"""


def _flow(tmp_path: Path) -> Path:
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "rec.py").write_text(TOOLS)
    path = tmp_path / "recorded.yaml"
    path.write_text(FLOW)
    return path


def test_a_recorded_run_becomes_a_passing_test_case(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    flow = _flow(tmp_path)
    secret = "sk-recorded-secret-1234"
    llm = FakeLLM({"answer": [LLMError("busy", "http_429"), {"reply": f"On its way {secret}"}]})
    store = SqlStore.memory()
    case = record_case(
        load_flow(flow),
        {"order": "A-7"},
        "an order on its way",
        llm,
        lambda **kw: Engine(store, environ={"API_KEY": secret}, **kw),
    )

    assert case["llm"] == {
        "answer": [{"error": "http_429"}, {"reply": "On its way [secret API_KEY]"}]
    }
    assert case["tools"] == {
        "lookup": [{"result": {"status": "shipped", "order": "A-7"}}],
        "notify": [{"result": {"sent": "On its way [secret API_KEY] (shipped)"}}],
    }
    assert case["expect"] == {"status": "completed", "steps": ["answer", "find", "tell"]}
    test_file = tmp_path / "recorded.test.yaml"
    append_case(test_file, case, {"API_KEY"})
    assert secret not in test_file.read_text()
    written = yaml.safe_load(test_file.read_text())
    assert written["env"] == {"API_KEY": "test-api_key"}
    assert written["cases"][0]["name"] == "an order on its way"

    out = io.StringIO()
    assert main(["test", str(test_file)], out=out) == 0, out.getvalue()
    assert "  PASS an order on its way" in out.getvalue().splitlines()


def test_a_recorded_failure_expects_where_it_stopped(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    flow = _flow(tmp_path)
    llm = FakeLLM({"answer": ["not json", "still not json", "no", "nope"]})
    case = record_case(
        load_flow(flow),
        {"order": "B-1"},
        "the model never answers in JSON",
        llm,
        lambda **kw: Engine(SqlStore.memory(), environ={"API_KEY": "key-for-tests"}, **kw),
    )
    assert case["expect"] == {"status": "failed", "steps": ["answer"], "stopped_at": "answer"}
    assert case["llm"]["answer"] == [
        {"text": "not json"},
        {"text": "still not json"},
        {"text": "no"},
    ]
    assert "tools" not in case
