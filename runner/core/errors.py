"""The errors runner raises, under one root.

    RunnerError
     +-- FlowError        an author's mistake in a flow or test file; carries every Problem
     +-- UsageError       a command used wrongly (bad option, missing file)
     +-- InputError       run input refused: fails the flow's input schema, or too large
     +-- StoreError       the database cannot be opened or is in an unexpected state
     +-- StepError        a step failed at run time; its error route is taken
          +-- ToolError   a tool call failed; `kind` says how (timeout, connection, ...)
          +-- LLMError    a model call failed or its answer stayed invalid
          +-- RetriesExhaustedError  every attempt failed; carries each one
          +-- BudgetExceededError    a run reached its budget before a model call

Author mistakes are reported as located problems and never as tracebacks; run-time
failures name the run, the step and the step's line in the flow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.core.vocabulary import ErrorKind


@dataclass(frozen=True, order=True)
class Problem:
    """One located problem in an author's file: `file:line:col: path: message`.

    A problem's `severity` is "error" (the file cannot be used) or "warning" (it can,
    but something looks wrong; printed `file:line:col: warning: path: message`)."""

    file: str
    line: int
    col: int
    path: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        warning = "warning: " if self.severity == "warning" else ""
        return f"{self.file}:{self.line}:{self.col}: {warning}{self.path}: {self.message}"


class RunnerError(Exception):
    """Root of every error runner raises on purpose."""


class FlowError(RunnerError):
    """A flow (or flow test) file has problems; `problems` holds all of one stage, sorted."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


class UsageError(RunnerError):
    """The command line asks for something that cannot be done as asked."""


class InputError(RunnerError):
    """The input of a run was refused before any step ran."""


class StoreError(RunnerError):
    """The run store cannot be used: wrong URL, unknown run, unexpected state.
    `transient` when it may pass by itself (the server unreachable for a moment, a
    SQLite file locked by another process): the same write may be tried again."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class StepError(RunnerError):
    """A step failed at run time. `kind` classifies it for retry rules and routes."""

    def __init__(self, message: str, kind: str = "error") -> None:
        self.kind = kind
        super().__init__(message)


class ToolError(StepError):
    """A tool call failed: kind is timeout, connection, http_429, http_5xx, http_4xx,
    invalid_input, invalid_output, in_doubt or exception."""

    def __init__(
        self, message: str, kind: str, retry_after: float | None = None, *, maybe_sent: bool = False
    ) -> None:
        self.retry_after = retry_after
        # True when the call may have reached the other side before it failed (a read
        # timeout, a dropped connection): for an effect, its outcome is unknown.
        self.maybe_sent = maybe_sent
        super().__init__(message, kind)


class LLMError(StepError):
    """A model call failed, or its answer stayed invalid after every repair. `kind` uses
    the tool error classes (timeout, connection, http_429, http_5xx, http_4xx,
    invalid_output), so one retry policy language covers both."""

    def __init__(self, message: str, kind: str = "error", retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        self.detail: str | None = None  # the model library's own words, for the audit trail
        super().__init__(message, kind)


@dataclass(frozen=True)
class Attempt:
    """One failed attempt: what went wrong and how long was waited after it."""

    number: int
    kind: str
    message: str
    wait_seconds: float | None


class RetriesExhaustedError(StepError):
    """Every attempt failed (or the failure was not one to retry); carries each error."""

    def __init__(self, attempts: list[Attempt], last: StepError) -> None:
        self.attempts = attempts
        self.last = last
        count = len(attempts)
        summary = attempts_summary(attempts)
        super().__init__(f"failed after {count} attempt{'s' * (count != 1)}: {summary}", last.kind)


def attempts_summary(attempts: list[Attempt]) -> str:
    """Each attempt's error, the same error of attempts in a row said once:
    `#1-3 http_5xx: the model service answered 500 (a server error): upstream failed`."""
    runs: list[list[Any]] = []  # [first, last, kind, message]
    for a in attempts:
        if runs and runs[-1][2:] == [a.kind, a.message] and runs[-1][1] == a.number - 1:
            runs[-1][1] = a.number
        else:
            runs.append([a.number, a.number, a.kind, a.message])
    return "; ".join(
        f"#{first}{f'-{last}' if last != first else ''} {kind}: {message}"
        for first, last, kind, message in runs
    )


class BudgetExceededError(StepError):
    """A run reached one of its flow's budget limits before a model call."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ErrorKind.BUDGET_EXCEEDED)


def crash_report(db_url: str | None = None, flow_file: str | None = None) -> str:
    """Write the exception being handled to a file and return its path: an internal
    error says it is a bug and where its traceback is, instead of showing it.

    The report goes beside the store at `db_url` (else RUNNER_DB, else the default
    store: `.runner/crashes/`), the newest 20 are kept, and secrets are taken out: those
    `flow_file` reads and every environment variable whose name looks secret (see
    runner.core.crashes)."""
    import traceback

    from runner.core import crashes

    return str(crashes.write(traceback.format_exc(), db_url, flow_file))
