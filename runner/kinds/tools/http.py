"""`http` tools: one HTTP request, rendered from templates, sent with httpx.

httpx is imported when a flow's http tool is first made ready, never by `runner
validate`. Failures become ToolErrors whose kind the retry rules understand (timeout,
connection, http_429, http_5xx, http_4xx, http_3xx, invalid_output); a failure that may
have reached the server says so (`maybe_sent`), since an effect's outcome is then unknown:
a timeout or a dropped connection once the request started to go out, a 5xx, a response
too large to keep. A refused connection, a 429 or a 4xx did not act on it.
`timeout_seconds` is the deadline of the whole call, and a response is read up to the
tool's `max_output_bytes`, no further.
A request that cannot be sent (a header value with a newline, a broken URL) fails as
invalid_input, naming the header or the URL but never the value: it may hold a secret.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Callable, Mapping
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
    """Sends the rendered request with httpx; an effect's key goes as `Idempotency-Key`.

    The client is made once, and each request is built by `prepare`, before an effect's
    ledger says `started`: after that only sending is left. The call's timeout is the
    deadline of all of it, and output past `max_output_bytes` is not read (`_Exchange`).
    No connection and no cookie is kept from one call to the next: a kept connection
    the server closed would fail a request that may or may not have gone out.
    """

    def __init__(self, tool: Tool, *, http_transport: Any = None) -> None:
        import http.cookiejar

        import httpx  # here, not at the call: an effect's in-doubt window stays short

        self.tool = tool
        self.httpx = httpx
        self.traced = http_transport is None  # httpcore says when a request goes out
        keep_none = http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
        self.client = httpx.Client(
            transport=http_transport,
            limits=httpx.Limits(max_keepalive_connections=0),
            cookies=http.cookiejar.CookieJar(policy=keep_none),
        )

    def __call__(self, call: Call) -> Any:
        return self.prepare(call)()

    def prepare(self, call: Call) -> Callable[[], Any]:
        """The call, ready to send: a request that cannot be sent fails here."""
        httpx = self.httpx
        request = dict(call.request or {})
        headers = dict(request.get("headers") or {})
        if call.idempotency_key is not None:
            headers.setdefault("Idempotency-Key", call.idempotency_key)
        problem = _unsendable(httpx, request["url"], headers)
        if problem:  # said without the value: it may hold a secret, in any escaped form
            raise ToolError(problem, ErrorKind.INVALID_INPUT)
        built = self.client.build_request(
            request["method"],
            request["url"],
            headers=headers,
            params=request.get("query") or None,
            json=request.get("json"),
            content=request.get("body"),
            timeout=call.timeout_seconds,
        )
        return functools.partial(self._send, built, call.timeout_seconds)

    def _send(self, request: Any, timeout: float) -> Any:
        exchange = _Exchange(self, request)
        try:
            response, body = exchange.within(timeout)
        except ToolError:
            raise
        except Exception as exc:
            failure = self._failure(exc, timeout, exchange.maybe_sent(exc))
            if failure is exc:
                raise
            raise failure from exc
        return _response_value(response, body)

    def _failure(self, exc: Exception, timeout: float, sent: bool) -> Exception:
        """A failed exchange as a ToolError whose kind the retry rules understand; an
        error that is no failure of the exchange is a bug, and stays as it is."""
        httpx = self.httpx
        if isinstance(exc, httpx.TimeoutException):
            return ToolError(f"timed out after {timeout:g}s", ErrorKind.TIMEOUT, maybe_sent=sent)
        if isinstance(exc, httpx.LocalProtocolError):  # its words may quote a header's value
            return ToolError(
                "the request cannot be sent as written: HTTP does not allow its headers "
                "(a Content-Length or Transfer-Encoding that does not fit the body?)",
                ErrorKind.INVALID_INPUT,
            )
        if isinstance(exc, httpx.TransportError):
            return ToolError(
                f"connection failed: {exc or type(exc).__name__}",
                ErrorKind.CONNECTION,
                maybe_sent=sent,
            )
        return exc


class _Exchange:
    """One request and its response, on a thread of their own, so that the call's
    timeout is a deadline for all of it: connecting, sending, waiting, reading (httpx's
    timeouts hold for each read, and a server sending a byte at a time never trips
    them). httpcore's trace tells when the request starts to go out: a failure before
    that never reached the server, and once the caller has given up nothing is sent."""

    def __init__(self, tool: HttpTool, request: Any) -> None:
        self.tool = tool
        self.lock = threading.Lock()
        self.sending = False  # the request has started to go out
        self.abandoned = False  # the caller gave up: send nothing, read no more
        self.done = threading.Event()
        self.outcome: tuple[Any, bytes] | None = None
        self.error: Exception | None = None
        extensions = {**request.extensions, "trace": self._trace}
        # A copy per attempt: an abandoned attempt's thread must not trace into the next.
        self.request = tool.httpx.Request(
            request.method,
            request.url,
            headers=request.headers,
            stream=request.stream,
            extensions=extensions,
        )

    def within(self, timeout: float) -> tuple[Any, bytes]:
        """The response and its body, or the exchange's error; httpx's
        TimeoutException once `timeout` seconds have passed."""
        name = f"http-{self.tool.tool.name}"
        threading.Thread(target=self._exchange, name=name, daemon=True).start()
        if not self.done.wait(timeout):
            with self.lock:
                self.abandoned = True
            raise self.tool.httpx.TimeoutException(f"no answer within {timeout:g}s")
        if self.error is not None:
            raise self.error
        assert self.outcome is not None
        return self.outcome

    def maybe_sent(self, exc: Exception) -> bool:
        """Whether the request may have reached the server before `exc`."""
        httpx = self.tool.httpx
        if not self.tool.traced:  # another transport (a test's): judge by the error
            return not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
        with self.lock:
            return self.sending

    def _trace(self, name: str, info: Mapping[str, Any]) -> None:
        if name.endswith(".send_request_headers.started"):
            with self.lock:
                if self.abandoned:
                    raise _AbandonedError(name)
                self.sending = True

    def _exchange(self) -> None:
        try:
            response = self.tool.client.send(self.request, stream=True)
            try:
                self.outcome = response, self._body(response)
            finally:
                response.close()
        except Exception as exc:  # the caller's thread raises it
            self.error = exc
        finally:
            self.done.set()

    def _body(self, response: Any) -> bytes:
        """The body, up to the tool's `max_output_bytes`; of an error, its start."""
        limit = self.tool.tool.max_output_bytes
        failed = response.status_code >= 300
        size, chunks = 0, []
        for chunk in response.iter_bytes():
            if self.abandoned or (failed and size >= _ERROR_BODY):
                break
            size += len(chunk)
            if size > limit and not failed:
                raise ToolError(
                    f"the response is larger than max_output_bytes ({limit:,} bytes)",
                    ErrorKind.INVALID_OUTPUT,
                    maybe_sent=True,  # it was answered: an effect happened
                )
            chunks.append(chunk)
        return b"".join(chunks)


