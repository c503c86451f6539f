"""The HTTP edge of `runner serve`: reading JSON request bodies within a size limit, and
turning every refusal into a JSON body `{"error": "<sentence>"}`.

A body is refused before it is read whole when its Content-Length is over the limit,
and while it is read when its bytes pass the limit (a chunked body has no
Content-Length). Bodies are checked against the same JSON Schemas the OpenAPI document
publishes (runner.service.api_openapi), so what the document promises is what the
server enforces. An unexpected exception is a 500 with a body that says it is a bug,
never a traceback; the traceback goes to the server's log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runner.core.errors import RunnerError
from runner.lang.schema import instance_problems

log = logging.getLogger("runner.serve")

JSON_TYPES = ("application/json",)  # and any `+json` type (application/merge-patch+json)


class ApiError(RunnerError):
    """A request the API refuses: its HTTP status, the sentence of its JSON body and
    any headers the status calls for (WWW-Authenticate with a 401)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """`{"error": message}` with `status`."""
    return JSONResponse({"error": message}, status, headers=dict(headers or {}))


async def api_error(request: Request, exc: Exception) -> Response:
    """An ApiError as its JSON body."""
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.headers)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such path, a method the path does not take) in
    the API's words."""
    assert isinstance(exc, HTTPException)
    path = request.url.path
    if exc.status_code == 404:
        message = f"there is no {path} here; /openapi.json lists what there is"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"{path} does not take {request.method}; it takes {allowed}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, message, exc.headers)


async def internal_error(request: Request, exc: Exception) -> Response:
    """Anything unexpected: logged with its traceback, answered without it."""
    log.error(
        "internal error on %s %s: this is a bug in runner",
        request.method,
        request.url.path,
        exc_info=exc,
    )
    return error_response(
        500, "internal error: this is a bug in runner; the server's log has the traceback"
    )


def too_large(limit: int) -> ApiError:
    """The 413 of a body over `limit` bytes."""
    return ApiError(413, f"the request body is over the limit of {limit:,} bytes")


async def read_json(
    request: Request, limit: int, schema: Mapping[str, Any], *, optional: bool = False
) -> dict[str, Any]:
    """The request's JSON body, checked against `schema`. An empty body is `{}` when
    the body is `optional`."""
    return checked(await read_object(request, limit, optional=optional), schema)


async def read_object(request: Request, limit: int, *, optional: bool = False) -> Any:
    """The request's JSON body, parsed (not yet checked)."""
    raw = await read_body(request, limit)
    if not raw:
        if optional:
            return {}
        raise ApiError(400, "this needs a JSON body (an object); see /openapi.json")
    return parse_json(raw)


def checked(value: Any, schema: Mapping[str, Any]) -> dict[str, Any]:
    """`value` if `schema` takes it; else a 400 that lists every problem."""
    problems = instance_problems(dict(schema), value)
    if problems:
        raise ApiError(400, "the request body is refused: " + "; ".join(map(_in_body, problems)))
    assert isinstance(value, dict)
    return value


async def read_body(request: Request, limit: int) -> bytes:
    """The body's bytes, at most `limit` of them (413 beyond), if it is JSON (415 if
    it is something else)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    if declared in (None, "0") and "transfer-encoding" not in request.headers:
        return b""
    if not is_json(request.headers.get("content-type")):
        raise ApiError(415, "the request body must be JSON (Content-Type: application/json)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def is_json(content_type: str | None) -> bool:
    """Whether a Content-Type is JSON (parameters such as charset aside)."""
    media = (content_type or "").partition(";")[0].strip().lower()
    return media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


def parse_json(raw: bytes) -> Any:
    """`raw` parsed as JSON: NaN and Infinity are not JSON, and are refused too."""
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _in_body(problem: str) -> str:
    """A problem as instance_problems words it, placed in the body."""
    whole = "(the value)"
    return "body" + problem[len(whole) :] if problem.startswith(whole) else f"body.{problem}"
