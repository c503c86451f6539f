"""The inbox's decisions: approve (as it is, or edited after the diff is shown), reject,
retry from a step, drop a dead letter.

Every form carries the CSRF token of its session (checked in runner.service.inbox.app),
the hash of the proposal it showed and a tag of the run's state (`seen`). A decision is
applied only if the run is still as the form showed it; otherwise nothing is applied
and the page shows the run as it stands now, with 409 (another reviewer decided, the
review expired, the run went on). The desk checks the same again inside the
transaction that records the decision: of two people deciding at once, one wins.

The decision is the account's, never a name a form gives (accounts.decider). Who may
not see the run's flow gets 404, as if the run did not exist; who sees it but is not
one of its reviewers, 403.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from runner.core.errors import InputError, StoreError, UsageError
from runner.core.vocabulary import RunStatus
from runner.review.desk import Desk
from runner.review.edits import diff
from runner.review.proposals import Proposal
from runner.service.api_service import in_thread, refused
from runner.service.inbox import forms, views
from runner.service.inbox.accounts import decider
from runner.service.inbox.app import Inbox, Visitor, show
from runner.service.inbox.pages import PageError, redirect
from runner.service.inbox.runpage import conflict_words, leads, run_context, state_tag
from runner.store.records import RunRecord
from runner.store.users import UserRecord

Act = Callable[[Desk, RunRecord, Proposal, str], object]
ESCALATED = (RunStatus.ESCALATED.value,)
WAITING = (RunStatus.ESCALATED.value, RunStatus.FAILED.value)
MAX_TEXT = 2000  # characters of a note, a reason or an override


class Conflict(Exception):
    """The run is no longer as the form showed it."""


def expected(
    inbox: Inbox, user: UserRecord, run_id: str, sent: dict[str, str], statuses: tuple[str, ...]
) -> tuple[RunRecord, Proposal, str]:
    """The run as the form showed it, its proposal and who decides; 404 if the account
    may not see it, Conflict if it changed, 403 if the account may not decide it."""
    record = inbox.visible(user, run_id)
    if record.status not in statuses or sent.get("seen") != state_tag(record):
        raise Conflict
    proposal = inbox.desk.proposal(record.id, record)
    if sent.get("hash") != proposal.content_hash:
        raise Conflict
    by = decider(user, proposal)
    if by is None:
        allowed = ", ".join(proposal.reviewers)
        raise PageError(
            403,
            "Not yours to decide",
            f"Only {allowed} may decide at {proposal.step_id}; you are signed in as "
            f"{user.name}. Nothing was applied.",
            link=(f"/runs/{quote(run_id, safe='')}", "Back to the run"),
        )
    return record, proposal, by


def text(sent: dict[str, str], name: str) -> str | None:
    """A note, reason or override from the form: trimmed, None when empty."""
    value = sent.get(name, "").strip()[:MAX_TEXT]
    return value or None


async def attempt(
    inbox: Inbox,
    who: Visitor,
    run_id: str,
    sent: dict[str, str],
    statuses: tuple[str, ...],
    act: Act,
) -> str | None:
    """Apply `act` to the run if it is as the form showed it: None once it is, else
    why the desk refused it. Conflict if the run changed."""

    def work() -> None:
        record, proposal, by = expected(inbox, who.user, run_id, sent, statuses)
        desk = inbox.desk_for(who.user)
        try:
            act(desk, record, proposal, by)
        except StoreError as exc:  # decided meanwhile, unless the store itself failed
            if refused(exc, 409).status == 503:
                raise
            raise Conflict from None
        except (InputError, UsageError) as exc:  # its words may quote a text with secrets
            redact = desk.engine.redactor(desk.engine.flow(record.flow_digest))
            raise InputError(str(redact(str(exc)))) from None

    try:
        await in_thread(work)
    except (InputError, UsageError) as exc:
        return str(exc)
    return None


async def decide(
    request: Request,
    inbox: Inbox,
    who: Visitor,
    sent: dict[str, str],
    statuses: tuple[str, ...],
    act: Act,
    done: str,
) -> Response:
    """Apply `act`; the run's page after a redirect, or the page that says why not."""
    run_id = request.path_params["id"]
    try:
        problem = await attempt(inbox, who, run_id, sent, statuses, act)
    except Conflict:
        return await again(inbox, who, run_id, 409)
    if problem is not None:
        return await again(inbox, who, run_id, 422, problem=problem)
    return redirect(f"/runs/{quote(run_id, safe='')}?done={done}")


async def again(inbox: Inbox, who: Visitor, run_id: str, status: int, **extra: Any) -> Response:
    """The run page as the run stands now, with why nothing was applied."""

    def read() -> dict[str, Any]:
        ctx = run_context(inbox, who.user, run_id)
        if status == 409:
            decided = inbox.store.decisions(ctx["run"].id)
            ctx["conflict"] = conflict_words(ctx["run"], decided, datetime.now(UTC))
        return {"conflict": None, "problem": None, "flash": None, **ctx, **extra}

    return show(inbox, who, "run.html", status, **await in_thread(read))


