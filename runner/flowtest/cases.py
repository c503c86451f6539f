"""Offline flow tests: scripted model answers and tool results, asserted outcomes, and
the routes the cases exercised.

A test file (`support.test.yaml` beside `support.yaml`) is read and checked like a flow
(located problems, every one at once). Each case runs on an in-memory store with a
fake clock: no network, no real sleeping, the same result every time.
"""

from __future__ import annotations

import difflib
import json
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.core.errors import FlowError, InputError, LLMError, ToolError
from runner.core.vocabulary import Outcome
from runner.kinds.base import Call
from runner.kinds.registry import TOOL_KINDS
from runner.lang import schema
from runner.lang.compiler import CompiledFlow
from runner.lang.load import load_flow
from runner.lang.source import Document, load_file
from runner.runtime.models import LLMRequest, LLMResponse, ToolCallRequest
from runner.store import Store, open_store
from runner.testing import FakeClock

TEST_SCHEMA = "flowtest.v1.json"


@dataclass(frozen=True)
class Case:
    """One case of a test file."""

    name: str
    index: int
    input: Any
    llm: Mapping[str, Sequence[Any]]
    tools: Mapping[str, Sequence[Mapping[str, Any]]]
    expect: Mapping[str, Any]
    fail: Mapping[str, str]


@dataclass(frozen=True)
class TestFile:
    """A checked test file and the compiled flow it tests."""

    path: str
    compiled: CompiledFlow
    env: Mapping[str, str]
    cases: tuple[Case, ...]


@dataclass
class CaseResult:
    """How a case went: its differences from what was expected (none when it passed)."""

    file: str
    case: str
    differences: list[str] = field(default_factory=list)
    routes: set[tuple[str, str]] = field(default_factory=set)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.differences


def flow_path_for(test_path: Path, given: str | None) -> Path:
    if given:
        return test_path.parent / given
    return test_path.with_name(test_path.name.replace(".test.", "."))


def load_test_file(path: str | Path) -> TestFile:
    """Read, check and resolve a test file; FlowError lists every problem."""
    document = load_file(path)
    schema.check(document, TEST_SCHEMA)
    data = document.data
    flow_file = flow_path_for(Path(path), data.get("flow"))
    if not flow_file.is_file():
        raise FlowError(
            [document.problem(("flow",) if "flow" in data else (), f"no flow file {flow_file}")]
        )
    compiled = load_flow(flow_file)
    cases = tuple(
        Case(
            c["name"],
            i,
            c["input"],
            c.get("llm", {}),
            c.get("tools", {}),
            c["expect"],
            c.get("fail", {}),
        )
        for i, c in enumerate(data["cases"])
    )
    problems = _reference_problems(document, compiled, cases)
    if problems:
        raise FlowError(problems)
    return TestFile(str(path), compiled, dict(data.get("env", {})), cases)


def _reference_problems(
    document: Document, compiled: CompiledFlow, cases: Sequence[Case]
) -> list[Any]:
    """Step ids and tool names in the cases that the flow does not have."""
    steps = [s.id for s in compiled.flow.steps]
    tools = list(compiled.flow.tools)
    problems = []
    for case in cases:
        base = ("cases", case.index)
        asking = [s.id for s in compiled.flow.steps if s.uses_models]
        named: list[tuple[tuple[str, ...], Mapping[str, Any], list[str], str]] = [
            (("llm",), case.llm, asking, "model step"),
            (("tools",), case.tools, tools, "tool"),
            (("fail",), case.fail, steps, "step"),
        ]
        for part in ("retries", "confidence"):
            named.append((("expect", part), case.expect.get(part, {}), steps, "step"))
        named.append((("expect", "effects"), case.expect.get("effects", {}), tools, "tool"))
        for where, mapping, known, noun in named:
            for name in mapping:
                if name not in known:
                    close = difflib.get_close_matches(name, known, n=1)
                    hint = f"; did you mean `{close[0]}`?" if close else ""
                    problems.append(
                        document.problem(
                            (*base, *where, name),
                            f"the flow has no {noun} `{name}`{hint}",
                            key=True,
                        )
                    )
    return problems


