"""`approval` steps: a human task. The run waits in the review queue with what the
reviewer sees (`title`, `show`) and the values they decide (`edit`: a JSON Schema whose
defaults, templates, are the proposal). Its output is the decided values, edited or
not, so later steps act on exactly what was approved (`steps.finance.output.amount`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runner.core import templates
from runner.core.vocabulary import Ending, Outcome
from runner.kinds.base import STEP_ROOTS, Checks, StepResult, StepRun
from runner.lang.model import Flow, Step
from runner.lang.schema import schema_problems
from runner.lang.source import Path_


@dataclass(frozen=True, kw_only=True)
class ApprovalStep(Step):
    """A person decides; the step's output is the decided values."""

    title: str
    when: str | None  # a person decides only when this is true
    show: Mapping[str, str]
    edit: Mapping[str, Any] | None
    approvers: tuple[str, ...]
    expires_after_seconds: float | None
    on_rejected: str | None
    on_expired: str

    kind = "approval"

    def routes(self) -> dict[str, str]:
        routes = {
            **super().routes(),
            Outcome.AWAITING_APPROVAL: Ending.HUMAN_REVIEW.value,
            Outcome.EXPIRED: self.on_expired,
        }
        if self.on_rejected is not None:
            routes[Outcome.REJECTED] = self.on_rejected
        return routes

    def output_schema_in(self, flow: Flow) -> Any:
        return decided_schema(self.edit)

    def produces_output(self, trigger: str) -> bool:
        return trigger == Outcome.OK  # only an approval decides values

    def author_schemas(self) -> list[tuple[Path_, Any]]:
        if self.edit is None:
            return []
        return [((*self.path, "approval", "edit"), decided_schema(self.edit))]

    def proposal_of(self, output: Any) -> Any:
        return output.get("proposed", {}) if isinstance(output, dict) else output

    def reviewers(self) -> tuple[str, ...]:
        return self.approvers

    def review_expiry(self, flow: Flow) -> tuple[float | None, str]:
        seconds = self.expires_after_seconds
        if seconds is None and flow.review is not None:
            seconds = flow.review.expires_after_seconds
        return seconds, self.on_expired

    def shadows(self) -> dict[tuple[str | int, ...], str]:
        found: dict[tuple[str | int, ...], str] = {}
        for name, default in proposed_templates(self.edit).items():
            source = single_reference(default)
            if source is not None and source[0] == "steps":
                found[source[1:]] = f"steps.{self.id}.output.{name}"
        return found


def decided_schema(edit: Mapping[str, Any] | None) -> Any:
    """The schema of the decided values: the `edit` schema without its proposals,
    closed to fields it does not declare."""
    if edit is None:
        return {"type": "object", "additionalProperties": False}
    properties = {
        name: {k: v for k, v in sub.items() if k != "default"} if isinstance(sub, dict) else sub
        for name, sub in edit.get("properties", {}).items()
    }
    return {**edit, "type": "object", "properties": properties, "additionalProperties": False}


def proposed_templates(edit: Mapping[str, Any] | None) -> dict[str, Any]:
    """Each editable value's proposal (its `default`), as written."""
    properties = (edit or {}).get("properties", {})
    return {
        name: sub["default"]
        for name, sub in properties.items()
        if isinstance(sub, dict) and "default" in sub
    }


def single_reference(template: Any) -> tuple[str | int, ...] | None:
    """The reference a template that is exactly `{{ a.b.c }}` reads, as a chain."""
    if not isinstance(template, str) or not templates.is_template(template):
        return None
    try:
        refs = templates.references(templates.parse(template))
    except templates.TemplateSyntaxError:
        return None
    if len(refs) != 1 or template.strip().count("{{") != 1:
        return None
    return (refs[0].root, *refs[0].chain)


class Approval:
    """The `approval` step kind."""

    name = "approval"
    example: Mapping[str, Any] = {"approval": {"title": "Refund of {{ input.amount }}"}}

    def build(self, raw: Mapping[str, Any], common: dict[str, Any]) -> Step:
        approval = raw["approval"]
        return ApprovalStep(
            **common,
            title=approval["title"],
            when=approval.get("when"),
            show=dict(approval.get("show", {})),
            edit=approval.get("edit"),
            approvers=tuple(approval.get("reviewers", ())),
            expires_after_seconds=approval.get("expires_after_seconds"),
            on_rejected=raw.get("on_rejected"),
            on_expired=raw.get("on_expired", Ending.DEAD_LETTER.value),
        )

    def check(self, checks: Checks, step: Step) -> None:
        assert isinstance(step, ApprovalStep)
        path = (*step.path, "approval")
        checks.template((*path, "title"), step.title, STEP_ROOTS, step=step)
        if step.when is not None:
            checks.template((*path, "when"), step.when, STEP_ROOTS, step=step, expression=True)
        for label, text in step.show.items():
            checks.template((*path, "show", label), text, STEP_ROOTS, step=step)
        for name, default in proposed_templates(step.edit).items():
            if isinstance(default, str):
                checks.template(
                    (*path, "edit", "properties", name, "default"), default, STEP_ROOTS, step=step
                )
        if step.edit is not None and not schema_problems(decided_schema(step.edit)):
            _required_have_proposals(checks, step, path)

    def run(self, step: Step, visit: StepRun) -> StepResult:
        assert isinstance(step, ApprovalStep)
        ctx = visit.context()
        title = str(templates.render(step.title, ctx))
        output = {
            "title": title,
            "show": {label: templates.render(text, ctx) for label, text in step.show.items()},
            "proposed": {
                name: templates.render_tree(default, ctx)
                for name, default in proposed_templates(step.edit).items()
            },
        }
        if step.when is not None and not templates.evaluate(step.when, ctx):
            return StepResult(Outcome.OK, output["proposed"])  # no one needs to decide
        return StepResult(Outcome.AWAITING_APPROVAL, output, reason=title)


def _required_have_proposals(checks: Checks, step: ApprovalStep, path: Path_) -> None:
    """A required value without a proposal makes every approval without edits fail."""
    proposed = proposed_templates(step.edit)
    for name in (step.edit or {}).get("required", []):
        if name not in proposed:
            checks.add(
                (*path, "edit", "properties", name),
                f"`{name}` is required but has no proposed value: give it a "
                "`default` (a template), so approving without edits can work",
            )


KIND = Approval()