# -- the forms ------------------------------------------------------------------------------
async def approve(request: Request, inbox: Inbox, who: Visitor, sent: dict[str, str]) -> Response:
    """Approve as proposed, or (from the diff page) the edited value it carries."""
    if "value" in sent:
        return await _approve_edited(request, inbox, who, sent)
    note = text(sent, "note")

    def act(desk: Desk, record: RunRecord, p: Proposal, by: str) -> object:
        if p.hits and note is None:
            raise InputError("approving past a policy needs a reason: say why it may go")
        return desk.approve(record.id, by, note=note, expect_hash=p.content_hash)

    return await decide(request, inbox, who, sent, ESCALATED, act, "approved")


async def _approve_edited(
    request: Request, inbox: Inbox, who: Visitor, sent: dict[str, str]
) -> Response:
    try:
        value = json.loads(sent["value"])
    except ValueError:
        raise PageError(400, "Not an edit", "The edited value is not JSON.") from None

    def act(desk: Desk, record: RunRecord, p: Proposal, by: str) -> object:
        return desk.approve(
            record.id,
            by,
            content=value,
            edited=True,
            note=text(sent, "note"),
            expect_hash=p.content_hash,
            override=text(sent, "override"),
        )

    run_id = request.path_params["id"]
    try:
        problem = await attempt(inbox, who, run_id, sent, ESCALATED, act)
        if problem is None:
            return redirect(f"/runs/{quote(run_id, safe='')}?done=approved")
        record, proposal, _ = await in_thread(expected, inbox, who.user, run_id, sent, ESCALATED)
    except Conflict:
        return await again(inbox, who, run_id, 409)
    return confirm(inbox, who, record, proposal, value, sent, 422, problem)  # keep the edit


async def edit(request: Request, inbox: Inbox, who: Visitor, sent: dict[str, str]) -> Response:
    """Read an edit form: the diff to approve, or the form again with what is wrong."""
    run_id = request.path_params["id"]

    def read() -> tuple[RunRecord, Proposal, Any, list[str]]:
        record, proposal, _ = expected(inbox, who.user, run_id, sent, ESCALATED)
        if not proposal.editable:
            raise PageError(422, "Nothing to edit", "This run has nothing to edit.")
        shown = forms.fields(proposal.schema, proposal.content)
        value, problems = forms.edited(shown, proposal.content, sent)
        return record, proposal, value, problems or forms.problems(proposal.schema, value)

    try:
        record, proposal, value, problems = await in_thread(read)
    except Conflict:
        return await again(inbox, who, run_id, 409)
    if problems:
        fields = forms.fields(proposal.schema, value if value is not None else proposal.content)
        return await again(inbox, who, run_id, 422, fields=fields, edit_problems=problems)
    return confirm(inbox, who, record, proposal, value, sent)


def confirm(
    inbox: Inbox,
    who: Visitor,
    record: RunRecord,
    proposal: Proposal,
    value: Any,
    sent: dict[str, str],
    status: int = 200,
    problem: str | None = None,
) -> Response:
    """The diff page: what the edit changes, and the button that approves it."""
    return show(
        inbox,
        who,
        "confirm.html",
        status,
        run=record,
        proposal=proposal,
        heading=proposal.title or f"Run {record.id}",
        changes=views.changes(diff(proposal.content, value)),
        value=json.dumps(value, ensure_ascii=False),
        seen=sent.get("seen", ""),
        note=sent.get("note", ""),
        override=sent.get("override", ""),
        ask_override=bool(proposal.hits) or "polic" in (problem or ""),
        leads={"approved": leads(proposal.on_approved)},
        problem=problem,
        nav="queue",
    )


async def reject(request: Request, inbox: Inbox, who: Visitor, sent: dict[str, str]) -> Response:
    """Reject, with the reason the form requires (and the server too)."""
    reason = text(sent, "reason")

    def act(desk: Desk, record: RunRecord, p: Proposal, by: str) -> object:
        if reason is None:
            raise InputError("a rejection needs a reason: say why, for the record")
        return desk.reject(record.id, by, reason)

    return await decide(request, inbox, who, sent, ESCALATED, act, "rejected")


async def retry(request: Request, inbox: Inbox, who: Visitor, sent: dict[str, str]) -> Response:
    """Run again from a step: an escalated run, or a dead letter."""
    step, note = text(sent, "from_step"), text(sent, "note")

    def act(desk: Desk, record: RunRecord, p: Proposal, by: str) -> object:
        return desk.retry(record.id, by, step, note, statuses=(record.status,))

    return await decide(request, inbox, who, sent, WAITING, act, "retried")


async def drop(request: Request, inbox: Inbox, who: Visitor, sent: dict[str, str]) -> Response:
    """Archive a dead letter."""
    note = text(sent, "note")

    def act(desk: Desk, record: RunRecord, p: Proposal, by: str) -> object:
        desk.drop(record.id, by, note)
        return None

    return await decide(request, inbox, who, sent, (RunStatus.FAILED.value,), act, "dropped")
