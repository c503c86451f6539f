"""What a finished step records beside its output: its `step` event, the reason a run
that stops there shows, and when a review it waits for expires."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from runner.core.events import StepFinished, now
from runner.core.vocabulary import STOPS, Ending
from runner.kinds.base import StepResult
from runner.lang.compiler import CompiledFlow
from runner.lang.model import Step


def finished_event(
    step: Step, result: StepResult, dest: str, started: datetime, redact: Callable[[Any], Any]
) -> StepFinished:
    """The `step` event: the outcome, the route taken, attempts and time."""
    return StepFinished(
        step_id=step.id,
        outcome=str(result.outcome),
        route=dest,
        attempts=result.attempts,
        ms=round((now() - started).total_seconds() * 1000, 3),
        error=redact(result.error) if result.error else None,
    )


def review_due(compiled: CompiledFlow, step: Step, dest: str) -> datetime | None:
    """When a run that stops here for review expires (None: it waits for ever)."""
    if dest != Ending.HUMAN_REVIEW:
        return None
    seconds, _ = step.review_expiry(compiled.flow)
    return now() + timedelta(seconds=seconds) if seconds else None


def reason(step: Step, result: StepResult, dest: str) -> str | None:
    if result.reason:
        return result.reason
    if dest in STOPS and result.error:
        return f"step {step.id} failed: {result.error['message']}"
    return None
