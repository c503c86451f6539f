"""The OpenAPI 3.1 document of `runner serve` (served at /openapi.json).

The request body schemas here are also what the server checks bodies against
(runner.service.api_http.read_json), and IDEMPOTENCY_KEY what it checks that header
against: the document cannot promise one thing while the server enforces another.
Every status the server answers with is listed under its operation.
"""

from __future__ import annotations

from typing import Any

from runner.core.vocabulary import RunStatus

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
MAX_TEXT = 4000  # notes and reasons
# Visible ASCII with spaces inside only: HTTP drops a header value's outer spaces.
IDEMPOTENCY_KEY = r"^[!-~]([ -~]{0,198}[!-~])?$"
CURSOR = r"^[A-Za-z0-9_-]{1,500}$"

_TEXT = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}
_TIME = {"type": "string", "format": "date-time"}

SUBMISSION: dict[str, Any] = {
    "type": "object",
    "required": ["input"],
    "additionalProperties": False,
    "properties": {"input": {"description": "The run's input: any JSON the flow accepts."}},
}
APPROVAL: dict[str, Any] = {
    "type": "object",
    "required": ["hash"],
    "additionalProperties": False,
    "properties": {
        "hash": {
            "type": "string",
            "pattern": "^[0-9a-fA-F]{8,64}$",
            "description": "The proposal's content hash (or its first 8 or more characters) "
            "as the reviewer saw it; the approval is refused if the proposal changed since.",
        },
        "value": {"description": "A replacement for the proposed output (not with `set`)."},
        "set": {
            "type": "array",
            "maxItems": 100,
            "items": {"type": "string", "pattern": "^[^=]+=", "maxLength": MAX_TEXT},
            "description": "`path=value` changes to the proposed output (not with `value`).",
        },
        "note": _TEXT,
        "override": {**_TEXT, "description": "Why an edit that breaks a policy may go anyway."},
    },
    "not": {"required": ["value", "set"]},
}
REJECTION: dict[str, Any] = {
    "type": "object",
    "required": ["reason"],
    "additionalProperties": False,
    "properties": {"reason": _TEXT},
}
RETRY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "from_step": {
            "type": "string",
            "minLength": 1,
            "maxLength": 100,
            "description": "The step to run again from (default: the one it stopped at).",
        },
        "note": _TEXT,
    },
}
DROP: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"note": _TEXT},
}

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "What went wrong, as a sentence."}},
}
_RUN = {
    "type": "object",
    "required": [
        *("id", "flow", "status", "position", "failed_step", "reason", "created_at"),
        *("updated_at", "steps_run", "llm_calls", "tokens", "cost_usd", "due_at", "links"),
    ],
    "properties": {
        "id": {"type": "string"},
        "flow": {"type": "string"},
        "status": {"enum": [s.value for s in RunStatus]},
        "position": {"type": "string", "description": "The step the run is at."},
        "failed_step": {"type": ["string", "null"]},
        "reason": {"type": ["string", "null"]},
        "created_at": _TIME,
        "updated_at": _TIME,
        "steps_run": {"type": "integer", "minimum": 0},
        "llm_calls": {"type": "integer", "minimum": 0},
        "tokens": {"type": "integer", "minimum": 0},
        "cost_usd": {"type": "number", "minimum": 0},
        "due_at": {"type": ["string", "null"], "format": "date-time"},
        "links": {
            "type": "object",
            "required": ["self"],
            "properties": {"self": {"type": "string"}},
        },
    },
}
_STEP = {
    "type": "object",
    "required": ["step_id", "outcome", "route", "attempts", "started_at", "finished_at"],
    "properties": {
        "step_id": {"type": "string"},
        "outcome": {"type": "string"},
        "route": {"type": "string"},
        "attempts": {"type": "integer", "minimum": 0},
        "started_at": _TIME,
        "finished_at": _TIME,
    },
}
_RUN_DETAIL = {
    "allOf": [
        {"$ref": "#/components/schemas/Run"},
        {
            "type": "object",
            "required": ["input", "error", "steps"],
            "properties": {
                "input": {"description": "The run's input."},
                "error": {"description": "The error that failed the run, or null."},
                "steps": {"type": "array", "items": {"$ref": "#/components/schemas/Step"}},
                "proposal": {
                    "type": ["object", "null"],
                    "description": "While the run waits for review: where it stopped, "
                    "what it proposes, and `content_hash`, which an approval names.",
                    "properties": {
                        "step": {"type": "string"},
                        "content_hash": {"type": "string"},
                        "proposed_output": {},
                        "editable": {"type": "boolean"},
                        "reviewers": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    ]
}
_PAGE = {
    "type": "object",
    "required": ["runs", "next"],
    "properties": {
        "runs": {"type": "array", "items": {"$ref": "#/components/schemas/Run"}},
        "next": {
            "type": ["string", "null"],
            "description": "The cursor of the next page; null on the last page.",
        },
    },
}
_HEALTH = {
    "type": "object",
    "required": ["status", "flows", "flow_problems"],
    "properties": {
        "status": {"const": "ok"},
        "flows": {"type": "array", "items": {"type": "string"}},
        "flow_problems": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
            "description": "Flow files that do not compile, with their problems.",
        },
    },
}
_UNHEALTHY = {
    "type": "object",
    "required": ["status", "error"],
    "properties": {"status": {"const": "unavailable"}, "error": {"type": "string"}},
}

_REFUSALS = {
    "400": "The request is malformed (bad JSON, a body or parameter the schema refuses).",
    "401": "No API token, or one that is unknown or revoked.",
    "403": "The token's scopes do not allow this.",
    "404": "No such flow or run.",
    "409": "The request conflicts with the run's state or an earlier request.",
    "413": "The request body is over the server's limit.",
    "415": "The request body is not JSON.",
    "422": "Well-formed, but refused: the flow's input schema, a reviewer's edit.",
    "500": "A bug in runner (the server's log has the traceback).",
    "503": "The run store cannot be reached.",
}


def _json(schema: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(schema, str):
        schema = {"$ref": f"#/components/schemas/{schema}"}
    return {"application/json": {"schema": schema}}


def _responses(ok: dict[str, Any], *codes: str) -> dict[str, Any]:
    """`ok` plus the refusals listed, each an Error body."""
    refused = {code: {"$ref": f"#/components/responses/{code}"} for code in codes}
    return {**ok, **refused}


def _run_answer(text: str, location: bool = False) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": text, "content": _json("Run")}
    if location:
        answer["headers"] = {
            "Location": {"description": "The run's URL.", "schema": {"type": "string"}}
        }
    return answer


def _submit() -> dict[str, Any]:
    key = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "The same key with the same input gets the same run back; "
        "with another input it is a 409.",
        "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY},
    }
    flow = {"name": "flow", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "post": {
            "operationId": "submitRun",
            "summary": "Queue a run of a flow (scope submit); a worker runs it.",
            "parameters": [flow, key],
            "requestBody": {"required": True, "content": _json("Submission")},
            "responses": _responses(
                {
                    "201": _run_answer("The run was queued.", location=True),
                    "200": _run_answer("The run an earlier request with this key made.", True),
                },
                *("400", "401", "403", "404", "409", "413", "415", "422", "500", "503"),
            ),
        }
    }


def _list_runs() -> dict[str, Any]:
    def query(name: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema} | {
            "description": text
        }

    statuses = {"enum": [s.value for s in RunStatus]}
    return {
        "get": {
            "operationId": "listRuns",
            "summary": "Runs, newest first, a page at a time.",
            "parameters": [
                query("status", statuses, "Only runs of this status."),
                query("flow", {"type": "string", "maxLength": 200}, "Only runs of this flow."),
                query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                    f"Runs per page (default {DEFAULT_LIMIT}).",
                ),
                query("cursor", {"type": "string", "pattern": CURSOR}, "`next` of a page."),
            ],
            "responses": _responses(
                {"200": {"description": "A page of runs.", "content": _json("RunPage")}},
                *("400", "401", "500", "503"),
            ),
        }
    }


def _run_id() -> dict[str, Any]:
    return {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


def _get_run() -> dict[str, Any]:
    return {
        "get": {
            "operationId": "getRun",
            "summary": "A run, with its input, error and finished steps.",
            "parameters": [_run_id()],
            "responses": _responses(
                {"200": {"description": "The run.", "content": _json("RunDetail")}},
                *("401", "404", "500", "503"),
            ),
        }
    }


def _decision(name: str, summary: str, body: str, required: bool) -> dict[str, Any]:
    return {
        "post": {
            "operationId": f"{name}Run",
            "summary": summary + " (scope review). The decision is the token's.",
            "parameters": [_run_id()],
            "requestBody": {"required": required, "content": _json(body)},
            "responses": _responses(
                {"200": _run_answer("The run after the decision.")},
                *("400", "401", "403", "404", "409", "413", "415", "422", "500", "503"),
            ),
        }
    }


def _open(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    """A GET that needs no token."""
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "security": [],
            "responses": responses,
        }
    }


def _paths() -> dict[str, Any]:
    metrics = {"text/plain": {"schema": {"type": "string"}}}
    health = {
        "200": {"description": "Healthy.", "content": _json("Health")},
        "503": {"description": "The store cannot be reached.", "content": _json("Unhealthy")},
    }
    return {
        "/v1/flows/{flow}/runs": _submit(),
        "/v1/runs": _list_runs(),
        "/v1/runs/{id}": _get_run(),
        "/v1/runs/{id}/approve": _decision(
            "approve", "Approve an escalated run, as proposed or edited", "Approval", True
        ),
        "/v1/runs/{id}/reject": _decision("reject", "Reject an escalated run", "Rejection", True),
        "/v1/runs/{id}/retry": _decision(
            "retry", "Run an escalated or failed run again from a step", "Retry", False
        ),
        "/v1/runs/{id}/drop": _decision("drop", "Archive a failed run", "Drop", False),
        "/healthz": _open("health", "Whether the store can be reached; the flows.", health),
        "/metrics": _open(
            "metrics",
            "Prometheus metrics of the store's runs.",
            _responses(
                {"200": {"description": "The Prometheus text format.", "content": metrics}},
                *("500", "503"),
            ),
        ),
        "/openapi.json": _open(
            "openapi",
            "This document.",
            {"200": {"description": "OpenAPI 3.1.", "content": _json({"type": "object"})}},
        ),
    }


def document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "runner",
            "version": "1",
            "description": "Queue runs of AI agent workflows and decide on the ones "
            "waiting for a person. Runs are queued here and run by `runner worker`.",
        },
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": _components(),
    }


def _components() -> dict[str, Any]:
    unauthorized = {"headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}}
    return {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "A token from `runner tokens add` (rnr_<id>_<secret>).",
            }
        },
        "schemas": {
            "Error": _ERROR,
            "Run": _RUN,
            "Step": _STEP,
            "RunDetail": _RUN_DETAIL,
            "RunPage": _PAGE,
            "Health": _HEALTH,
            "Unhealthy": _UNHEALTHY,
            "Submission": SUBMISSION,
            "Approval": APPROVAL,
            "Rejection": REJECTION,
            "Retry": RETRY,
            "Drop": DROP,
        },
        "responses": {
            code: {"description": text, "content": _json("Error")}
            | (unauthorized if code == "401" else {})
            for code, text in _REFUSALS.items()
        },
    }
