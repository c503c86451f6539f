"""The HTTP intake of `runner serve`: a Starlette app over one run store and one folder
of flows.

    POST /v1/flows/{flow}/runs     queue a run (scope submit; Idempotency-Key optional)
    GET  /v1/runs                  runs, newest first, a page at a time (any token)
    GET  /v1/runs/{id}             one run, with its input, error and steps (any token)
    POST /v1/runs/{id}/approve     decisions (scope review; runner.service.api_review)
         /v1/runs/{id}/reject, /retry, /drop
    GET  /healthz, /metrics, /openapi.json   (no token)
    GET  /, /runs/{id}, /dlq, ...  the review inbox for people (runner.service.inbox)

Every answer is JSON (but /metrics, in Prometheus' text format); every refusal is
`{"error": "<sentence>"}` with a 4xx status (runner.service.api_http). The server only
queues runs and records decisions: `runner worker` processes run the flows.

Tokens (runner.service.tokens) are read from the store and remembered for a couple of
seconds (CACHE_SECONDS): a token revoked with `runner tokens revoke` is refused by a
running server within that time, with no restart.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runner.core.vocabulary import RunStatus
from runner.review.desk import Desk
from runner.runtime.engine import Engine
from runner.service import api_review
from runner.service.api_http import (
    ApiError,
    api_error,
    http_error,
    internal_error,
    read_json,
)
from runner.service.api_openapi import (
    CURSOR,
    DEFAULT_LIMIT,
    IDEMPOTENCY_KEY,
    MAX_LIMIT,
    SUBMISSION,
    document,
)
from runner.service.api_service import Service, in_thread
from runner.service.api_views import (
    CursorError,
    cursor_after,
    cursor_position,
    run_detail,
    run_path,
    run_view,
)
from runner.service.inbox.app import make_inbox
from runner.service.inbox.pages import SecurityHeaders
from runner.service.inbox.routes import routes as inbox_routes
from runner.service.inbox.sessions import AuthSettings
from runner.service.library import FlowLibrary
from runner.service.tokens import CACHE_SECONDS, ScopeError, TokenCheck, TokenError
from runner.store.base import Store
from runner.store.tokens import TokenRecord

DEFAULT_MAX_BODY_BYTES = 1024 * 1024

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Service, TokenRecord], Awaitable[Response]]


def create_app(
    store: Store,
    library: FlowLibrary,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    token_cache_seconds: float = CACHE_SECONDS,
    auth: AuthSettings | None = None,
) -> Starlette:
    """The app over `store` and the flows of `library`, with the review inbox for people
    (runner.service.inbox; `auth` says how it knows them). The caller owns the store."""
    service = Service(
        store=store,
        library=library,
        tokens=TokenCheck(store, ttl=token_cache_seconds),
        desk=Desk(Engine(store), hand_off=True),
        max_body_bytes=max_body_bytes,
    )
    app = Starlette(
        routes=[*_routes(), *inbox_routes()],
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={
            ApiError: api_error,
            HTTPException: http_error,
            Exception: internal_error,
        },
    )
    app.state.service = service
    app.state.openapi = document()
    app.state.inbox = make_inbox(service.desk.engine, auth or AuthSettings(), max_body_bytes)
    return app


def _routes() -> list[Route]:
    def post(path: str, scope: str, handler: Handler) -> Route:
        return Route(path, guarded(scope, handler), methods=["POST"])

    return [
        post("/v1/flows/{flow}/runs", "submit", submit_run),
        Route("/v1/runs", guarded(None, list_runs), methods=["GET"]),
        Route("/v1/runs/{id}", guarded(None, get_run), methods=["GET"]),
        post("/v1/runs/{id}/approve", "review", api_review.approve),
        post("/v1/runs/{id}/reject", "review", api_review.reject),
        post("/v1/runs/{id}/retry", "review", api_review.retry),
        post("/v1/runs/{id}/drop", "review", api_review.drop),
        Route("/healthz", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]


def guarded(scope: str | None, handler: Handler) -> Endpoint:
    """`handler` behind a token check: 401 without a valid token, 403 when its
    scopes do not allow `scope` (None: any valid token may)."""

    async def endpoint(request: Request) -> Response:
        service: Service = request.app.state.service
        header = request.headers.get("authorization")
        try:
            caller = await in_thread(service.tokens.caller, header, scope)
        except TokenError as exc:
            raise ApiError(401, str(exc), {"WWW-Authenticate": "Bearer"}) from None
        except ScopeError as exc:
            raise ApiError(403, str(exc)) from None
        return await handler(request, service, caller)

    return endpoint


async def submit_run(request: Request, service: Service, caller: TokenRecord) -> Response:
    """201 with a new run; 200 with the run an earlier request with this key made."""
    body = await read_json(request, service.max_body_bytes, SUBMISSION)
    key = idempotency_key(request)
    done = await in_thread(service.submit, request.path_params["flow"], body["input"], key)
    headers = {"Location": run_path(done.run.id)}
    return JSONResponse(run_view(done.run), 201 if done.created else 200, headers=headers)


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not re.fullmatch(IDEMPOTENCY_KEY, key):
        raise ApiError(
            400,
            "Idempotency-Key must be 1 to 200 visible ASCII characters (spaces only between them)",
        )
    return key


async def get_run(request: Request, service: Service, caller: TokenRecord) -> Response:
    record, steps, proposal = await in_thread(service.detail, request.path_params["id"])
    return JSONResponse(run_detail(record, steps, proposal))


async def list_runs(request: Request, service: Service, caller: TokenRecord) -> Response:
    """A page of runs, newest first; `next` is the cursor of the page after it."""
    status, flow, limit, before = page_query(request.query_params)
    records, more = await in_thread(service.page, status, flow, limit, before)
    following = cursor_after(records[-1]) if more and records else None
    return JSONResponse({"runs": [run_view(r) for r in records], "next": following})


def page_query(
    params: QueryParams,
) -> tuple[str | None, str | None, int, tuple[datetime, str] | None]:
    """(status, flow, limit, before) of a listing; 400 for a value it cannot take."""
    status = params.get("status")
    if status is not None and status not in {s.value for s in RunStatus}:
        statuses = ", ".join(s.value for s in RunStatus)
        raise ApiError(400, f"status {status!r} is not a run status; they are {statuses}")
    flow = params.get("flow")
    if flow is not None and len(flow) > 200:
        raise ApiError(400, "flow is a flow's name, at most 200 characters")
    raw = params.get("limit", str(DEFAULT_LIMIT))
    if not re.fullmatch(r"[0-9]{1,6}", raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(400, f"limit is a whole number from 1 to {MAX_LIMIT}, not {raw[:20]!r}")
    return status, flow, int(raw), _before(params.get("cursor"))


def _before(cursor: str | None) -> tuple[datetime, str] | None:
    if cursor is None:
        return None
    try:
        if not re.fullmatch(CURSOR, cursor):
            raise CursorError("the cursor is not one this API gave out")
        return cursor_position(cursor)
    except CursorError as exc:
        raise ApiError(400, f"{exc}: pass `next` of a page as it is") from None


async def health(request: Request) -> Response:
    """200 while the store answers; 503 when it does not."""
    service: Service = request.app.state.service
    try:
        flows, problems = await in_thread(service.health)
    except ApiError as exc:
        return JSONResponse({"status": "unavailable", "error": exc.message}, 503)
    return JSONResponse({"status": "ok", "flows": flows, "flow_problems": problems})


async def metrics(request: Request) -> Response:
    """The store's figures in Prometheus' text format (runner.service.figures)."""
    service: Service = request.app.state.service
    # Imported at the first scrape: prometheus_client is loaded only by a server scraped.
    figures: Any = importlib.import_module("runner.service.figures")
    body, content_type = await in_thread(figures.exposition, service.store)
    return Response(body, headers={"Content-Type": content_type})


async def openapi(request: Request) -> Response:
    """The OpenAPI document (runner.service.api_openapi), built once per app."""
    return JSONResponse(request.app.state.openapi)
