"""How people read the review and dead-letter queues, in the terminal (`runner review`,
runner.cli.review_show) and in the browser (the inbox, runner.service.inbox): how long
ago and until when, in which order to take the runs, why each one stopped, and its
audit trail as lines. Words only: the desk decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from runner.core.events import Event, StepFinished, last_visit
from runner.review.proposals import Proposal

_UNITS = (("d", 86400), ("h", 3600), ("m", 60))

# Why a run waits for a person, as the inbox's filter names it (see reason_kind).
REASON_KINDS = {
    "approval": "an approval step",
    "policy": "a policy fired",
    "confidence": "low confidence",
    "in_doubt": "an effect in doubt",
    "other": "an error, a budget or a route",
}


# -- times ------------------------------------------------------------------------------
def span(seconds: float) -> str:
    """A duration in its largest unit that is at least two: `90s`, `59m`, `47h`, `3d`."""
    seconds = max(0, int(seconds))
    for unit, size in _UNITS:
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def age(moment: datetime, at: datetime) -> str:
    """How long ago `moment` was."""
    return span((at - moment).total_seconds())


def due(p: Proposal, at: datetime) -> str:
    """The DUE column: `in 23h`, `overdue 2h`, or `-` when the review never expires."""
    if p.due_at is None:
        return "-"
    left = (p.due_at - at).total_seconds()
    return f"in {span(left)}" if left > 0 else f"overdue {span(-left)}"


def overdue(p: Proposal, at: datetime) -> bool:
    """Whether the run's review expired by `at` (and waits for the expiry to apply)."""
    return p.due_at is not None and p.due_at <= at


# -- the queues ---------------------------------------------------------------------------
def waiting_order(items: Iterable[Proposal], at: datetime) -> list[Proposal]:
    """Escalated runs as a person should take them: overdue first (the most overdue
    first), then the longest waiting first."""

    def key(p: Proposal) -> tuple[bool, datetime, datetime, str]:
        late = overdue(p, at)
        return (not late, p.due_at if late and p.due_at else at, p.run.updated_at, p.run.id)

    return sorted(items, key=key)


def reason(p: Proposal, events: Sequence[Event] = ()) -> str:
    """Why the run stopped, without the step's name in front (it is shown beside it);
    never empty: without a recorded reason, how its step ended."""
    text = p.run.reason or ""
    if text.startswith(f"{p.step_id}: "):
        text = text[len(p.step_id) + 2 :]
    if text:
        return text
    ended = [e for e in last_visit(events, p.step_id) if isinstance(e, StepFinished)]
    if ended:
        error = f": {ended[-1].error['message']}" if ended[-1].error else ""
        return f"{p.step_id} ended {ended[-1].outcome} -> {ended[-1].route}{error}"
    if isinstance(p.run.error, Mapping) and p.run.error.get("message"):
        return f"{p.step_id} failed: {p.run.error['message']}"
    return f"no reason was recorded (the run is {p.run.status})"


def reason_kind(p: Proposal) -> str:
    """Which of REASON_KINDS the run waits for."""
    if p.title is not None:
        return "approval"
    if p.effect_key:
        return "in_doubt"
    if p.hits:
        return "policy"
    if p.score is not None:
        return "confidence"
    return "other"


# -- the audit trail ----------------------------------------------------------------------
@dataclass(frozen=True)
class Line:
    """One line of a timeline: seconds since the run's first event, the step, what
    happened, and how many times in a row it did."""

    offset: float
    step: str
    text: str
    count: int = 1


def timeline(events: Sequence[Event]) -> list[Line]:
    """Events as lines. The same thing happening several times in a row at one step (a
    policy that fires on every card number) is one line, with a count."""
    start = events[0].at if events else None
    lines: list[Line] = []
    for event in events:
        offset = (event.at - start).total_seconds() if start else 0.0
        step, text = event.step_id or "-", event.describe()
        if lines and (lines[-1].step, lines[-1].text) == (step, text):
            last = lines[-1]
            lines[-1] = Line(last.offset, step, text, last.count + 1)
            continue
        lines.append(Line(offset, step, text))
    return lines
