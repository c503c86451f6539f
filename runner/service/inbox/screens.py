"""The inbox's pages that only show: the queues, a run, its diagram; and signing in
and out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response

from runner.core.vocabulary import RunStatus
from runner.review import reading
from runner.service.api_service import in_thread
from runner.service.inbox import views
from runner.service.inbox.accounts import sees, verify
from runner.service.inbox.app import Inbox, Visitor, identify, read_form, show
from runner.service.inbox.diagram import SVG_CSP
from runner.service.inbox.pages import PageError, redirect
from runner.service.inbox.runpage import FLASHES, run_context, state_tag
from runner.service.inbox.sessions import new_session, same_token
from runner.store.users import UserRecord

QUEUE_LIMIT = 1000  # runs a queue reads (sorted by urgency, it must see them all)


async def queue(request: Request, inbox: Inbox, who: Visitor) -> Response:
    """The review queue: overdue first, then the longest waiting."""
    flow = request.query_params.get("flow") or None
    kind = request.query_params.get("reason") or None
    kind = kind if kind in reading.REASON_KINDS else None
    rows, flows = await in_thread(_queue, inbox, who.user, flow, kind)
    return show(
        inbox,
        who,
        "queue.html",
        rows=rows,
        flows=flows,
        flow=flow,
        kind=kind,
        kinds=reading.REASON_KINDS,
        nav="queue",
    )


def _queue(
    inbox: Inbox, user: UserRecord, flow: str | None, kind: str | None
) -> tuple[list[views.QueueRow], list[str]]:
    at = datetime.now(UTC)
    waiting = inbox.desk.queue(RunStatus.ESCALATED, limit=QUEUE_LIMIT)
    seen = [p for p in waiting if sees(user, p.run.flow_name)]
    flows = sorted({p.run.flow_name for p in seen})
    chosen = [
        p
        for p in seen
        if (flow is None or p.run.flow_name == flow)
        and (kind is None or reading.reason_kind(p) == kind)
    ]
    return [views.queue_row(p, at) for p in reading.waiting_order(chosen, at)], flows


async def dead_letters(request: Request, inbox: Inbox, who: Visitor) -> Response:
    """The dead-letter queue: failed runs, newest first."""
    rows = await in_thread(_dead, inbox, who.user)
    all_flows = who.user.role == "admin" or not who.user.flows
    return show(inbox, who, "dlq.html", rows=rows, all_flows=all_flows, nav="dlq")


def _dead(inbox: Inbox, user: UserRecord) -> list[views.DeadRow]:
    at = datetime.now(UTC)
    failed = inbox.desk.queue(RunStatus.FAILED, limit=QUEUE_LIMIT)
    return [views.dead_row(p, at, state_tag(p.run)) for p in failed if sees(user, p.run.flow_name)]


async def run_page(request: Request, inbox: Inbox, who: Visitor) -> Response:
    """A run: why it stopped, what it proposes, and the forms that decide."""
    ctx = await in_thread(run_context, inbox, who.user, request.path_params["id"])
    flash = FLASHES.get(request.query_params.get("done", ""))
    return show(inbox, who, "run.html", flash=flash, conflict=None, problem=None, **ctx)


async def diagram(request: Request, inbox: Inbox, who: Visitor) -> Response:
    """The run's flow as SVG (the stopped step marked), with a policy of its own."""
    svg = await in_thread(_diagram, inbox, who.user, request.path_params["id"])
    if svg is None:
        raise PageError(404, "No diagram", "Graphviz could not draw this flow here.")
    headers = {"Content-Security-Policy": SVG_CSP, "Cache-Control": "private, max-age=300"}
    return Response(svg, media_type="image/svg+xml", headers=headers)


def _diagram(inbox: Inbox, user: UserRecord, run_id: str) -> bytes | None:
    record = inbox.visible(user, run_id)
    compiled = inbox.desk.engine.flow(record.flow_digest)
    return inbox.diagrams.svg(record.flow_digest, compiled, record.failed_step)


async def style_sheet(request: Request) -> Response:
    inbox: Inbox = request.app.state.inbox
    headers = {"Cache-Control": "public, max-age=3600"}
    return Response(inbox.pages.css, media_type="text/css", headers=headers)


# -- signing in and out -------------------------------------------------------------------
def _next(raw: str | None) -> str:
    """Where to go after signing in: a path of this site, else the queue."""
    if raw and raw.startswith("/") and not raw.startswith("//") and "\\" not in raw:
        return raw[:2000]
    return "/"


async def login_page(request: Request) -> Response:
    inbox: Inbox = request.app.state.inbox
    if inbox.auth.header is not None or await identify(inbox, request) is not None:
        return redirect("/")
    return _login_form(inbox, _next(request.query_params.get("next")), "", None)


def _login_form(
    inbox: Inbox,
    next_path: str,
    name: str,
    problem: str | None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """The login page, with a session (no account yet) whose token its form carries."""
    session = new_session()
    response = inbox.pages.render(
        "login.html",
        status,
        headers,
        user=None,
        csrf=session.csrf,
        header_auth=False,
        next=next_path,
        name=name,
        problem=problem,
    )
    inbox.cookies.write(response, session)
    return response


async def login(request: Request) -> Response:
    """Check a name and password; a session for the account, or the form again."""
    inbox: Inbox = request.app.state.inbox
    if inbox.auth.header is not None:
        return redirect("/")
    try:
        sent = await read_form(request, inbox.max_body_bytes)
    except PageError as exc:
        return _login_form(inbox, "/", "", exc.message, exc.status)
    name, next_path = sent.get("name", "").strip()[:64], _next(sent.get("next"))
    if not same_token(inbox.cookies.read(request), sent.get("csrf")):
        return _login_form(
            inbox, next_path, name, "The sign-in form had expired: sign in again.", 403
        )
    keys = [f"name:{name.lower()}", f"address:{request.client.host if request.client else '-'}"]
    wait = inbox.limiter.attempt(keys)
    if wait > 0:
        return _too_many(inbox, next_path, name, wait)
    user = await in_thread(verify, inbox.store, name, sent.get("password", ""))
    if user is None:
        return _login_form(
            inbox, next_path, name, "That name and password do not match an account.", 401
        )
    inbox.limiter.succeeded(keys)
    response = redirect(next_path)
    inbox.cookies.write(response, new_session(user))
    return response


def _too_many(inbox: Inbox, next_path: str, name: str, wait: float) -> Response:
    until = datetime.now(UTC) + timedelta(seconds=wait)
    minutes = max(1, round(wait / 60))
    problem = (
        "Too many failed sign-ins for this name or from this address. Try again after "
        f"{until:%H:%M} UTC (in about {minutes} minute{'s' if minutes != 1 else ''})."
    )
    headers = {"Retry-After": str(int(wait) + 1)}
    return _login_form(inbox, next_path, name, problem, 429, headers=headers)


async def logout(request: Request, inbox: Inbox, who: Visitor, sent: dict[str, str]) -> Response:
    if inbox.auth.header is not None:
        raise PageError(
            400,
            "Signed in by your organisation",
            "This inbox takes who you are from your organisation's sign-on: sign out there.",
        )
    response = redirect("/login")
    inbox.cookies.clear(response)
    return response
