"""`detect` policies: data that must not leave in the text (see `detectors`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runner.kinds.base import Checks, ModelSession, Violation
from runner.kinds.policies.detectors import DETECTORS
from runner.kinds.policies.violation import MAX_FINDINGS, violation
from runner.lang.model import Policy


class Detect:
    """Each detected piece of data is a violation, located."""

    name = "detect"

    def build(self, value: Any) -> Any:
        return (value,) if isinstance(value, str) else tuple(value)

    def check(self, checks: Checks, policy: Policy) -> None:
        """The schema already allows only known detectors."""

    def find(
        self, policy: Policy, text: str, ctx: Mapping[str, Any], session: ModelSession
    ) -> list[Violation]:
        found = [
            violation(policy, name, span, text, f"the text contains {name.replace('_', ' ')} data")
            for name in policy.value
            for span in DETECTORS[name](text)
        ]
        return found[:MAX_FINDINGS]


KIND = Detect()