class ScriptedLLM:
    """Model answers from a case's script, per step, in order."""

    def __init__(self, script: Mapping[str, Sequence[Any]]) -> None:
        self.script = {step: list(answers) for step, answers in script.items()}
        self.exhausted: list[str] = []

    def complete(self, request: LLMRequest) -> LLMResponse:
        queue = self.script.get(request.step_id)
        if not queue:
            self.exhausted.append(request.step_id)
            raise LLMError(
                f"the test has no more model answers for step {request.step_id}", "script"
            )
        return scripted_response(queue.pop(0), request.model)


def scripted_response(answer: Any, model: str) -> LLMResponse:
    """A scripted answer as the model would have given it."""
    if isinstance(answer, dict) and "error" in answer:
        raise LLMError(
            answer.get("message", f"scripted {answer['error']}"),
            answer["error"],
            answer.get("retry_after"),
        )
    if isinstance(answer, dict) and "tool_calls" in answer:
        calls = tuple(
            ToolCallRequest(f"call_{i}", c["name"], json.dumps(c.get("arguments", {})))
            for i, c in enumerate(answer["tool_calls"])
        )
        return LLMResponse(text="", tool_calls=calls, model=model)
    if isinstance(answer, dict) and "text" in answer:
        return LLMResponse(text=str(answer["text"]), model=model)
    score = None
    if isinstance(answer, dict) and "answer" in answer:
        score, answer = answer.get("logprob_score"), answer["answer"]
    text = json.dumps(answer)
    return LLMResponse(
        text=text,
        logprobs=_logprobs(text, score),
        model=model,
        prompt_tokens=10,
        completion_tokens=max(1, len(text) // 4),
    )


def _logprobs(text: str, score: float | None) -> tuple[Any, ...]:
    """Character tokens; with a score, the second character of every quoted value carries
    it, so the decisive value's probability comes out as `score`."""
    tokens = [(char, 0.0, ((char, 0.0),)) for char in text]
    if score is not None and score > 0:
        position = 0
        for piece in text.split('"')[1::2]:
            position = text.index(f'"{piece}"', position) + 1
            if len(piece) > 1:
                tokens[position + 1] = (piece[1], math.log(score), ((piece[1], math.log(score)),))
            position += len(piece) + 1
    return tuple(tokens)


class ScriptedTool:
    """A tool's results from a case's script; the last one repeats."""

    def __init__(self, results: Sequence[Mapping[str, Any]]) -> None:
        self.results = list(results)
        self.calls = 0
        self.happened = 0  # calls that did (or may have) reached the other side

    def __call__(self, call: Call) -> Any:
        result = self.results[min(self.calls, len(self.results) - 1)]
        self.calls += 1
        if "error" in result:
            kind = result["error"]
            sent = result.get("maybe_sent", kind == "timeout")
            self.happened += 1 if sent else 0
            raise ToolError(
                result.get("message", f"scripted {kind}"),
                kind,
                result.get("retry_after"),
                maybe_sent=sent,
            )
        self.happened += 1
        return result["result"]


def run_case(test: TestFile, case: Case) -> CaseResult:
    """Run one case offline and compare what happened with what it expects."""
    from runner.runtime.engine import Engine

    started = time.perf_counter()
    unscripted = _unscripted(test, case)
    if unscripted:
        return CaseResult(test.path, case.name, unscripted)
    store = open_store("sqlite://")
    llm = ScriptedLLM(case.llm)
    tools = {name: ScriptedTool(results) for name, results in case.tools.items()}
    engine = Engine(
        store,
        llm=llm,
        clock=FakeClock(),
        rng=random.Random(0),
        environ=test.env,
        tools=tools,
        faults=case.fail,
    )
    outcome = CaseResult(test.path, case.name)
    try:
        result = engine.start(test.compiled, case.input)
    except InputError as exc:
        outcome.differences.append(f"the input was refused: {exc}")
        return outcome
    actual = _actual(store, result.run_id, tools, test.compiled)
    outcome.routes = {(c.step_id, c.outcome) for c in store.checkpoints(result.run_id)}
    outcome.differences = compare(case.expect, actual)
    outcome.differences += [
        f"the script ran out of model answers for step {s}" for s in dict.fromkeys(llm.exhausted)
    ]
    outcome.seconds = time.perf_counter() - started
    store.close()
    return outcome


def _unscripted(test: TestFile, case: Case) -> list[str]:
    """A problem for each tool the case must script and does not: effects, and tools
    that call out."""
    tools = test.compiled.flow.tools
    return [
        f"tool {name} changes the world or calls out ({tool.kind}"
        f"{', effect' if tool.effect else ''}): script its results under "
        f"`tools: {{{name}: [...]}}`"
        for name, tool in tools.items()
        if name not in case.tools and (tool.effect or TOOL_KINDS[tool.kind].calls_out)
    ]


def _actual(
    store: Store, run_id: str, tools: Mapping[str, ScriptedTool], compiled: CompiledFlow
) -> dict[str, Any]:
    record = store.run(run_id)
    checkpoints = store.checkpoints(run_id)
    events = store.events(run_id)
    retries: dict[str, int] = {}
    confidence: dict[str, float] = {}
    for event in events:
        if event.kind == "attempt_failed" and event.data.get("wait") is not None:
            retries[event.step_id or ""] = retries.get(event.step_id or "", 0) + 1
        if event.kind == "confidence" and event.data.get("score") is not None:
            confidence[event.step_id or ""] = round(float(event.data["score"]), 3)
    effects = {
        name: tool.happened for name, tool in tools.items() if compiled.flow.tools[name].effect
    }
    outputs = {c.step_id: c.output for c in checkpoints if c.outcome != Outcome.ERROR}
    return {
        "status": record.status,
        "ending": record.position,
        "stopped_at": record.failed_step,
        "steps": [c.step_id for c in checkpoints],
        "retries": retries,
        "effects": effects,
        "outputs": outputs,
        "reason": record.reason or "",
        "confidence": confidence,
    }


def compare(expect: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """Each difference between what a case expects and what happened, readably."""
    found: list[str] = []
    for key in ("status", "ending", "stopped_at"):
        if key in expect and expect[key] != actual[key]:
            got = "nothing" if actual[key] is None else actual[key]
            found.append(
                f"{key}: expected {expect[key]}, got {got}"
                + (f" (reason: {actual['reason']})" if actual["reason"] else "")
            )
    if "steps" in expect and list(expect["steps"]) != actual["steps"]:
        diff = difflib.ndiff(list(expect["steps"]), actual["steps"])
        found.append(
            "steps (- expected, + actual):\n"
            + "\n".join("    " + line for line in diff if not line.startswith("?"))
        )
    if "reason" in expect and expect["reason"] not in actual["reason"]:
        found.append(
            f"reason: expected it to contain {expect['reason']!r}, got {actual['reason']!r}"
        )
    for key in ("retries", "effects"):
        for name, count in expect.get(key, {}).items():
            got = actual[key].get(name, 0)
            if got != count:
                found.append(f"{key}.{name}: expected {count}, got {got}")
    for name, score in expect.get("confidence", {}).items():
        got = actual["confidence"].get(name)
        if got is None or abs(got - score) > 0.0005:
            found.append(f"confidence.{name}: expected {score}, got {got}")
    for path, value in expect.get("outputs", {}).items():
        got = _dig(actual["outputs"], path)
        if got != value:
            found.append(
                f"outputs.{path}: expected {json.dumps(value)}, got {json.dumps(got, default=str)}"
            )
    return found


def _dig(outputs: Mapping[str, Any], path: str) -> Any:
    node: Any = outputs
    for part in path.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return None
    return node


def coverage(compiled: CompiledFlow, exercised: set[tuple[str, str]]) -> tuple[int, list[str]]:
    """(routes in all, the routes no case took, as `step -outcome-> route`)."""
    missing = [
        f"{e.source} -{e.trigger}-> {e.dest}"
        for e in compiled.edges
        if (e.source, e.trigger) not in exercised
    ]
    return len(compiled.edges), missing
