"""`agreement` confidence: ask the model again, `samples` times at the gate's declared
`temperature`; the score is the share of those answers that agree with the step's
answer on the fields scored. An answer that stays invalid counts as a dissent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from runner.core.errors import LLMError
from runner.core.llm import Answer
from runner.core.vocabulary import ErrorKind
from runner.kinds.base import Checks, ModelSession, Scored
from runner.kinds.confidence.scores import check_fields, decisive, gate_choices
from runner.lang.model import ConfidenceGate, ModelStep


class Agreement:
    """Answers agree when the fields scored (by default every enum and boolean field;
    without any, the whole answer) are equal."""

    name = "agreement"
    logprobs = False

    def check(self, checks: Checks, step: ModelStep, gate: ConfidenceGate) -> None:
        check_fields(checks, step, gate, needed=False)

    def score(
        self,
        session: ModelSession,
        step: ModelStep,
        messages: Sequence[Mapping[str, Any]],
        answer: Answer,
        gate: ConfidenceGate,
        ctx: Mapping[str, Any],
    ) -> Scored:
        fields = gate_choices(gate, step.output_schema)
        wanted = decisive(answer.value, fields)
        agreeing = invalid = 0
        for _ in range(gate.samples):
            try:
                sample = session.ask(
                    messages,
                    step.output_schema,
                    model=step.model,
                    repairs=step.repairs,
                    temperature=gate.temperature,
                )
            except LLMError as exc:
                if exc.kind != ErrorKind.INVALID_OUTPUT:
                    raise
                invalid += 1
                continue
            agreeing += decisive(sample.value, fields) == wanted
        detail = {
            "samples": gate.samples,
            "agreeing": agreeing,
            "invalid": invalid,
            "temperature": gate.temperature,
        }
        return Scored(agreeing / gate.samples, tuple(c.path for c in fields), detail)


KIND = Agreement()
