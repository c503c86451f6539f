"""The run page's content: everything `run.html` shows of one run, read from the store
in one go (in a worker thread), for the account that asks."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from runner.core.vocabulary import ENDINGS, RunStatus
from runner.review import reading
from runner.review.proposals import Proposal, outputs_of
from runner.service.inbox import forms, views
from runner.service.inbox.accounts import decider
from runner.service.inbox.app import Inbox
from runner.service.inbox.diagram import steps
from runner.service.inbox.pages import moment
from runner.store.records import Decision, RunRecord
from runner.store.users import UserRecord

STATES: dict[str, str] = {
    RunStatus.ESCALATED: "waiting for a decision",
    RunStatus.FAILED: "failed: in the dead-letter queue",
    RunStatus.COMPLETED: "completed",
    RunStatus.REJECTED: "rejected: closed",
    RunStatus.ARCHIVED: "dropped: archived",
    RunStatus.QUEUED: "queued for a worker",
}
# What the page says after a decision (?done=...): fixed words, never the query's text.
FLASHES = {
    "approved": "Approved.",
    "rejected": "Rejected.",
    "retried": "Sent back to run again.",
    "dropped": "Dropped: its input, error and audit trail stay.",
}


def state_tag(record: RunRecord) -> str:
    """What a decision form carries of the run as it was shown: any decision, expiry or
    step since changes it, and the form is then refused as stale."""
    seen = f"{record.id}|{record.status}|{record.steps_run}|{record.updated_at.isoformat()}"
    return hashlib.sha256(seen.encode()).hexdigest()[:24]


def state_words(record: RunRecord) -> str:
    """Where the run stands, in words."""
    if record.status == RunStatus.RUNNING:
        return "being run by a worker" if record.lease_owner else "queued for a worker"
    return STATES.get(record.status, record.status)


def leads(route: str | None, rejecting: bool = False) -> str:
    """Where a decision leads."""
    if route is None:
        return "Closes the run: nothing more of it runs." if rejecting else ""
    if route in ENDINGS:
        return f"The run ends at {route}."
    return f"The run continues at {route} (a worker takes it from there)."


def who_decides(p: Proposal) -> str:
    return ", ".join(p.reviewers) if p.reviewers else "anyone who sees this flow"


def conflict_words(record: RunRecord, decisions: list[Decision], at: datetime) -> str:
    """What the page says when a decision came too late: where the run stands now, and
    the latest decision on it."""
    said = f"It is now {state_words(record)}."
    last = decisions[-1] if decisions else None
    if last is not None:
        ago = reading.age(last.decided_at, at)
        if last.decision == "expired":
            said += f" Its review expired {ago} ago."
        else:
            said += f" The latest decision: {last.decided_by} {last.decision} it {ago} ago."
    return said + " Nothing you sent was applied; this page shows the run as it stands now."


def run_context(inbox: Inbox, user: UserRecord, run_id: str) -> dict[str, Any]:
    """What the run page shows the account of run `run_id` (404 if it may not see it)."""
    record = inbox.visible(user, run_id)
    compiled = inbox.desk.engine.flow(record.flow_digest)
    waiting = record.status in (RunStatus.ESCALATED, RunStatus.FAILED)
    p = inbox.desk.proposal(record.id, record) if waiting else None
    events = inbox.store.events(record.id)
    stopped = p.step_id if p is not None else None
    at = datetime.now(UTC)
    ctx: dict[str, Any] = {
        "run": record,
        "proposal": p,
        "heading": p.title if p is not None and p.title else f"Run {record.id}",
        "state": state_words(record),
        "seen": state_tag(record),
        "steps": steps(compiled, stopped),
        "stopped": stopped,
        "diagram": inbox.diagrams.available,
        "timeline": reading.timeline(events),
        "history": views.history(inbox.store.decisions(record.id)),
        "nav": "dlq" if record.status == RunStatus.FAILED else "queue",
        "fields": [],
        "edit_problems": [],
        "checked": None,
        "decider": None,
    }
    if p is not None:
        ctx.update(_waiting(inbox, user, p, events, at))
        outputs = outputs_of(inbox.store, record.id)
        ctx["checked"] = views.checked_text(compiled, p, outputs)
    return ctx


def _waiting(
    inbox: Inbox, user: UserRecord, p: Proposal, events: list[Any], at: datetime
) -> dict[str, Any]:
    escalated = p.run.status == RunStatus.ESCALATED
    return {
        "kind_label": reading.REASON_KINDS[reading.reason_kind(p)],
        "reason": reading.reason(p, events),
        "age": reading.age(p.run.updated_at, at),
        "expires": f"{moment(p.due_at)} ({reading.due(p, at)}) -> {p.on_expired}"
        if p.due_at
        else "never",
        "who_decides": who_decides(p),
        "decider": decider(user, p),
        "leads": {
            "approved": leads(p.on_approved),
            "rejected": leads(p.on_rejected, rejecting=True),
        },
        "fields": forms.fields(p.schema, p.content) if escalated and p.editable else [],
    }
