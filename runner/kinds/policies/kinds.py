"""The policy kinds a flow's `policies` may use; the schema's policy kinds must equal
these keys."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from runner.kinds.base import ModelSession, PolicyKind, Violation
from runner.kinds.policies import check, detect, judge, length, patterns
from runner.lang.model import Policy

POLICY_KINDS: dict[str, PolicyKind] = {
    kind.name: kind
    for kind in (patterns.DENY, patterns.REQUIRE, length.KIND, detect.KIND, check.KIND, judge.KIND)
}


def check_policies(
    policies: Sequence[Policy], text: str, ctx: Mapping[str, Any], session: ModelSession
) -> list[Violation]:
    """Every violation of the given rules in `text`, in the order the rules are listed;
    `session` answers for rules that ask a model (`judge`)."""
    return [v for p in policies for v in POLICY_KINDS[p.kind].find(p, text, ctx, session)]
