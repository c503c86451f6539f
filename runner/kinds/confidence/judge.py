"""`judge` confidence: a second model grades the answer."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from runner.kinds.base import Checks, ModelSession
from runner.kinds.confidence.scores import unit
from runner.lang.model import ConfidenceGate, ModelStep

JUDGE_SCHEMA = {
    "type": "object",
    "required": ["score"],
    "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1}},
}


class Judge:
    """The judge model's score of how likely the answer is correct and appropriate."""

    name = "judge"

    def check(self, checks: Checks, step: ModelStep, gate: ConfidenceGate) -> None:
        checks.model_ref((*step.path, "confidence", "judge"), gate.judge)

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
        judged = session.ask(
            [
                {
                    "role": "system",
                    "content": 'You grade answers. Reply with JSON: {"score": a '
                    "number from 0 to 1, how likely the answer is correct and appropriate}.",
                },
                {
                    "role": "user",
                    "content": f"Task:\n{messages[-1]['content']}\n\nAnswer:\n"
                    f"{json.dumps(value, ensure_ascii=False)}",
                },
            ],
            JUDGE_SCHEMA,
            model=gate.judge,
            repairs=1,
        )
        return value, unit(judged.value["score"])


KIND = Judge()
