"""`max_length` policies: the text may have at most this many characters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runner.kinds.base import Checks, ModelSession, Violation
from runner.kinds.policies.violation import violation
from runner.lang.model import Policy


class MaxLength:
    """A text longer than the limit is a violation (span: the limit and the length)."""

    name = "max_length"

    def build(self, value: Any) -> Any:
        return value

    def check(self, checks: Checks, policy: Policy) -> None:
        """The schema already requires a whole number."""

    def find(
        self, policy: Policy, text: str, ctx: Mapping[str, Any], session: ModelSession
    ) -> list[Violation]:
        if len(text) <= policy.value:
            return []
        message = f"the text is longer than {policy.value} characters"
        return [violation(policy, "max_length", (policy.value, len(text)), text, message)]


KIND = MaxLength()
