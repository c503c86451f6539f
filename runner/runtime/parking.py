"""Parking a run whose retry wait is too long to hold a worker's thread and lease for.

Under `runner worker` the engine has `park_after` seconds set. A step whose next retry
is further away than that (a long backoff, or a server's Retry-After) stops: its failed
attempts and a `run_parked` event are written, its effect (an idempotent one: only those
are retried after an error that may have reached the server) is set aside to start
again, and the run goes back to the queue, due when the wait is over, with its lease
given up. A worker claims it then and the step runs again, its earlier attempts counted
against the retry policy, so a parked step never retries more often than its policy
says.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import timedelta

from runner.core.errors import StoreError
from runner.core.events import Event, RunParked, StepFinished, now
from runner.kinds.base import attempt_events
from runner.lang.model import Step
from runner.runtime.retry import PARKING, Parking, WaitTooLong
from runner.runtime.visit import RunState
from runner.store.base import Store


class Parked(Exception):
    """The run was parked (see the module's docstring) and is no longer driven here."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@contextlib.contextmanager
def parking(
    store: Store, state: RunState, owner: str, step: Step, after: float | None
) -> Iterator[None]:
    """Run a step that parks the run on a long retry wait (with `after` set)."""
    if after is None:
        yield
        return
    token = PARKING.set(Parking(after, state.prior_attempts))
    state.prior_attempts = 0
    try:
        yield
    except WaitTooLong as wait:
        raise Parked(park(store, state, owner, step, wait)) from None
    finally:
        PARKING.reset(token)


def park(store: Store, state: RunState, owner: str, step: Step, wait: WaitTooLong) -> str:
    """Write the attempts and the park, give the lease up; the reason shown for it."""
    due = now() + timedelta(seconds=wait.seconds)
    made = wait.attempts[-1].number if wait.attempts else 0
    last = wait.attempts[-1].message if wait.attempts else "it failed"
    reason = f"waiting {wait.seconds:g} s to retry step {step.id} (attempt {made}: {last})"
    parked = RunParked(
        step_id=step.id, due=due.isoformat(), attempts=made, seconds=round(wait.seconds, 3)
    )
    events: list[Event] = [*attempt_events(step, wait.attempts), parked]
    if not store.park(state.run_id, owner, due, reason, events):
        raise StoreError(f"run {state.run_id} is no longer leased to this process")
    return reason


def prior_attempts(events: Sequence[Event], step_id: str) -> int:
    """The attempts a parked step made before its run was last parked there (0 when the
    step finished since, or never parked)."""
    for event in reversed(events):
        if event.step_id != step_id:
            continue
        if isinstance(event, StepFinished):
            return 0
        if isinstance(event, RunParked):
            return event.attempts
    return 0
