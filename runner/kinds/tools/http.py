"""`http` tools: one HTTP request, rendered from templates, sent with httpx.

httpx is imported when a flow's http tool is first made ready, never by `runner
validate`. Failures become ToolErrors whose kind the retry rules understand (timeout,
connection, http_429, http_5xx, http_4xx, http_3xx, invalid_output); a failure that may
have reached the server says so (`maybe_sent`), since an effect's outcome is then unknown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from runner.core import templates
from runner.core.errors import ToolError
from runner.core.vocabulary import ErrorKind
from runner.kinds.base import TOOL_ROOTS, Call, Checks, ToolCall
from runner.lang.model import Tool
from runner.lang.source import strings_in


@dataclass(frozen=True, kw_only=True)
class HttpRequest:
    """The request an http tool sends; string values are templates."""

    method: str
    url: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    json: Any = None
    body: str | None = None
    has_json: bool = False


class Http:
    """The `http` tool kind."""

    name = "http"
    calls_out = True

    def build(self, raw: Any) -> Any:
        has_body = "json" in raw or "body" in raw
        return HttpRequest(
            method=raw.get("method", "POST" if has_body else "GET"),
            url=raw["url"],
            headers=dict(raw.get("headers", {})),
            query=dict(raw.get("query", {})),
            json=raw.get("json"),
            body=raw.get("body"),
            has_json="json" in raw,
        )

    def check(self, checks: Checks, tool: Tool) -> None:
        request, base = tool.spec, (*tool.path, "http")
        checks.template((*base, "url"), request.url, TOOL_ROOTS)
        for part in ("headers", "query"):
            for name, value in getattr(request, part).items():
                checks.template((*base, part, name), value, TOOL_ROOTS)
        if request.body is not None:
            checks.template((*base, "body"), request.body, TOOL_ROOTS)
        for path, value in strings_in(request.json, (*base, "json")):
            checks.template(path, value, TOOL_ROOTS)

    def request(self, tool: Tool, ctx: Mapping[str, Any]) -> Mapping[str, Any] | None:
        http: HttpRequest = tool.spec
        request: dict[str, Any] = {
            "method": http.method,
            "url": str(templates.render(http.url, ctx)),
            "headers": {k: str(templates.render(v, ctx)) for k, v in http.headers.items()},
            "query": {k: str(templates.render(v, ctx)) for k, v in http.query.items()},
        }
        if http.has_json:
            request["json"] = templates.render_tree(http.json, ctx)
        if http.body is not None:
            request["body"] = str(templates.render(http.body, ctx))
        return request

    def connect(self, tool: Tool, *, flow_file: Path, http_transport: Any = None) -> ToolCall:
        return HttpTool(tool, http_transport=http_transport)


class HttpTool:
    """Sends the rendered request with httpx; an effect's key goes as `Idempotency-Key`."""

    def __init__(self, tool: Tool, *, http_transport: Any = None) -> None:
        import httpx  # here, not at the call: an effect's in-doubt window stays short

        self.tool = tool
        self.transport = http_transport
        self.httpx = httpx

    def __call__(self, call: Call) -> Any:
        httpx = self.httpx
        request = dict(call.request or {})
        headers = dict(request.get("headers") or {})
        if call.idempotency_key is not None:
            headers.setdefault("Idempotency-Key", call.idempotency_key)
        try:
            with httpx.Client(transport=self.transport, timeout=call.timeout_seconds) as client:
                response = client.request(
                    request["method"],
                    request["url"],
                    headers=headers,
                    params=request.get("query") or None,
                    json=request.get("json"),
                    content=request.get("body"),
                )
        except httpx.TimeoutException as exc:
            sent = not isinstance(exc, httpx.ConnectTimeout)
            raise ToolError(
                f"timed out after {call.timeout_seconds:g}s", ErrorKind.TIMEOUT, maybe_sent=sent
            ) from exc
        except httpx.TransportError as exc:
            sent = not isinstance(exc, httpx.ConnectError)
            raise ToolError(
                f"connection failed: {exc or type(exc).__name__}",
                ErrorKind.CONNECTION,
                maybe_sent=sent,
            ) from exc
        return _response_value(response)


def _response_value(response: Any) -> Any:
    status = response.status_code
    if 300 <= status < 400:
        where = response.headers.get("Location", "elsewhere")
        raise ToolError(
            f"HTTP {status} redirect to {where}: runner does not follow "
            "redirects; point the tool at the final URL",
            ErrorKind.HTTP_3XX,
        )
    if status >= 400:
        kind = (
            ErrorKind.HTTP_429
            if status == 429
            else (ErrorKind.HTTP_5XX if status >= 500 else ErrorKind.HTTP_4XX)
        )
        retry_after = _retry_after(response.headers.get("Retry-After"))
        body = response.text[:200]
        raise ToolError(f"HTTP {status}: {body}", kind, retry_after)
    if not response.content:
        return None
    if "json" in response.headers.get("Content-Type", ""):
        try:
            return json.loads(response.content)
        except ValueError as exc:
            raise ToolError(
                f"malformed JSON in the response: {exc}", ErrorKind.INVALID_OUTPUT
            ) from exc
    return response.text


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        import datetime

        when = parsedate_to_datetime(value)
        return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


KIND = Http()
