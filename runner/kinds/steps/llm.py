"""`llm` steps: ask a model for an answer that fits a schema; optionally gate it on a
confidence score (each method a module of `runner.kinds.confidence`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runner.core.errors import StepError
from runner.core.events import ConfidenceScored
from runner.core.vocabulary import Ending, Outcome
from runner.kinds.base import (
    Checks,
    ModelSession,
    Scored,
    StepResult,
    StepRun,
    model_failure,
)
from runner.kinds.confidence.methods import METHODS
from runner.kinds.steps.prompts import check_prompts, messages_for
from runner.lang.model import DEFAULT_REPAIRS, ConfidenceGate, ModelStep, Step
from runner.lang.source import Path_


@dataclass(frozen=True, kw_only=True)
class LlmStep(ModelStep):
    """Ask a model; optionally gate its answer on confidence scores (all must pass)."""

    gates: tuple[ConfidenceGate, ...]
    on_low_confidence: str

    kind = "llm"

    def routes(self) -> dict[str, str]:
        routes = super().routes()
        if self.gates:
            routes[Outcome.LOW_CONFIDENCE] = self.on_low_confidence
        return routes


def build_gates(raw: Any, path: Path_) -> tuple[ConfidenceGate, ...]:
    """A step's gates: `confidence` is one gate or a list of them."""
    if raw is None:
        return ()
    many = isinstance(raw, list)
    listed = raw if many else [raw]
    methods = [g.get("method", "field") for g in listed]
    gates = []
    for i, (gate, method) in enumerate(zip(listed, methods, strict=True)):
        name = method if methods.count(method) == 1 else f"{method}#{methods[:i].count(method) + 1}"
        fields = gate.get("fields")
        gates.append(
            ConfidenceGate(
                method=method,
                min=gate["min"],
                name=name,
                path=(*path, "confidence", i) if many else (*path, "confidence"),
                score=gate.get("score"),
                samples=gate.get("samples", 5),
                temperature=gate.get("temperature", 1.0),
                judge=gate.get("judge"),
                fields=None if fields is None else tuple(fields),
                examples=gate.get("examples"),
                text=gate.get("text"),
                embedding=gate.get("model", "local/minilm"),
                neighbours=gate.get("neighbours", 5),
            )
        )
    return tuple(gates)


class Llm:
    """The `llm` step kind."""

    name = "llm"
    example: Mapping[str, Any] = {"llm": {"prompt": "Classify: {{ input.text }}"}}

    def build(self, raw: Mapping[str, Any], common: dict[str, Any]) -> Step:
        llm = raw["llm"]
        return LlmStep(
            **common,
            model=llm.get("model"),
            system=llm.get("system"),
            prompt=llm["prompt"],
            output_schema=llm.get("output"),
            repairs=llm.get("repairs", DEFAULT_REPAIRS),
            gates=build_gates(raw.get("confidence"), common["path"]),
            on_low_confidence=raw.get("on_low_confidence", Ending.HUMAN_REVIEW.value),
        )

    def check(self, checks: Checks, step: Step) -> None:
        assert isinstance(step, LlmStep)
        check_prompts(checks, step, (*step.path, "llm"))
        for gate in step.gates:
            METHODS[gate.method].check(checks, step, gate)

    def run(self, step: Step, visit: StepRun) -> StepResult:
        assert isinstance(step, LlmStep)
        session = visit.session()
        try:
            return self._answer(step, visit.context(), session)
        except StepError as exc:
            return model_failure(step, exc, session)

    def _answer(self, step: LlmStep, ctx: dict[str, Any], session: ModelSession) -> StepResult:
        messages = messages_for(step.system, step.prompt, ctx)
        answer = session.ask(
            messages,
            step.output_schema,
            model=step.model,
            repairs=step.repairs,
            logprobs=any(METHODS[g.method].logprobs for g in step.gates),
        )
        failed = []
        for gate in step.gates:
            scored = METHODS[gate.method].score(session, step, messages, answer, gate, ctx)
            passed = scored.score is not None and scored.score >= gate.min
            session.events.append(_scored(step, gate, scored, passed))
            if not passed:
                failed.append(_shortfall(gate, scored))
        if not failed:
            return StepResult(Outcome.OK, answer.value, 1, session.events)
        return StepResult(
            Outcome.LOW_CONFIDENCE, answer.value, 1, session.events, reason="; ".join(failed)
        )


def _scored(step: LlmStep, gate: ConfidenceGate, scored: Scored, passed: bool) -> ConfidenceScored:
    return ConfidenceScored(
        step_id=step.id,
        method=gate.method,
        score=scored.score,
        min=gate.min,
        passed=passed,
        gate=gate.name if gate.name != gate.method else None,
        fields=list(scored.fields) or None,
        detail=dict(scored.detail) or None,
    )


def _shortfall(gate: ConfidenceGate, scored: Scored) -> str:
    """Why a gate failed, for the reviewer: `confidence 0.412 below 0.7 (logprobs of
    category)`."""
    shown = "no valid score" if scored.score is None else f"confidence {scored.score:.3f}"
    of = f" of {', '.join(scored.fields)}" if scored.fields else ""
    return f"{shown} below {gate.min:g} ({gate.name}{of})"


KIND = Llm()
