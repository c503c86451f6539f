"""`llm` steps: ask a model for an answer that fits a schema; optionally gate it on a
confidence score (each method a module of `runner.kinds.confidence`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runner.core.errors import StepError
from runner.core.events import ConfidenceScored
from runner.core.vocabulary import Ending, Outcome
from runner.kinds.base import Checks, ModelSession, StepResult, StepRun, model_failure
from runner.kinds.confidence.methods import METHODS
from runner.kinds.steps.prompts import check_prompts, messages_for
from runner.lang.model import DEFAULT_REPAIRS, ConfidenceGate, ModelStep, Step


@dataclass(frozen=True, kw_only=True)
class LlmStep(ModelStep):
    """Ask a model; optionally gate its answer on a confidence score."""

    confidence: ConfidenceGate | None
    on_low_confidence: str

    kind = "llm"

    def routes(self) -> dict[str, str]:
        routes = super().routes()
        if self.confidence:
            routes[Outcome.LOW_CONFIDENCE] = self.on_low_confidence
        return routes


class Llm:
    """The `llm` step kind."""

    name = "llm"
    example: Mapping[str, Any] = {"llm": {"prompt": "Classify: {{ input.text }}"}}

    def build(self, raw: Mapping[str, Any], common: dict[str, Any]) -> Step:
        llm, gate = raw["llm"], raw.get("confidence")
        confidence = None
        if gate is not None:
            confidence = ConfidenceGate(
                method=gate.get("method", "field"),
                min=gate["min"],
                score=gate.get("score"),
                samples=gate.get("samples", 5),
                judge=gate.get("judge"),
            )
        return LlmStep(
            **common,
            model=llm.get("model"),
            system=llm.get("system"),
            prompt=llm["prompt"],
            output_schema=llm.get("output"),
            repairs=llm.get("repairs", DEFAULT_REPAIRS),
            confidence=confidence,
            on_low_confidence=raw.get("on_low_confidence", Ending.HUMAN_REVIEW.value),
        )

    def check(self, checks: Checks, step: Step) -> None:
        assert isinstance(step, LlmStep)
        check_prompts(checks, step, (*step.path, "llm"))
        if step.confidence:
            METHODS[step.confidence.method].check(checks, step, step.confidence)

    def run(self, step: Step, visit: StepRun) -> StepResult:
        assert isinstance(step, LlmStep)
        session = visit.session()
        try:
            return self._answer(step, visit.context(), session)
        except StepError as exc:
            return model_failure(step, exc, session)

    def _answer(self, step: LlmStep, ctx: dict[str, Any], session: ModelSession) -> StepResult:
        messages = messages_for(step.system, step.prompt, ctx)
        gate = step.confidence
        if gate is None:
            answer = session.ask(
                messages, step.output_schema, model=step.model, repairs=step.repairs
            )
            return StepResult(Outcome.OK, answer.value, 1, session.events)
        output, score = METHODS[gate.method].answer(session, step, messages, gate, ctx)
        passed = score is not None and score >= gate.min
        session.events.append(
            ConfidenceScored(
                step_id=step.id, method=gate.method, score=score, min=gate.min, passed=passed
            )
        )
        if passed:
            return StepResult(Outcome.OK, output, 1, session.events)
        shown = "no valid score" if score is None else f"confidence {score:.3f}"
        return StepResult(
            Outcome.LOW_CONFIDENCE,
            output,
            1,
            session.events,
            reason=f"{shown} below {gate.min:g} ({gate.method})",
        )


KIND = Llm()
