"""`check` policies: a jinja expression about the text that must be true."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runner.core import templates
from runner.kinds.base import Checks, ModelSession, Violation
from runner.kinds.policies.violation import violation
from runner.lang.model import Policy

ROOTS = ("text", "input", "steps", "run", "env")


class Check:
    """The expression sees `text` and the step's context; false is a violation."""

    name = "check"

    def build(self, value: Any) -> Any:
        return value

    def check(self, checks: Checks, policy: Policy) -> None:
        checks.template((*policy.path, "check"), policy.value, ROOTS, expression=True)

    def find(
        self, policy: Policy, text: str, ctx: Mapping[str, Any], session: ModelSession
    ) -> list[Violation]:
        if templates.evaluate(policy.value, {**ctx, "text": text}):
            return []
        return [violation(policy, "check", None, text, f"the check `{policy.value}` is false")]


KIND = Check()
