"""People's decisions through the API: approve, reject or retry an escalated run; retry
or drop a failed one. The same desk as `runner review` and `runner dlq`, with the same
checks (an approval names the hash of what was seen, an edit must fit the output schema
and the policies), with two differences:

- the decision is the token's (`decided_by` is `api:<token name>`), never a name the
  request gives. A token named `Lena (finance)` decides for the group `finance`.
- a decision that sends the run on leaves it running and unleased, for a `runner worker`
  to claim: an HTTP request never runs a flow.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runner.core.vocabulary import RunStatus
from runner.review.desk import Desk
from runner.service.api_http import ApiError, checked, read_json, read_object
from runner.service.api_openapi import APPROVAL, DROP, REJECTION, RETRY
from runner.service.api_service import Service, in_thread
from runner.service.api_views import run_view
from runner.store.tokens import TokenRecord

RETRIED = (RunStatus.ESCALATED.value, RunStatus.FAILED.value)


def decider(caller: TokenRecord) -> str:
    """Who a decision is recorded as: the token, never a name in the request."""
    return f"api:{caller.name}"


async def approve(request: Request, service: Service, caller: TokenRecord) -> Response:
    body = await read_object(request, service.max_body_bytes)
    if isinstance(body, dict) and "value" in body and "set" in body:
        raise ApiError(400, "give `value` (a replacement) or `set` (changes), not both")
    body = checked(body, APPROVAL)

    def act(desk: Desk, run_id: str) -> Any:
        return desk.approve(
            run_id,
            decider(caller),
            content=body.get("value"),
            edited="value" in body,
            sets=tuple(body.get("set", ())),
            note=body.get("note"),
            expect_hash=body["hash"],
            override=body.get("override"),
        )

    return await _decided(request, service, act)


async def reject(request: Request, service: Service, caller: TokenRecord) -> Response:
    body = await read_json(request, service.max_body_bytes, REJECTION)
    return await _decided(
        request, service, lambda desk, run_id: desk.reject(run_id, decider(caller), body["reason"])
    )


async def retry(request: Request, service: Service, caller: TokenRecord) -> Response:
    body = await read_json(request, service.max_body_bytes, RETRY, optional=True)

    def act(desk: Desk, run_id: str) -> Any:
        return desk.retry(
            run_id, decider(caller), body.get("from_step"), body.get("note"), statuses=RETRIED
        )

    return await _decided(request, service, act)


async def drop(request: Request, service: Service, caller: TokenRecord) -> Response:
    body = await read_json(request, service.max_body_bytes, DROP, optional=True)
    return await _decided(
        request, service, lambda desk, run_id: desk.drop(run_id, decider(caller), body.get("note"))
    )


async def _decided(request: Request, service: Service, act: Any) -> Response:
    record = await in_thread(service.decide, request.path_params["id"], act)
    return JSONResponse(run_view(record))
