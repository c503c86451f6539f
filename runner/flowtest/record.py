"""`runner record`: run a flow once against its real models and tools and write what
they answered as a flow test case, to edit and keep. Secrets are scrubbed."""

from __future__ import annotations

import json
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import yaml

from runner.core.errors import StepError
from runner.kinds.base import Call, ToolCall
from runner.kinds.registry import TOOL_KINDS
from runner.lang.compiler import CompiledFlow
from runner.runtime.models import LLMClient, LLMRequest, LLMResponse


class RecordingLLM:
    """Passes calls to the real model client and keeps each answer, per step."""

    def __init__(self, client: LLMClient) -> None:
        self.client = client
        self.answers: dict[str, list[Any]] = {}

    def complete(self, request: LLMRequest) -> LLMResponse:
        try:
            response = self.client.complete(request)
        except StepError as exc:
            self.answers.setdefault(request.step_id, []).append({"error": exc.kind})
            raise
        self.answers.setdefault(request.step_id, []).append(_answer(response))
        return response


def _answer(response: LLMResponse) -> Any:
    if response.tool_calls:
        return {
            "tool_calls": [
                {"name": c.name, "arguments": json.loads(c.arguments or "{}")}
                for c in response.tool_calls
            ]
        }
    try:
        return json.loads(response.text)
    except json.JSONDecodeError:
        return {"text": response.text}


class RecordingTool:
    """Passes calls to the real tool and keeps each result or failure."""

    def __init__(self, inner: ToolCall) -> None:
        self.inner = inner
        self.results: list[dict[str, Any]] = []

    def __call__(self, call: Call) -> Any:
        try:
            value = self.inner(call)
        except StepError as exc:
            self.results.append({"error": exc.kind, "message": str(exc)})
            raise
        self.results.append({"result": value})
        return value


def record_case(
    compiled: CompiledFlow,
    input_value: Any,
    name: str,
    client: LLMClient,
    make_engine: Callable[..., Any],
) -> dict[str, Any]:
    """Run the flow once for real (its effects happen) and return it as a test case."""
    flow_file = Path(compiled.flow.document.file)
    tools = {
        t.name: RecordingTool(TOOL_KINDS[t.kind].connect(t, flow_file=flow_file))
        for t in compiled.flow.tools.values()
    }
    llm = RecordingLLM(client)
    engine = make_engine(tools=tools, llm=llm)
    result = engine.start(compiled, input_value)
    checkpoints = engine.store.checkpoints(result.run_id)
    expect: dict[str, Any] = {"status": result.status, "steps": [c.step_id for c in checkpoints]}
    if result.status != "completed":
        expect["stopped_at"] = engine.store.run(result.run_id).failed_step
    redact = engine.redactor(compiled)
    case = {
        "name": name,
        "input": input_value,
        "llm": llm.answers,
        "tools": {n: t.results for n, t in tools.items() if t.results},
        "expect": expect,
    }
    return dict(redact({k: v for k, v in case.items() if v != {}}))


def case_yaml(case: dict[str, Any]) -> str:
    """The case as a YAML list item, ready to go under `cases:`."""
    text = yaml.safe_dump([case], sort_keys=False, allow_unicode=True, width=100)
    return "\n".join("  " + line if line else line for line in text.splitlines()) + "\n"


def append_case(
    test_file: Path, case: dict[str, Any], env_names: AbstractSet[str] = frozenset()
) -> None:
    """Add the case at the end of a test file (whose last key is `cases:`), creating it
    with stand-in values for the environment variables the flow reads."""
    if not test_file.exists():
        flow_name = test_file.name.replace(".test.", ".")
        env = (
            yaml.safe_dump(
                {"env": {n: f"test-{n.lower()}" for n in sorted(env_names)}}, sort_keys=False
            )
            if env_names
            else ""
        )
        test_file.write_text(
            "# yaml-language-server: $schema=../schemas/flowtest.v1.json\n"
            f"# Offline tests of {flow_name}: run them with `runner test`.\n"
            f"version: 1\n{env}cases:\n",
            encoding="utf-8",
        )
    text = test_file.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        text += "\n"
    test_file.write_text(text + case_yaml(case), encoding="utf-8")
