"""What a finished step records beside its output (its `step` event, the reason a run
that stops there shows, when a review it waits for expires), and committing it through
a moment when the store cannot be reached."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from runner.core.errors import StoreError
from runner.core.events import StepFinished, now
from runner.core.notices import notice
from runner.core.vocabulary import STOPS, Ending
from runner.kinds.base import StepResult
from runner.lang.compiler import CompiledFlow
from runner.lang.model import Step
from runner.runtime.retry import Clock
from runner.store.base import Store
from runner.store.records import StepCommit

FIRST_WAIT, LONGEST_WAIT = 0.2, 5.0  # seconds between tries of a commit


def commit_step(store: Store, run_id: str, owner: str, commit: StepCommit, clock: Clock) -> None:
    """Commit a finished step. A transient failure (the database server restarting, a
    moment of network trouble) is tried again for as long as the lease would last: the
    commit is fenced by the lease, so trying again can never write over another holder,
    and a commit whose answer was lost after it went through is found by its
    checkpoint. The step's work, an effect's answer above all, is not given up over a
    blip."""
    deadline = clock.monotonic() + store.lease_seconds
    wait = FIRST_WAIT
    while True:
        try:
            store.commit_step(run_id, owner, commit)
            return
        except StoreError as exc:
            if not exc.transient or clock.monotonic() + wait > deadline:
                raise
            if wait == FIRST_WAIT:  # said once: a person sees why the run waits
                notice(
                    f"run {run_id}: {exc}; trying again for up to {store.lease_seconds:g} s",
                    level="warning",
                    run=run_id,
                )
        clock.sleep(wait)
        wait = min(wait * 2, LONGEST_WAIT)
        if _committed(store, run_id, commit):
            return


def _committed(store: Store, run_id: str, commit: StepCommit) -> bool:
    """Whether this very checkpoint is stored (its commit went through after all)."""
    mine = commit.checkpoint
    try:
        return any(
            c.seq == mine.seq and c.step_id == mine.step_id and c.finished_at == mine.finished_at
            for c in store.checkpoints(run_id)
        )
    except StoreError:
        return False


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
