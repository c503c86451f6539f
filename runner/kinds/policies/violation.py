"""A policy's finding: which rule fired, its message, and where in the text."""

from __future__ import annotations

from runner.kinds.base import Violation
from runner.lang.model import Policy

MAX_FINDINGS = 10  # per rule: enough to show a reviewer, bounded for the audit trail


def violation(
    policy: Policy, rule: str, span: tuple[int, int] | None, text: str, default_message: str
) -> Violation:
    """A finding of `rule`, with the policy's own message if it has one."""
    found: Violation = {
        "policy": policy.name,
        "rule": rule,
        "message": policy.message or default_message,
    }
    if span is not None:
        found["start"], found["end"] = span
        found["excerpt"] = text[max(0, span[0] - 20) : span[1] + 20]
    return found
