"""`judge` confidence: a second model grades the answer."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from runner.core.llm import Answer
from runner.kinds.base import Checks, ModelSession, Scored
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
    logprobs = False

    def check(self, checks: Checks, step: ModelStep, gate: ConfidenceGate) -> None:
        checks.model_ref((*gate.path, "judge"), gate.judge)

    def score(
        self,
        session: ModelSession,
        step: ModelStep,
        messages: Sequence[Mapping[str, Any]],
        answer: Answer,
        gate: ConfidenceGate,
        ctx: Mapping[str, Any],
    ) -> Scored:
        value = answer.value
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
        return Scored(unit(judged.value["score"]), (), {"judge": gate.judge})


KIND = Judge()
