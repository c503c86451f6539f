"""`policies` steps: check a text against policy rules before it reaches a side effect.
Each rule kind is a module of `runner.kinds.policies`."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from runner.core import templates
from runner.core.events import DecisionMade, Event, PolicyFired, now
from runner.core.vocabulary import Ending, Outcome
from runner.kinds.base import STEP_ROOTS, Checks, StepResult, StepRun
from runner.kinds.policies.kinds import check_policies
from runner.lang.model import Step


@dataclass(frozen=True, kw_only=True)
class PolicyStep(Step):
    """Check a text against policy rules before it reaches a side effect."""

    policies: tuple[str, ...]
    text: str
    on_violation: str

    kind = "policies"
    uses_models: ClassVar[bool] = True  # a judge rule asks a model

    def routes(self) -> dict[str, str]:
        return {**super().routes(), Outcome.VIOLATION: self.on_violation}

    def review_target(self) -> str:
        """The one step whose output the checked text shows (the draft), if one."""
        refs = {
            str(r.chain[0])
            for r in templates.references(templates.parse(self.text))
            if r.root == "steps" and r.chain
        }
        return refs.pop() if len(refs) == 1 else self.id


class Policies:
    """The `policies` step kind."""

    name = "policies"
    example: Mapping[str, Any] = {"policies": [], "text": "{{ input.text }}"}

    def build(self, raw: Mapping[str, Any], common: dict[str, Any]) -> Step:
        return PolicyStep(
            **common,
            policies=tuple(raw["policies"]),
            text=raw["text"],
            on_violation=raw.get("on_violation", Ending.HUMAN_REVIEW.value),
        )

    def check(self, checks: Checks, step: Step) -> None:
        assert isinstance(step, PolicyStep)
        for i, name in enumerate(step.policies):
            checks.known((*step.path, "policies", i), "policy", name, checks.flow.policies)
        checks.template((*step.path, "text"), step.text, STEP_ROOTS, step=step)

    def run(self, step: Step, visit: StepRun) -> StepResult:
        assert isinstance(step, PolicyStep)
        ctx = visit.context()
        text = str(templates.render(step.text, ctx))
        session = visit.session()
        rules = [visit.flow.policies[name] for name in step.policies]
        found = check_policies(rules, text, ctx, session)
        events = [*session.events, *(PolicyFired.from_data(v, step.id, now()) for v in found)]
        if not found:
            return StepResult(Outcome.OK, {"violations": []}, events=events)
        overridden = _override_of(visit.recorded(), step.id, text)
        if overridden is not None:  # a person approved exactly this text past the rules
            return StepResult(
                Outcome.OK, {"violations": found, "overridden": overridden}, events=events
            )
        reasons = dict.fromkeys(f"policy {v['policy']}: {v['message']}" for v in found)
        return StepResult(
            Outcome.VIOLATION, {"violations": found}, events=events, reason="; ".join(reasons)
        )  # each rule once, in order


def text_hash(text: str) -> str:
    """The fingerprint of a checked text, as a reviewer's override records it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _override_of(recorded: list[Event], step_id: str, text: str) -> str | None:
    """The reason of the latest override that covers this check of exactly this text."""
    fingerprint = text_hash(text)
    for event in reversed(recorded):
        if isinstance(event, DecisionMade) and (event.overrides or {}).get(step_id) == fingerprint:
            return event.override
    return None


KIND = Policies()
