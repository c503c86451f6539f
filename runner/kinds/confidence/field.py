"""`field` confidence: a score the answer itself gives (`score: "{{ output.x }}"`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from runner.core import templates
from runner.kinds.base import STEP_ROOTS, Checks, ModelSession
from runner.kinds.confidence.scores import unit
from runner.lang.model import ConfidenceGate, ModelStep


class Field:
    """The gate's `score` template, rendered with `output` bound to the answer."""

    name = "field"

    def check(self, checks: Checks, step: ModelStep, gate: ConfidenceGate) -> None:
        checks.template(
            (*step.path, "confidence", "score"),
            gate.score or "",
            (*STEP_ROOTS, "output"),
            step=step,
        )

    def answer(
        self,
        session: ModelSession,
        step: ModelStep,
        messages: Sequence[Mapping[str, Any]],
        gate: ConfidenceGate,
        ctx: Mapping[str, Any],
    ) -> tuple[Any, float | None]:
        value = session.ask(
            messages, step.output_schema, model=step.model, repairs=step.repairs
        ).value
        return value, unit(templates.render(gate.score or "", {**ctx, "output": value}))


KIND = Field()
