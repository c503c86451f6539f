"""`agreement` confidence: sample the model several times; the score is the share of
answers that agree with the majority."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from runner.kinds.base import Checks, ModelSession
from runner.kinds.confidence.scores import decisive_value
from runner.lang.model import ConfidenceGate, ModelStep

SAMPLING_TEMPERATURE = 0.8  # when the model's own temperature would give one answer


class Agreement:
    """Answers agree when their decisive value (or, without one, their JSON) is equal."""

    name = "agreement"

    def check(self, checks: Checks, step: ModelStep, gate: ConfidenceGate) -> None:
        """The samples are the model's own answers: nothing to resolve."""

    def answer(
        self,
        session: ModelSession,
        step: ModelStep,
        messages: Sequence[Mapping[str, Any]],
        gate: ConfidenceGate,
        ctx: Mapping[str, Any],
    ) -> tuple[Any, float | None]:
        model = session.model(step.model)
        temperature = model.temperature if model.temperature else SAMPLING_TEMPERATURE
        answers = [
            session.ask(
                messages,
                step.output_schema,
                model=step.model,
                repairs=step.repairs,
                temperature=temperature,
            ).value
            for _ in range(gate.samples)
        ]
        keys = [
            decisive_value(a, step.output_schema) or json.dumps(a, sort_keys=True) for a in answers
        ]
        majority, count = Counter(keys).most_common(1)[0]
        return answers[keys.index(majority)], count / len(answers)


KIND = Agreement()
