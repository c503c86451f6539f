"""Build a flow's records from a document that passed the flow schema: defaults filled
in, shorthands (`retry: 3`, `detect: email`) expanded, each step, tool and policy made
by its kind (`runner.kinds.registry`)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from runner.core.vocabulary import Ending
from runner.kinds.registry import POLICY_KINDS, STEP_KINDS, TOOL_KINDS
from runner.lang.model import (
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_MAX_RETRY_WAIT,
    DEFAULT_MAX_STEPS,
    DEFAULT_MODEL_TIMEOUT,
    DEFAULT_TOOL_TIMEOUT,
    Budget,
    Flow,
    Model,
    Notify,
    Policy,
    RetryPolicy,
    ReviewPolicy,
    Step,
    Tool,
)
from runner.lang.source import Document


def build_flow(document: Document) -> Flow:
    """Records of a document that passed the flow schema."""
    data = document.data
    flow_error = data.get("on_error")
    ids = [s["id"] for s in data["steps"]]
    ceiling = data.get("max_retry_wait_seconds", DEFAULT_MAX_RETRY_WAIT)
    return Flow(
        name=data["name"],
        description=data.get("description"),
        input_schema=data.get("input", True),
        models={n: _model(n, raw, ceiling) for n, raw in data.get("models", {}).items()},
        tools={n: _tool(n, raw, ceiling) for n, raw in data.get("tools", {}).items()},
        policies={n: _policy(n, raw) for n, raw in data.get("policies", {}).items()},
        steps=tuple(_step(raw, i, ids, flow_error, ceiling) for i, raw in enumerate(data["steps"])),
        on_error=flow_error,
        budget=Budget(**data["budget"]) if "budget" in data else None,
        review=ReviewPolicy(**data["review"]) if "review" in data else None,
        notify=_notify(data["notify"]) if "notify" in data else None,
        max_steps=data.get("max_steps", DEFAULT_MAX_STEPS),
        document=document,
        digest=hashlib.sha256(document.text.encode("utf-8")).hexdigest(),
    )


def retry_policy(
    raw: int | Mapping[str, Any] | None, default: RetryPolicy, ceiling: float | None = None
) -> RetryPolicy:
    """Expand `retry: 3` or a partial mapping over `default`; no wait is longer than the
    flow's `ceiling` (`max_retry_wait_seconds`)."""
    if raw is None:
        fields = dict(default.__dict__)
    elif isinstance(raw, int):
        fields = {**default.__dict__, "max_attempts": raw}
    else:
        given = {k: tuple(v) if k == "retry_on" else v for k, v in raw.items()}
        fields = {**default.__dict__, **given}
    if ceiling is not None:
        fields["max_interval_seconds"] = min(fields["max_interval_seconds"], ceiling)
    return RetryPolicy(**fields)


def _model(name: str, raw: str | Mapping[str, Any], ceiling: float) -> Model:
    if isinstance(raw, str):
        retry = retry_policy(None, RetryPolicy(), ceiling)
        return Model(name=name, model=raw, retry=retry, path=("models", name))
    return Model(
        name=name,
        model=raw["model"],
        api_base=raw.get("api_base"),
        temperature=raw.get("temperature"),
        max_tokens=raw.get("max_tokens"),
        timeout_seconds=raw.get("timeout_seconds", DEFAULT_MODEL_TIMEOUT),
        retry=retry_policy(raw.get("retry"), RetryPolicy(), ceiling),
        fallbacks=tuple(raw.get("fallbacks", ())),
        threads=raw.get("threads"),
        path=("models", name),
    )


def _tool(name: str, raw: Mapping[str, Any], ceiling: float) -> Tool:
    kind = next(k for k in TOOL_KINDS if k in raw)
    return Tool(
        name=name,
        kind=kind,
        spec=TOOL_KINDS[kind].build(raw[kind]),
        description=raw.get("description"),
        input_schema=raw.get("input", True),
        output_schema=raw.get("output", True),
        effect=raw.get("effect", False),
        idempotent=raw.get("idempotent", False),
        idempotency_key=raw.get("idempotency_key"),
        timeout_seconds=raw.get("timeout_seconds", DEFAULT_TOOL_TIMEOUT),
        retry=retry_policy(raw.get("retry"), RetryPolicy(), ceiling),
        path=("tools", name),
        max_output_bytes=raw.get("max_output_bytes", DEFAULT_MAX_OUTPUT_BYTES),
    )


def _policy(name: str, raw: Mapping[str, Any]) -> Policy:
    kind = next(k for k in POLICY_KINDS if k in raw)
    value = POLICY_KINDS[kind].build(raw[kind])
    value = tuple(value) if isinstance(value, list) else value
    return Policy(
        name=name, kind=kind, value=value, message=raw.get("message"), path=("policies", name)
    )


def _step(
    raw: Mapping[str, Any], index: int, ids: list[str], flow_error: str | None, ceiling: float
) -> Step:
    following = ids[index + 1] if index + 1 < len(ids) else Ending.DONE.value
    common: dict[str, Any] = {
        "id": raw["id"],
        "index": index,
        "path": ("steps", index),
        "next": raw.get("next", following),
        "on_error": raw.get("on_error", flow_error),
        "description": raw.get("description"),
        "retry": retry_policy(raw["retry"], RetryPolicy(), ceiling) if "retry" in raw else None,
        "timeout_seconds": raw.get("timeout_seconds"),
    }
    kind = next(k for k in STEP_KINDS if k in raw)
    return STEP_KINDS[kind].build(raw, common)


def _notify(raw: Mapping[str, Any]) -> Notify:
    return Notify(
        tool=raw["tool"], args=raw.get("args", {}), on=tuple(raw.get("on", ("escalated", "failed")))
    )
