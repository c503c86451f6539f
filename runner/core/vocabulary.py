"""runner's vocabulary, defined once: run statuses, endings, step outcomes, error kinds,
effect and decision states, and exit codes.

Each is a `StrEnum` (or `IntEnum` for exit codes) whose values are the strings stored in
the database and shown to people, so a member compares equal to its stored text.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class RunStatus(StrEnum):
    """Where a run stands."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    ESCALATED = "escalated"  # waiting in the review queue
    FAILED = "failed"  # in the dead-letter queue
    REJECTED = "rejected"  # closed by a person
    ARCHIVED = "archived"  # a dead letter dropped by a person


class Ending(StrEnum):
    """The built-in route targets that end a run."""

    DONE = "done"
    HUMAN_REVIEW = "human_review"
    DEAD_LETTER = "dead_letter"

    @property
    def status(self) -> RunStatus:
        """The status a run has once it reaches this ending."""
        return ENDING_STATUS[self]


ENDING_STATUS: dict[Ending, RunStatus] = {
    Ending.DONE: RunStatus.COMPLETED,
    Ending.HUMAN_REVIEW: RunStatus.ESCALATED,
    Ending.DEAD_LETTER: RunStatus.FAILED,
}
# An ending's name -> the run's final status, for lookups by the stored position text.
ENDINGS: dict[str, RunStatus] = {str(e): s for e, s in ENDING_STATUS.items()}
STOPS = (Ending.HUMAN_REVIEW, Ending.DEAD_LETTER)  # endings a person looks at


class Outcome(StrEnum):
    """How a step ended: each outcome is a trigger on the run's compiled machine.
    A switch's branches are triggers too: `branch(n)` and `DEFAULT`."""

    OK = "ok"
    ERROR = "error"
    LOW_CONFIDENCE = "low_confidence"
    VIOLATION = "violation"
    IN_DOUBT = "in_doubt"
    BUDGET_EXCEEDED = "budget_exceeded"
    DEFAULT = "default"  # no switch branch matched
    AWAITING_APPROVAL = "awaiting_approval"  # an approval step waits for a person
    APPROVED = "approved"  # a person approved the stopped step's output
    REJECTED = "rejected"  # a person rejected an approval (its `on_rejected` route)
    EXPIRED = "expired"  # nobody decided in time (its `on_expired` route)


_BRANCH = "case_"


def branch(number: int) -> str:
    """The trigger of a switch's branch `number` (counted from 1)."""
    return f"{_BRANCH}{number}"


def branch_number(trigger: str) -> int | None:
    """The branch number a trigger names, or None for any other trigger."""
    if trigger.startswith(_BRANCH) and trigger[len(_BRANCH) :].isdigit():
        return int(trigger[len(_BRANCH) :])
    return None


class ErrorKind(StrEnum):
    """Why a step or call failed; retry rules (`retry_on`) name these."""

    ERROR = "error"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    HTTP_3XX = "http_3xx"
    HTTP_429 = "http_429"
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    SMTP_4XX = "smtp_4xx"
    SMTP_5XX = "smtp_5xx"
    INVALID_INPUT = "invalid_input"
    INVALID_OUTPUT = "invalid_output"
    IN_DOUBT = "in_doubt"
    EXCEPTION = "exception"
    TEMPLATE = "template"
    INJECTED = "injected"
    UNSUPPORTED = "unsupported"
    BUDGET_EXCEEDED = "budget_exceeded"
    MAX_TURNS = "max_turns"


class EffectStatus(StrEnum):
    """A row of the effect ledger."""

    STARTED = "started"
    DONE = "done"
    FAILED = "failed"


class DecisionKind(StrEnum):
    """What a person (or an expiry) decided about a stopped run."""

    APPROVED = "approved"
    REJECTED = "rejected"
    RETRIED = "retried"
    EXPIRED = "expired"
    DROPPED = "dropped"


class ExitCode(IntEnum):
    """The `runner` command's exit codes."""

    OK = 0
    FAILED = 1  # an invalid flow, a refused input, a failed or rejected run
    USAGE = 2
    INTERNAL = 3  # a bug: the message says where the traceback was written
    ESCALATED = 4  # the run waits for human review
    INTERRUPTED = 130


STATUS_EXIT: dict[str, ExitCode] = {
    RunStatus.COMPLETED: ExitCode.OK,
    RunStatus.ESCALATED: ExitCode.ESCALATED,
}


def exit_code(status: str) -> ExitCode:
    """The exit code of a command that leaves a run in `status`."""
    return STATUS_EXIT.get(status, ExitCode.FAILED)
