"""`field` confidence: a score the answer itself gives (`score: "{{ output.x }}"`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from runner.core import templates
from runner.core.llm import Answer
from runner.kinds.base import STEP_ROOTS, Checks, ModelSession, Scored
from runner.kinds.confidence.scores import unit
from runner.lang.model import ConfidenceGate, ModelStep


class Field:
    """The gate's `score` template, rendered with `output` bound to the answer."""

    name = "field"
    logprobs = False

    def check(self, checks: Checks, step: ModelStep, gate: ConfidenceGate) -> None:
        checks.template((*gate.path, "score"), gate.score or "", (*STEP_ROOTS, "output"), step=step)

    def score(
        self,
        session: ModelSession,
        step: ModelStep,
        messages: Sequence[Mapping[str, Any]],
        answer: Answer,
        gate: ConfidenceGate,
        ctx: Mapping[str, Any],
    ) -> Scored:
        rendered = templates.render(gate.score or "", {**ctx, "output": answer.value})
        return Scored(unit(rendered))


KIND = Field()
