"""Scripted people: how a flow test case decides the reviews its run stops for.

A case lists its reviews in the order the run stops (`reviews: [approve, {reject: ...}]`).
Each time the engine leaves the run escalated, the next one is applied through the
review desk, as `runner review` would apply it, and the run goes on. A review that
runner refuses (an edit that breaks the output schema or a policy, an edit at a switch,
a person who is not one of the step's reviewers) fails the case with runner's message,
unless the review says it must be refused (`refused: TEXT`); then the run waits on for
the next one. `expire` lets the review's deadline pass; where no deadline applies (no
`expires_after_seconds` for the stopped step), it is refused in the same way. Reviews
left over once the run has ended fail the case too.

Route coverage counts the routes decisions take: an approval takes the stopped step's
success route, a rejection or an expiry its `on_rejected` or `on_expired` route.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from runner.core.errors import InputError, RunnerError, StoreError, UsageError
from runner.core.vocabulary import DecisionKind, Outcome, RunStatus
from runner.lang.model import Flow
from runner.store.base import Store

if TYPE_CHECKING:  # the desk and the engine load when a case has reviews, not before
    from runner.review.desk import Desk
    from runner.runtime.engine import RunResult

ACTIONS = ("approve", "reject", "expire", "retry")
DEFAULT_REVIEWER = "tester"  # who decides where a step names no reviewers
# Checkpoint outcomes a decision writes: a person's decision is not a step that ran.
DECIDED = frozenset({Outcome.APPROVED.value, Outcome.REJECTED.value, Outcome.EXPIRED.value})


class ReviewRefusedError(RunnerError):
    """A scripted review that cannot be applied to the run as it stands."""


@dataclass(frozen=True)
class ScriptedReview:
    """One scripted decision, its shorthands expanded."""

    index: int
    action: str  # one of ACTIONS
    by: str | None = None
    sets: tuple[str, ...] = ()  # `path=JSON`, as `runner review approve --set` takes them
    note: str | None = None
    override: str | None = None
    reason: str = ""  # a rejection's
    step: str | None = None  # where a retry starts
    refused: str | None = None  # text the refusal must contain; None: it must be accepted

    @property
    def label(self) -> str:
        """How the case's differences name it: `reviews[1] (approve)`."""
        return f"reviews[{self.index}] ({self.action})"


def parse_reviews(raw: Sequence[Any]) -> tuple[ScriptedReview, ...]:
    """The reviews of a case whose shape the test file schema has checked."""
    return tuple(_parse(index, item) for index, item in enumerate(raw))


def _parse(index: int, item: Any) -> ScriptedReview:
    if isinstance(item, str):
        return ScriptedReview(index, item)
    action = next(a for a in ACTIONS if a in item)
    value = item[action]
    common: dict[str, Any] = {"by": item.get("by"), "refused": item.get("refused")}
    if action == "approve":
        value = value or {}
        sets = tuple(f"{path}={json.dumps(new)}" for path, new in value.get("set", {}).items())
        return ScriptedReview(
            index,
            action,
            sets=sets,
            note=value.get("note"),
            override=value.get("override"),
            **common,
        )
    if action == "reject":
        return ScriptedReview(index, action, reason=value, **common)
    if action == "retry":
        return ScriptedReview(index, action, step=value, **common)
    return ScriptedReview(index, action, **common)


def apply_reviews(
    desk: Desk, result: RunResult, reviews: Sequence[ScriptedReview]
) -> tuple[RunResult, list[str]]:
    """Decide each escalation of the run with the next scripted review, until the run
    ends or the script does: where the run stands, and the case's differences (a
    refusal not expected, an expected one that did not come, reviews not used)."""
    differences: list[str] = []
    left = list(reviews)
    while left and result.status == RunStatus.ESCALATED:
        review = left.pop(0)
        try:
            result = decide(desk, result.run_id, review)
        except (InputError, UsageError, StoreError, ReviewRefusedError) as exc:
            difference = _refusal(review, str(exc))
            if difference:
                return result, [*differences, difference]
            continue
        if review.refused is not None:
            differences.append(
                f"{review.label}: expected it to be refused with {review.refused!r}, "
                "but it was accepted"
            )
    if left:
        were = "reviews were" if len(left) != 1 else "review was"
        differences.append(
            f"{len(left)} scripted {were} not used: the run is {result.status}, "
            "not waiting for review"
        )
    return result, differences


def _refusal(review: ScriptedReview, message: str) -> str | None:
    """The difference a refusal makes: none when the review expects it."""
    if review.refused is None:
        return f"{review.label} was refused: {message}"
    if review.refused not in message:
        return f"{review.label}: expected a refusal containing {review.refused!r}, got: {message}"
    return None


def decide(desk: Desk, run_id: str, review: ScriptedReview) -> RunResult:
    """Apply one scripted review to an escalated run, through the desk."""
    if review.action == "expire":
        return _expire(desk, run_id)
    by = review.by or _first_reviewer(desk, run_id)
    if review.action == "approve":
        return desk.approve(
            run_id, by, sets=review.sets, note=review.note, override=review.override
        )
    if review.action == "reject":
        return desk.reject(run_id, by, review.reason)
    return desk.retry(run_id, by, review.step)


def _first_reviewer(desk: Desk, run_id: str) -> str:
    """A name that may decide at the stopped step: its first reviewer, else anyone."""
    reviewers = desk.proposal(run_id).reviewers
    return reviewers[0] if reviewers else DEFAULT_REVIEWER


def _expire(desk: Desk, run_id: str) -> RunResult:
    """Let the review's deadline pass: the run takes its expiry route."""
    record = desk.store.run(run_id)
    if record.due_at is None:
        raise ReviewRefusedError(
            f"the review at `{record.failed_step}` has no deadline (no "
            "`expires_after_seconds` applies to it), so it cannot expire"
        )
    desk.expire(at=record.due_at + timedelta(seconds=1))  # the case's store has one run
    record = desk.store.run(run_id)
    from runner.runtime.engine import RunResult

    return RunResult(record.id, record.status, record.position, record.reason)


def routes_taken(store: Store, run_id: str, flow: Flow) -> set[tuple[str, str]]:
    """The routes a run took, as (step, trigger). An approval's checkpoint belongs to
    the step whose output was approved (for a policy check, the draft before it), so
    its route is read from the decision: the stopped step's success route."""
    taken = {
        (c.step_id, c.outcome) for c in store.checkpoints(run_id) if c.outcome != Outcome.APPROVED
    }
    steps = {s.id: s for s in flow.steps}
    for decision in store.decisions(run_id):
        stopped = steps.get(decision.step_id or "")
        if decision.decision == DecisionKind.APPROVED and stopped is not None:
            taken.add((stopped.id, str(stopped.success)))
    return taken
