"""The review inbox: the pages `runner serve` serves to people, at `/`.

    GET  /                       the review queue (filters: flow, reason; overdue first)
    GET  /dlq                    the dead-letter queue (retry, drop)
    GET  /runs/{id}              a run: why it stopped, what it proposes, its input, its
                                 timeline, its flow's diagram, its decisions; the forms
    GET  /runs/{id}/diagram.svg  the flow's diagram, the stopped step marked
    POST /runs/{id}/approve, /edit (the diff, before approving), /reject, /retry, /drop
    GET  /login, POST /login, POST /logout
    GET  /static/inbox.css

Who is asking (runner.service.inbox.sessions) and what they may see and decide
(runner.service.inbox.accounts) are checked on every request; every POST carries its
session's CSRF token. Decisions go through the same desk as `runner review`, with
`hand_off`: the run is left for a `runner worker`, never run by a web request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from runner.core.errors import StoreError
from runner.review.desk import Desk
from runner.runtime.engine import Engine
from runner.service.api_http import ApiError
from runner.service.api_service import in_thread, refused
from runner.service.inbox.accounts import ADMIN, sees
from runner.service.inbox.diagram import Diagrams
from runner.service.inbox.pages import PageError, Pages, redirect
from runner.service.inbox.sessions import (
    KEY_NAME,
    AuthSettings,
    LoginLimiter,
    Session,
    SessionCookies,
    fingerprint,
    new_session,
    same_token,
)
from runner.store.base import Store
from runner.store.records import RunRecord
from runner.store.users import UserRecord

MAX_FIELDS = 200  # fields of one form (an edit form has one per value)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


@dataclass
class Inbox:
    """Everything the inbox's requests use."""

    store: Store
    desk: Desk  # checks each step's `reviewers`
    admin_desk: Desk  # for admins, who may decide anything they see
    pages: Pages
    cookies: SessionCookies
    limiter: LoginLimiter
    diagrams: Diagrams
    auth: AuthSettings
    max_body_bytes: int

    def desk_for(self, user: UserRecord) -> Desk:
        return self.admin_desk if user.role == ADMIN else self.desk

    def visible(self, user: UserRecord, run_id: str) -> RunRecord:
        """The run with exactly this id, if the account may see it; a 404 otherwise,
        the same for a run that is not there and one of a flow it may not see."""
        record: RunRecord | None
        try:
            record = self.store.run(run_id)
        except StoreError as exc:  # none, or an ambiguous prefix; unless the store failed
            if refused(exc, 404).status == 503:
                raise
            record = None
        if record is None or record.id != run_id or not sees(user, record.flow_name):
            raise PageError(404, "No such run", f"There is no run {run_id} here.")
        return record


def make_inbox(engine: Engine, auth: AuthSettings, max_body_bytes: int) -> Inbox:
    """The inbox over the engine's store (its signing key is read, or made, here)."""
    store = engine.store
    return Inbox(
        store=store,
        desk=Desk(engine, hand_off=True),
        admin_desk=Desk(engine, hand_off=True, any_reviewer=True),
        pages=Pages(),
        cookies=SessionCookies(store.service_key(KEY_NAME), auth),
        limiter=LoginLimiter(),
        diagrams=Diagrams(),
        auth=auth,
        max_body_bytes=max_body_bytes,
    )


@dataclass(frozen=True)
class Visitor:
    """The person asking: their account and session (`fresh`: its cookie is new)."""

    user: UserRecord
    session: Session
    fresh: bool = False


Endpoint = Callable[[Request], Awaitable[Response]]
PageHandler = Callable[[Request, Inbox, Visitor], Awaitable[Response]]
FormHandler = Callable[[Request, Inbox, Visitor, dict[str, str]], Awaitable[Response]]


def show(
    inbox: Inbox,
    who: Visitor | None,
    template: str,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **ctx: Any,
) -> Response:
    """A page, with what every page shows of the person (name, role, CSRF token)."""
    return inbox.pages.render(
        template,
        status,
        headers,
        user=who.user if who else None,
        csrf=who.session.csrf if who else "",
        header_auth=inbox.auth.header is not None,
        **ctx,
    )


