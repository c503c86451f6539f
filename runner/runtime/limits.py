"""The step limit: a run that would go past its flow's `max_steps` takes the budget's
route instead of running on (a route that loops back must not run for ever)."""

from __future__ import annotations

from runner.core.events import BudgetReached
from runner.core.vocabulary import Ending, ErrorKind, Outcome
from runner.kinds.base import StepResult
from runner.lang.model import Flow, Step


def step_limit_route(flow: Flow, step_id: str, seq: int) -> str | None:
    """Where a run goes instead of running `step_id` after `seq` steps, when that is past
    the flow's `max_steps` (None: the step runs). The limit routes like a budget; the
    step that route names runs once past the limit, and any step after it stops the run
    for review, so that a route back into a loop cannot start the loop again."""
    if seq < flow.max_steps:
        return None
    route = flow.budget.on_exceeded if flow.budget else Ending.HUMAN_REVIEW.value
    if seq == flow.max_steps:
        return route
    if seq == flow.max_steps + 1 and step_id == route:
        return None
    return Ending.HUMAN_REVIEW.value


def step_limit_reached(step: Step, limit: int) -> StepResult:
    """The outcome of a step that did not run because the run reached its step limit."""
    message = f"step limit reached: {limit} steps"
    return StepResult(
        Outcome.BUDGET_EXCEEDED,
        None,
        0,
        [BudgetReached(step_id=step.id, message=message)],
        reason=message,
        error={"kind": ErrorKind.BUDGET_EXCEEDED.value, "message": message},
    )
