"""Retries with tenacity: attempts, exponential backoff with a cap, jitter, an overall
deadline, retry classes, and a server's Retry-After honoured up to the cap: a server
that asks for a longer wait than `max_interval_seconds` is not waited for (the run would
hold its thread and its lease all that time); the call fails, saying so.

Under a worker (`PARKING` set) a long wait is not slept through at all: a wait longer
than `Parking.after` seconds, a long backoff or a Retry-After (then honoured whatever
the cap), raises `WaitTooLong`, and the engine parks the run until the wait is over.
The attempts made before the park count when the run comes back (`prior_attempts`).

Waiting goes through an injected clock, so tests assert the waits without sleeping.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import tenacity

from runner.core.errors import Attempt, RetriesExhaustedError, StepError

__all__ = ["Attempt", "Clock", "Retrier", "RetriesExhaustedError", "SystemClock"]
from runner.lang.model import RetryPolicy

T = TypeVar("T")


@dataclass(frozen=True)
class Parking:
    """Waits longer than `after` seconds park the run; `prior_attempts` were made
    before the run was last parked, at the same call."""

    after: float
    prior_attempts: int = 0


PARKING: ContextVar[Parking | None] = ContextVar("runner_parking", default=None)


class WaitTooLong(Exception):
    """A retry wait too long to hold a thread for: the run is parked instead."""

    def __init__(self, seconds: float, attempts: list[Attempt]) -> None:
        super().__init__(f"waiting {seconds:g} s before attempt {len(attempts) + 1}")
        self.seconds = seconds
        self.attempts = attempts


class Clock(Protocol):
    """Time as the engine sees it: a monotonic reading and a way to wait."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass
class Retrier:
    """Runs a call under a retry policy, recording every failed attempt."""

    policy: RetryPolicy
    clock: Clock
    rng: random.Random = field(default_factory=random.Random)
    retryable: Callable[[StepError], bool] | None = None
    on_attempt: Callable[[Attempt], None] | None = None

    def call(self, function: Callable[[], T]) -> T:
        attempts: list[Attempt] = []
        started = self.clock.monotonic()
        self._planned: dict[int, float] = {}
        self._refused: str | None = None  # why a wait the server asked for was not taken
        self._parking = PARKING.get()
        if self._parking is not None and self._parking.prior_attempts:  # for this call only
            PARKING.set(Parking(self._parking.after))
        self._prior = self._parking.prior_attempts if self._parking else 0
        retrying = tenacity.Retrying(
            stop=self._stop(started),
            wait=self._wait,
            retry=tenacity.retry_if_exception(self._should_retry),
            sleep=lambda seconds: self._sleep(seconds, attempts),
            before_sleep=lambda state: self._record(state, attempts),
            reraise=True,
        )
        try:
            return retrying(function)
        except StepError as exc:
            message = f"{exc}; {self._refused}" if self._refused else str(exc)
            attempts.append(Attempt(len(attempts) + self._prior + 1, exc.kind, message, None))
            raise RetriesExhaustedError(attempts, exc) from exc

    def _sleep(self, seconds: float, attempts: list[Attempt]) -> None:
        """Wait, or ask to park the run when the wait is too long to hold a thread."""
        if self._parking is not None and seconds > self._parking.after:
            raise WaitTooLong(seconds, attempts)
        self.clock.sleep(seconds)

    def _should_retry(self, exc: BaseException) -> bool:
        if not isinstance(exc, StepError) or exc.kind not in self.policy.retry_on:
            return False
        return self.retryable(exc) if self.retryable else True

    def _stop(self, started: float) -> Callable[[tenacity.RetryCallState], bool]:
        def stop(state: tenacity.RetryCallState) -> bool:
            if state.attempt_number + self._prior >= self.policy.max_attempts:
                return True
            if self._asked_too_long(state):
                return True
            deadline = self.policy.deadline_seconds
            if deadline is None:
                return False
            elapsed = self.clock.monotonic() - started
            return elapsed + self._wait(state) > deadline

        return stop

    def _asked_too_long(self, state: tenacity.RetryCallState) -> bool:
        """Whether the server asked for a longer wait than the policy allows."""
        asked = _retry_after(state)
        cap = self.policy.max_interval_seconds
        if asked is None or asked <= cap or self._parking is not None:
            return False
        self._refused = (
            f"the server asked to wait {round(asked, 1):g} s, "
            f"more than max_interval_seconds ({cap:g} s)"
        )
        return True

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """The wait after this attempt, drawn once: the deadline check and the sleep
        must see the same jittered value."""
        if state.attempt_number not in self._planned:
            self._planned[state.attempt_number] = self._draw_wait(state)
        return self._planned[state.attempt_number]

    def _draw_wait(self, state: tenacity.RetryCallState) -> float:
        policy = self.policy
        wait = policy.interval_seconds * policy.backoff_rate ** (state.attempt_number - 1)
        wait = min(wait, policy.max_interval_seconds)
        if policy.jitter:
            wait = wait / 2 + self.rng.uniform(0, wait / 2)
        retry_after = _retry_after(state)
        return max(wait, retry_after) if retry_after is not None else wait

    def _record(self, state: tenacity.RetryCallState, attempts: list[Attempt]) -> None:
        error: Any = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else None
        number = state.attempt_number + self._prior
        attempt = Attempt(number, getattr(error, "kind", "error"), str(error), wait)
        attempts.append(attempt)
        if self.on_attempt:
            self.on_attempt(attempt)


def _retry_after(state: tenacity.RetryCallState) -> float | None:
    """The wait the last attempt's error asks for (a server's Retry-After), if any."""
    error = state.outcome.exception() if state.outcome else None
    asked: float | None = getattr(error, "retry_after", None)
    return asked
