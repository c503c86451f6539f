"""`switch` steps: route on jinja conditions; the first true branch wins, else `next`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from runner.core import templates
from runner.core.errors import StepError
from runner.core.vocabulary import STOPS, Outcome, branch, branch_number
from runner.kinds.base import STEP_ROOTS, Checks, StepResult, StepRun
from runner.lang.model import Step
from runner.lang.source import Path_


@dataclass(frozen=True, kw_only=True)
class SwitchCase:
    """One branch of a switch: a jinja condition and where it leads."""

    when: str
    next: str


@dataclass(frozen=True, kw_only=True)
class SwitchStep(Step):
    """Route on jinja conditions; the first true case wins, else `next`."""

    cases: tuple[SwitchCase, ...]

    kind = "switch"
    success: ClassVar[str] = Outcome.DEFAULT
    editable: ClassVar[bool] = False  # a route has nothing to edit: use an approval step

    def routes(self) -> dict[str, str]:
        routes = {branch(i): case.next for i, case in enumerate(self.cases, 1)}
        routes[Outcome.DEFAULT] = self.next
        if self.on_error:
            routes[Outcome.ERROR] = self.on_error
        return routes

    def route_path(self, trigger: str) -> Path_:
        number = branch_number(trigger)
        if number is None:
            return super().route_path(trigger)
        return (*self.path, "switch", number - 1, "next")

    def condition_of(self, trigger: str) -> str | None:
        number = branch_number(trigger)
        return None if number is None else self.cases[number - 1].when


class Switch:
    """The `switch` step kind."""

    name = "switch"
    example: Mapping[str, Any] = {
        "switch": [{"when": "input.amount > 200", "next": "human_review"}]
    }

    def build(self, raw: Mapping[str, Any], common: dict[str, Any]) -> Step:
        cases = tuple(SwitchCase(when=c["when"], next=c["next"]) for c in raw["switch"])
        return SwitchStep(**common, cases=cases)

    def check(self, checks: Checks, step: Step) -> None:
        assert isinstance(step, SwitchStep)
        for i, case in enumerate(step.cases):
            checks.template(
                (*step.path, "switch", i, "when"), case.when, STEP_ROOTS, step=step, expression=True
            )

    def run(self, step: Step, visit: StepRun) -> StepResult:
        assert isinstance(step, SwitchStep)
        ctx = visit.context()
        for number, case in enumerate(step.cases, 1):
            if templates.evaluate(case.when, ctx):
                why = f"{step.id}: case {number}, {explain(case.when, ctx)}"
                return StepResult(
                    branch(number),
                    {"branch": number, "when": case.when},
                    reason=why if case.next in STOPS else None,
                )
        why = f"{step.id}: no case matched"
        return StepResult(
            Outcome.DEFAULT, {"branch": "default"}, reason=why if step.next in STOPS else None
        )


def explain(condition: str, ctx: Mapping[str, Any]) -> str:
    """The condition with the value of each name it read, e.g.
    `steps.assess.output.amount = 480 > 200`. Environment and secrets are not shown."""
    try:
        refs = templates.references(templates.parse_expression(condition))
    except templates.TemplateSyntaxError:
        return condition
    shown = condition
    for spelled in dict.fromkeys(_spell(r) for r in refs if r.root not in ("env", "secret")):
        try:
            value = templates.evaluate(spelled, ctx)
        except StepError:
            continue
        text = json.dumps(value, ensure_ascii=False, default=str)
        shown = shown.replace(spelled, f"{spelled} = {_cut(text)}", 1)
    return shown


def _spell(ref: templates.Reference) -> str:
    return ref.root + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in ref.chain)


def _cut(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


KIND = Switch()