async def identify(inbox: Inbox, request: Request) -> Visitor | None:
    """Who asks; None when nobody is signed in (passwords) or PageError (a header)."""
    session = inbox.cookies.read(request)
    if inbox.auth.header is not None:
        return await _by_header(inbox, request, inbox.auth.header, session)
    if session is None or session.user is None:
        return None
    user = await in_thread(inbox.store.user, session.user)
    if user is None or user.disabled_at is not None or fingerprint(user) != session.key:
        return None
    return Visitor(user, session)


async def _by_header(
    inbox: Inbox, request: Request, header: str, session: Session | None
) -> Visitor:
    name = request.headers.get(header, "").strip()
    if not name:
        raise PageError(
            401,
            "Not signed in",
            f"This inbox takes your name from the {header} header, which the sign-on proxy "
            "in front of it sets; this request came without it. Open the inbox through "
            "the proxy's address.",
            link=("/", "Try again"),
        )
    user = await in_thread(inbox.store.user, name) if len(name) <= 64 else None
    if user is None or user.disabled_at is not None:
        raise PageError(
            403,
            "No inbox account",
            f"{name[:64]} has no inbox account here, or it is disabled. An administrator "
            f"adds it with: runner users add {name[:64]} --role reviewer --no-password",
            link=("/", "Try again"),
        )
    if session is not None and session.user == user.name:
        return Visitor(user, session)
    return Visitor(user, new_session(name=user.name), fresh=True)


def page(handler: PageHandler) -> Endpoint:
    """A GET page for a signed-in person (others are sent to the login page)."""

    async def endpoint(request: Request) -> Response:
        inbox: Inbox = request.app.state.inbox
        who = None
        try:
            who = await identify(inbox, request)
            if who is None:
                return redirect("/login?next=" + quote(request.url.path, safe="/"))
            response = await handler(request, inbox, who)
        except (PageError, ApiError) as exc:
            response = refusal(inbox, who, exc)
        return _with_cookie(inbox, who, response)

    return endpoint


def form(handler: FormHandler) -> Endpoint:
    """A POST from a form of a signed-in person, with its session's CSRF token."""

    async def endpoint(request: Request) -> Response:
        inbox: Inbox = request.app.state.inbox
        who = None
        try:
            who = await identify(inbox, request)
            if who is None:
                raise PageError(
                    401,
                    "Signed out",
                    "Your session ended (it lasts 8 hours, and a new password ends it), so "
                    "nothing was applied. Sign in again and repeat.",
                    link=("/login", "Sign in"),
                )
            sent = await read_form(request, inbox.max_body_bytes)
            if not same_token(who.session, sent.get("csrf")):
                raise forged()
            response = await handler(request, inbox, who, sent)
        except (PageError, ApiError) as exc:
            response = refusal(inbox, who, exc)
        return _with_cookie(inbox, who, response)

    return endpoint


def forged() -> PageError:
    """The refusal of a form without its session's CSRF token."""
    return PageError(
        403,
        "This form has expired",
        "The form came without its security token, or with one from another session "
        "(from before you signed in again, or from another site). Nothing was applied: "
        "open the page again and repeat.",
    )


def refusal(inbox: Inbox, who: Visitor | None, exc: PageError | ApiError) -> Response:
    if isinstance(exc, ApiError):  # the store failed (503), or a body too large (413)
        exc = PageError(exc.status, "The inbox cannot do that now", exc.message)
    return show(
        inbox,
        who,
        "message.html",
        exc.status,
        title=exc.title,
        message=exc.message,
        link=exc.link,
        headers=exc.headers,
    )


def _with_cookie(inbox: Inbox, who: Visitor | None, response: Response) -> Response:
    if who is not None and who.fresh:
        inbox.cookies.write(response, who.session)
    return response


async def read_form(request: Request, limit: int) -> dict[str, str]:
    """A form's fields (the first value of each), within the body limit."""
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        raise PageError(411, "Not a form", "A form is sent with its length (Content-Length).")
    if int(declared) > limit:
        raise PageError(413, "Too large", f"The form is over the limit of {limit:,} bytes.")
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media not in FORM_TYPES:
        raise PageError(415, "Not a form", "This takes a form (a page of this inbox sends it).")
    data = await request.form(max_files=0, max_fields=MAX_FIELDS, max_part_size=limit)
    sent: dict[str, str] = {}
    for key, value in data.multi_items():
        if isinstance(value, str):
            sent.setdefault(key, value)
    return sent
