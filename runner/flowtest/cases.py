"""Offline flow tests: scripted model answers and tool results, asserted outcomes, and
the routes the cases exercised.

A test file (`support.test.yaml` beside `support.yaml`) is read and checked like a flow
(located problems, every one at once). Each case runs on an in-memory store with a
fake clock: no network, no real sleeping, the same result every time. People are
scripted too: a case's `reviews` decide its run's escalations (`runner.flowtest.reviews`),
and `runner.flowtest.expect` compares what came of the run with what the case expects.
"""

from __future__ import annotations

import difflib
import json
import math
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.core.errors import FlowError, InputError, LLMError, Problem, ToolError
from runner.flowtest.expect import compare, observed
from runner.flowtest.reviews import ScriptedReview, apply_reviews, parse_reviews, routes_taken
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
    reviews: tuple[ScriptedReview, ...] = ()


@dataclass(frozen=True)
class TestFile:
    """A checked test file and the compiled flow it tests."""

    path: str
    compiled: CompiledFlow
    env: Mapping[str, str]
    cases: tuple[Case, ...]


@dataclass
class CaseResult:
    """How a case went: its differences from what was expected (none when it passed),
    the routes it took, and the arguments of every call of each scripted tool."""

    file: str
    case: str
    differences: list[str] = field(default_factory=list)
    routes: set[tuple[str, str]] = field(default_factory=set)
    seconds: float = 0.0
    calls: dict[str, list[Mapping[str, Any]]] = field(default_factory=dict)

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
            parse_reviews(c.get("reviews", [])),
        )
        for i, c in enumerate(data["cases"])
    )
    problems = [p for case in cases for p in _reference_problems(document, compiled, case)]
    if problems:
        raise FlowError(problems)
    return TestFile(str(path), compiled, dict(data.get("env", {})), cases)


def _reference_problems(document: Document, compiled: CompiledFlow, case: Case) -> list[Problem]:
    """Step ids and tool names in a case that the flow does not have, and reviews that
    cannot mean anything."""
    steps = [s.id for s in compiled.flow.steps]
    tools = list(compiled.flow.tools)
    asking = [s.id for s in compiled.flow.steps if s.uses_models]
    named: list[tuple[tuple[str, ...], Mapping[str, Any], list[str], str]] = [
        (("llm",), case.llm, asking, "model step"),
        (("tools",), case.tools, tools, "tool"),
        (("fail",), case.fail, steps, "step"),
    ]
    for part in ("retries", "confidence"):
        named.append((("expect", part), case.expect.get(part, {}), steps, "step"))
    named.append((("expect", "effects"), case.expect.get("effects", {}), tools, "tool"))
    base = ("cases", case.index)
    problems = [
        document.problem((*base, *where, name), _no_such(noun, name, known), key=True)
        for where, mapping, known, noun in named
        for name in mapping
        if name not in known
    ]
    return problems + _review_problems(document, case, steps)


def _review_problems(document: Document, case: Case, steps: list[str]) -> list[Problem]:
    """A retry from a step the flow does not have; a reviewer named for an expiry."""
    problems = []
    for review in case.reviews:
        where = ("cases", case.index, "reviews", review.index)
        if review.step is not None and review.step not in steps:
            message = _no_such("step", review.step, steps)
            problems.append(document.problem((*where, "retry"), message))
        if review.action == "expire" and review.by is not None:
            message = "nobody decides an expiry (the deadline passes): remove `by`"
            problems.append(document.problem((*where, "by"), message, key=True))
    return problems


def _no_such(noun: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean `{close[0]}`?" if close else ""
    return f"the flow has no {noun} `{name}`{hint}"


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
    """Character tokens; with a score, the first character of every string, `true` and
    `false` value carries it, so each choice's probability comes out as `score`."""
    tokens = [(char, 0.0, ((char, 0.0),)) for char in text]
    if score is not None and score > 0:
        for found in re.finditer(r':\s*("(?=[^"])|(?=true|false))', text):
            at = found.end()
            tokens[at] = (text[at], math.log(score), ((text[at], math.log(score)),))
    return tuple(tokens)


class ScriptedTool:
    """A tool's results from a case's script; the last one repeats."""

    def __init__(self, results: Sequence[Mapping[str, Any]]) -> None:
        self.results = list(results)
        self.calls = 0
        self.happened = 0  # calls that did (or may have) reached the other side
        self.received: list[Mapping[str, Any]] = []  # each call's arguments, in order

    def __call__(self, call: Call) -> Any:
        self.received.append(dict(call.args))
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
    """Run one case offline, deciding its reviews as scripted, and compare what happened
    with what it expects."""
    started = time.perf_counter()
    outcome = CaseResult(test.path, case.name, _unscripted(test, case))
    if outcome.differences:
        return outcome
    store = open_store("sqlite://")
    try:
        _play(test, case, store, outcome)
    finally:
        store.close()
    outcome.seconds = time.perf_counter() - started
    return outcome


def _play(test: TestFile, case: Case, store: Store, outcome: CaseResult) -> None:
    """Run the case on `store` and write what differed, the routes and the calls."""
    from runner.review.desk import Desk
    from runner.runtime.engine import Engine

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
    try:
        result = engine.start(test.compiled, case.input)
    except InputError as exc:
        outcome.differences.append(f"the input was refused: {exc}")
        return
    result, refusals = apply_reviews(Desk(engine), result, case.reviews)
    flow = test.compiled.flow
    effects = {name: tool.happened for name, tool in tools.items() if flow.tools[name].effect}
    outcome.differences = refusals + compare(case.expect, observed(store, result.run_id, effects))
    outcome.differences += [
        f"the script ran out of model answers for step {s}" for s in dict.fromkeys(llm.exhausted)
    ]
    outcome.routes = routes_taken(store, result.run_id, flow)
    outcome.calls = {name: tool.received for name, tool in tools.items()}


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


def coverage(compiled: CompiledFlow, exercised: set[tuple[str, str]]) -> tuple[int, list[str]]:
    """(routes in all, the routes no case took, as `step -outcome-> route`)."""
    missing = [
        f"{e.source} -{e.trigger}-> {e.dest}"
        for e in compiled.edges
        if (e.source, e.trigger) not in exercised
    ]
    return len(compiled.edges), missing
