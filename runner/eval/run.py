"""Running an evaluation: every case through the flow, for real where it only asks, never
where it acts.

Model steps call their models (answers cached by content, `runner.eval.cache`). Tools
that change the world or call out are scripted by the case or dry-run: they are not
called and give null. Runs live in a store in memory, thrown away at the end, so the
review queue and the dead-letter queue never see them, and no alert is sent. Cases run
concurrently; each becomes a `CaseResult` of the steps it expects something of.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from runner.core.errors import InputError
from runner.core.events import ConfidenceScored, Event, ModelCalled, StepFinished, last_visit
from runner.core.llm import Embedder, LLMClient
from runner.eval.cache import AnswerCache, CachingLLM
from runner.eval.cases import EvalCase
from runner.eval.results import CaseResult, EvalResult, GateScore, StepGrade
from runner.kinds.base import Call
from runner.kinds.confidence.scores import value_at
from runner.kinds.registry import TOOL_KINDS
from runner.lang.compiler import CompiledFlow
from runner.lang.routes import edges
from runner.runtime.engine import Engine
from runner.store import open_store

Progress = Callable[[CaseResult], None]


class Evaluation:
    """One flow on one data file: the model client, the answer cache and the store."""

    def __init__(
        self,
        llm: LLMClient,
        *,
        cache: AnswerCache | None,
        embedder: Embedder | None = None,
        concurrency: int = 4,
    ) -> None:
        self.llm = llm
        self.cache = cache
        self.embedder = embedder
        self.concurrency = max(1, concurrency)

    def run(
        self,
        compiled: CompiledFlow,
        cases: list[EvalCase],
        *,
        data: str,
        revision: str | None = None,
        progress: Progress | None = None,
    ) -> EvalResult:
        started = time.perf_counter()
        store = open_store("sqlite://")
        llm = CachingLLM(self.llm, self.cache)
        tools = StandIns(compiled)
        skipped = not_needed(compiled, {step for case in cases for step in case.expect})
        engine = Engine(
            store,
            llm=llm,
            embedder=None if self.embedder is None else KeepingEmbedder(self.embedder),
            hooks=[],  # no alert for a case's run
            tools=tools.calls(),
            faults=dict.fromkeys(skipped, NOT_NEEDED),
        )

        def one(case: EvalCase) -> CaseResult:
            llm.begin()
            tools.begin(case)
            return self._case(engine, compiled, case, llm, skipped)

        try:
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="runner-eval") as pool:
                results = []
                for result in pool.map(one, cases):
                    results.append(result)
                    if progress:
                        progress(result)
        finally:
            store.close()
        return _result(compiled, results, data, revision, time.perf_counter() - started)

    def _case(
        self,
        engine: Engine,
        compiled: CompiledFlow,
        case: EvalCase,
        llm: CachingLLM,
        skipped: set[str],
    ) -> CaseResult:
        try:
            result = engine.start(compiled, case.input)
        except InputError as exc:
            grades = tuple(StepGrade(s, e, {}, False) for s, e in case.expect.items())
            return CaseResult(case.index, case.id, "refused", grades, error=str(exc))
        store = engine.store
        events = store.events(result.run_id)
        stopped = any(isinstance(e, StepFinished) and e.step_id in skipped for e in events)
        outputs = {c.step_id: c.output for c in store.checkpoints(result.run_id)}
        calls = [e for e in events if isinstance(e, ModelCalled)]
        costs = [c.cost_usd for c in calls]
        made, cached = llm.counts()
        return CaseResult(
            index=case.index,
            id=case.id,
            ending="graded" if stopped else result.position,
            grades=tuple(
                _grade(step, expected, outputs, events) for step, expected in case.expect.items()
            ),
            model_calls=made,
            cached_calls=cached,
            cost_usd=None if None in costs else sum(c or 0.0 for c in costs),
            latency_ms=sum(c.latency_ms for c in calls),
            error=None if stopped or result.status != "failed" else result.reason,
        )


class KeepingEmbedder:
    """An evaluation keeps every embedding, the cases' inputs too: evaluating again
    then asks no embedding model either."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner

    def embed(
        self,
        model: str,
        texts: Sequence[str],
        *,
        api_base: str | None = None,
        timeout_seconds: float | None = None,
        keep: bool = True,
    ) -> list[list[float]]:
        return self.inner.embed(model, texts, api_base=api_base, timeout_seconds=timeout_seconds)


def _result(
    compiled: CompiledFlow,
    cases: list[CaseResult],
    data: str,
    revision: str | None,
    seconds: float,
) -> EvalResult:
    flow = compiled.flow
    return EvalResult(
        flow=flow.name,
        path=flow.document.file,
        revision=revision,
        data=data,
        cases=tuple(cases),
        gates={s.id: tuple(g.name for g in getattr(s, "gates", ())) for s in flow.steps},
        seconds=seconds,
    )


NOT_NEEDED = "not run: no graded step comes after it"


def not_needed(compiled: CompiledFlow, graded: set[str]) -> set[str]:
    """The steps from which no route leads to a graded step: a case's run stops there
    (their model calls would cost and tell nothing)."""
    leads_to: dict[str, set[str]] = {}
    for edge in edges(compiled.flow):
        leads_to.setdefault(edge.dest, set()).add(edge.source)
    needed, todo = set(graded), list(graded)
    while todo:
        for source in leads_to.get(todo.pop(), ()):
            if source not in needed:
                needed.add(source)
                todo.append(source)
    return {s.id for s in compiled.flow.steps} - needed


class StandIns:
    """What runs in place of each tool that acts or calls out, for the case on this
    thread: its scripted results (the last repeats), else a dry run that gives null."""

    def __init__(self, compiled: CompiledFlow) -> None:
        self.names = [
            name
            for name, tool in compiled.flow.tools.items()
            if tool.effect or TOOL_KINDS[tool.kind].calls_out
        ]
        self._case = threading.local()

    def begin(self, case: EvalCase) -> None:
        self._case.results = {name: list(case.tools.get(name, ())) for name in self.names}
        self._case.calls = dict.fromkeys(self.names, 0)

    def calls(self) -> dict[str, Callable[[Call], Any]]:
        return {name: self._caller(name) for name in self.names}

    def _caller(self, name: str) -> Callable[[Call], Any]:
        def call(_: Call) -> Any:
            results, made = self._case.results[name], self._case.calls[name]
            self._case.calls[name] = made + 1
            if not results:
                return None  # a dry run
            return results[min(made, len(results) - 1)].get("result")

        return call


def _grade(
    step: str, expected: Mapping[str, Any], outputs: Mapping[str, Any], events: list[Event]
) -> StepGrade:
    """The step's answer (its last) against what was expected, with its gates' scores
    from its last visit."""
    if step not in outputs:
        return StepGrade(step, expected, {}, False)
    got = {}
    for path, _ in expected.items():
        present, value = value_at(outputs[step], path)
        if present:
            got[path] = value
    return StepGrade(step, expected, got, True, _last_gates(step, events))


def _last_gates(step: str, events: list[Event]) -> tuple[GateScore, ...]:
    visit = last_visit(events, step)
    if not any(isinstance(e, StepFinished) for e in visit):
        return ()  # the step has not finished a visit
    return tuple(
        GateScore(e.gate or e.method, e.method, e.score, e.min, e.passed)
        for e in visit
        if isinstance(e, ConfidenceScored)
    )