class _AbandonedError(Exception):
    """Stops a request from going out after its caller gave up waiting."""


_ERROR_BODY = 4096  # bytes of an error response read for its message


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _unsendable(httpx: Any, url: str, headers: Mapping[str, str]) -> str | None:
    """Why httpx would refuse to send this request, named by the header or the URL and
    never by its value (a secret, from a file, often ends in a newline)."""
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            return f"`{name}` is not a valid HTTP header name"
        if not value.isascii():
            return f"header `{name}` holds a non-ASCII character, which HTTP headers cannot carry"
        if _CONTROL.search(value) or value != value.strip(" \t"):
            return (
                f"header `{name}` holds a line break, another control character or a space "
                "at either end, which HTTP header values cannot carry (a value read from a "
                "file often ends in a newline)"
            )
    try:
        httpx.URL(url)
    except httpx.InvalidURL:
        why = (
            "it holds a line break or another control character"
            if _CONTROL.search(url)
            else "its host or port cannot be read"
        )
        return f"url is not a valid URL: {why}"
    return None


def _response_value(response: Any, body: bytes) -> Any:
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
        # A 5xx reached the server, which may have acted on it; a 429 or 4xx was refused.
        raise ToolError(
            f"HTTP {status}: {_text(response, body)[:200]}",
            kind,
            retry_after,
            maybe_sent=status >= 500,
        )
    if not body:
        return None
    if "json" in response.headers.get("Content-Type", ""):
        try:
            return json.loads(body)
        except RecursionError as exc:
            raise ToolError(
                "malformed JSON in the response: nested too deep", ErrorKind.INVALID_OUTPUT
            ) from exc
        except ValueError as exc:
            raise ToolError(
                f"malformed JSON in the response: {exc}", ErrorKind.INVALID_OUTPUT
            ) from exc
    return _text(response, body)


def _text(response: Any, body: bytes) -> str:
    return body.decode(response.encoding or "utf-8", errors="replace")


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
