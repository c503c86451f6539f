"""`judge` policies: a model reads the text against a rubric."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runner.kinds.base import Checks, ModelSession, Violation
from runner.kinds.policies.violation import violation
from runner.lang.model import Policy

RUBRIC_SCHEMA = {
    "type": "object",
    "required": ["passes", "reason"],
    "properties": {"passes": {"type": "boolean"}, "reason": {"type": "string"}},
}


class Judge:
    """A violation when the judge model finds that the text breaks the rubric."""

    name = "judge"

    def build(self, value: Any) -> Any:
        return value

    def check(self, checks: Checks, policy: Policy) -> None:
        checks.model_ref((*policy.path, "judge", "model"), policy.value.get("model"))

    def find(
        self, policy: Policy, text: str, ctx: Mapping[str, Any], session: ModelSession
    ) -> list[Violation]:
        rubric = policy.value["rubric"]
        answer = session.ask(
            [
                {
                    "role": "system",
                    "content": "You check texts against a rule. Reply with JSON: "
                    '{"passes": true or false, "reason": one sentence}.',
                },
                {"role": "user", "content": f"Rule: {rubric}\n\nText:\n{text}"},
            ],
            RUBRIC_SCHEMA,
            model=policy.value.get("model"),
            repairs=1,
        )
        if answer.value["passes"]:
            return []
        return [
            violation(policy, "judge", None, text, f"the judge found: {answer.value['reason']}")
        ]


KIND = Judge()
