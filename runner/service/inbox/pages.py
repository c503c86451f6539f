"""The inbox's HTML: Jinja2 templates rendered on the server, and the headers every
response carries.

Templates live in `templates/` beside this module, the style sheet in `static/` (both
ship in the wheel with the package). The environment is sandboxed, autoescapes every
value and refuses undefined names (StrictUndefined): whatever a run holds (input, model
answers, tool outputs) reaches a page as text, never as markup. The only markup built in
Python is runner.service.inbox.views.marked, which escapes the text first.

The pages run no script and carry no inline style, so the Content-Security-Policy
allows neither (`default-src 'none'`): an injected tag that slipped past the escaping
could still not run. The flow's diagram is an SVG image of its own route, with its own
policy (runner.service.inbox.diagram).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from starlette.datastructures import MutableHeaders
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runner.core.errors import RunnerError

HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# Every response of `runner serve` (pages, redirects, errors, the API's JSON) has these,
# unless it sets its own (the diagram's SVG sets a stricter policy).
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
NO_STORE = {"Cache-Control": "no-store"}  # pages show people's data: not for caches


class PageError(RunnerError):
    """A request the inbox refuses, as a page: its status, a title, a sentence, and
    what to do next (a link)."""

    def __init__(
        self,
        status: int,
        title: str,
        message: str,
        *,
        link: tuple[str, str] = ("/", "Back to the queue"),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message
        self.link = link
        self.headers = dict(headers or {})


class SecurityHeaders:
    """ASGI middleware: SECURITY_HEADERS on every response that does not set them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, sending)


def pretty(value: Any) -> str:
    """A JSON value as indented text (to be escaped by the template, like any text)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def moment(value: datetime | None) -> str:
    """A stored time as people read it: `2026-11-30 14:05 UTC`."""
    if value is None:
        return "-"
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def path_part(value: Any) -> str:
    """A value as one segment of a URL path (a run id)."""
    return quote(str(value), safe="")


class Pages:
    """The templates, and responses made from them."""

    def __init__(self) -> None:
        self.env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(pretty=pretty, moment=moment, path_part=path_part)
        self.css = (HERE / "static" / "inbox.css").read_bytes()

    def render(
        self,
        template: str,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        """The page `template` with `context`, and the headers of a page."""
        body = self.env.get_template(template).render(**context)
        return HTMLResponse(body, status, headers={**NO_STORE, **(headers or {})})


def redirect(url: str) -> Response:
    """See other: after a form is handled, the browser GETs the page that shows it."""
    return RedirectResponse(url, status_code=303, headers=NO_STORE)
