"""`deny` and `require` policies: a regular expression the text must not (or must)
match. Two kinds of one module: they differ only in which way the match counts."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from runner.kinds.base import Checks, ModelSession, Violation
from runner.kinds.policies.violation import MAX_FINDINGS, violation
from runner.lang.model import Policy


class _Pattern:
    """What both kinds share: the value is a regular expression that must compile."""

    def build(self, value: Any) -> Any:
        return value

    def check(self, checks: Checks, policy: Policy) -> None:
        try:
            re.compile(policy.value)
        except re.error as exc:
            checks.add((*policy.path, policy.kind), f"not a valid regular expression: {exc}")


class Deny(_Pattern):
    """The text must not match the pattern; each match is a violation."""

    name = "deny"

    def find(
        self, policy: Policy, text: str, ctx: Mapping[str, Any], session: ModelSession
    ) -> list[Violation]:
        message = f"the text matches the denied pattern {policy.value!r}"
        return [
            violation(policy, "deny", m.span(), text, message)
            for m in re.finditer(policy.value, text)
        ][:MAX_FINDINGS]


class Require(_Pattern):
    """The text must match the pattern somewhere."""

    name = "require"

    def find(
        self, policy: Policy, text: str, ctx: Mapping[str, Any], session: ModelSession
    ) -> list[Violation]:
        if re.search(policy.value, text):
            return []
        message = f"the text does not match the required pattern {policy.value!r}"
        return [violation(policy, "require", None, text, message)]


DENY = Deny()
REQUIRE = Require()
