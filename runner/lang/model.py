"""Frozen, typed records of a flow that passed its schema; defaults and shorthands expanded.

Nothing past this module reads the raw YAML data. JSON values that are the author's
data (schemas, tool arguments, request bodies) stay as they were written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runner.lang.source import Document, Path_

# Where each ending leaves a run: the ending's name -> the run's final status.
ENDINGS: dict[str, str] = {"done": "completed", "human_review": "escalated",
                           "dead_letter": "failed"}
RETRY_CLASSES = ("timeout", "connection", "http_429", "http_5xx", "smtp_4xx", "invalid_output")
DEFAULT_RETRY_ON = ("timeout", "connection", "http_429", "http_5xx", "smtp_4xx")
DEFAULT_TOOL_TIMEOUT = 30.0
DEFAULT_MODEL_TIMEOUT = 60.0
DEFAULT_REPAIRS = 2
DEFAULT_MAX_TURNS = 8


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently a failed call is tried again."""

    max_attempts: int = 3
    interval_seconds: float = 1.0
    backoff_rate: float = 2.0
    max_interval_seconds: float = 30.0
    jitter: bool = True
    deadline_seconds: float | None = None
    retry_on: tuple[str, ...] = DEFAULT_RETRY_ON


@dataclass(frozen=True, kw_only=True)
class Model:
    """A named model of the flow."""

    name: str
    model: str
    api_base: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    timeout_seconds: float = DEFAULT_MODEL_TIMEOUT
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    fallbacks: tuple[str, ...] = ()
    path: Path_ = ()


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


@dataclass(frozen=True, kw_only=True)
class Tool:
    """A named tool: a python callable or an http request."""

    name: str
    kind: str
    python: str | None
    http: HttpRequest | None
    smtp: Mapping[str, Any] | None
    description: str | None
    input_schema: Any
    output_schema: Any
    effect: bool
    idempotent: bool
    idempotency_key: str | None
    timeout_seconds: float
    retry: RetryPolicy
    path: Path_


@dataclass(frozen=True, kw_only=True)
class Policy:
    """A named policy rule; `kind` is deny, require, max_length, detect, check or judge."""

    name: str
    kind: str
    value: Any
    message: str | None
    path: Path_


@dataclass(frozen=True, kw_only=True)
class ConfidenceGate:
    """A confidence gate: how the score is obtained and the least score that passes."""

    method: str
    min: float
    score: str | None = None
    samples: int = 5
    judge: str | None = None


@dataclass(frozen=True, kw_only=True)
class Step:
    """What every step has: an id, its place, and its success and failure routes."""

    id: str
    index: int
    path: Path_
    next: str
    on_error: str | None
    description: str | None = None
    retry: RetryPolicy | None = None
    timeout_seconds: float | None = None

    kind = "step"

    def routes(self) -> dict[str, str]:
        """Each outcome of the step -> the route it takes (a step id or an ending)."""
        routes = {"ok": self.next}
        if self.on_error:
            routes["error"] = self.on_error
        return routes


@dataclass(frozen=True, kw_only=True)
class ModelStep(Step):
    """What steps that ask a model share: the model, the prompts, the answer's schema."""

    model: str | None
    system: str | None
    prompt: str
    output_schema: Any
    repairs: int


@dataclass(frozen=True, kw_only=True)
class LlmStep(ModelStep):
    """Ask a model; optionally gate its answer on a confidence score."""

    confidence: ConfidenceGate | None
    on_low_confidence: str

    kind = "llm"

    def routes(self) -> dict[str, str]:
        routes = super().routes()
        if self.confidence:
            routes["low_confidence"] = self.on_low_confidence
        return routes


@dataclass(frozen=True, kw_only=True)
class AgentStep(ModelStep):
    """A model calls the flow's tools in a loop, then answers."""

    tools: tuple[str, ...]
    max_turns: int

    kind = "agent"


@dataclass(frozen=True, kw_only=True)
class ToolStep(Step):
    """Call a tool with arguments rendered from templates."""

    tool: str
    args: Mapping[str, Any]

    kind = "tool"


@dataclass(frozen=True, kw_only=True)
class PolicyStep(Step):
    """Check a text against policy rules before it reaches a side effect."""

    policies: tuple[str, ...]
    text: str
    on_violation: str

    kind = "policies"

    def routes(self) -> dict[str, str]:
        return {**super().routes(), "violation": self.on_violation}


@dataclass(frozen=True, kw_only=True)
class SwitchCase:
    """One branch of a switch: a jinja condition and where it leads."""

    when: str
    next: str


@dataclass(frozen=True, kw_only=True)
class SwitchStep(Step):
    """Route on jinja conditions; the first true case wins, else `next`."""

    cases: tuple[SwitchCase, ...]

    kind = "switch"

    def routes(self) -> dict[str, str]:
        routes = {f"case_{i}": case.next for i, case in enumerate(self.cases, 1)}
        routes["default"] = self.next
        if self.on_error:
            routes["error"] = self.on_error
        return routes


@dataclass(frozen=True, kw_only=True)
class Budget:
    """Per-run limits on model use, and where a run goes when it reaches one."""

    max_llm_calls: int | None = None
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    on_exceeded: str = "human_review"


@dataclass(frozen=True, kw_only=True)
class ReviewPolicy:
    """How long an escalated run may wait for a person, and where it goes after."""

    expires_after_seconds: float | None = None
    on_expired: str = "dead_letter"


@dataclass(frozen=True, kw_only=True)
class Notify:
    """The alert sent when a run is escalated or fails."""

    tool: str
    args: Mapping[str, Any]
    on: tuple[str, ...] = ("escalated", "failed")


@dataclass(frozen=True, kw_only=True)
class Flow:
    """A flow whose shape is valid: its records, its source and the digest of its text."""

    name: str
    description: str | None
    input_schema: Any
    models: Mapping[str, Model]
    tools: Mapping[str, Tool]
    policies: Mapping[str, Policy]
    steps: tuple[Step, ...]
    on_error: str | None
    budget: Budget | None = None
    review: ReviewPolicy | None = None
    notify: Notify | None = None
    document: Document = field(repr=False)
    digest: str

    def step(self, step_id: str) -> Step:
        """The step with this id (KeyError if there is none)."""
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)


def build_flow(document: Document) -> Flow:
    """Records of a document that passed the flow schema."""
    data = document.data
    flow_error = data.get("on_error")
    ids = [s["id"] for s in data["steps"]]
    steps = tuple(_step(raw, i, ids, flow_error) for i, raw in enumerate(data["steps"]))
    return Flow(
        name=data["name"],
        description=data.get("description"),
        input_schema=data.get("input", True),
        models={n: _model(n, raw) for n, raw in data.get("models", {}).items()},
        tools={n: _tool(n, raw) for n, raw in data.get("tools", {}).items()},
        policies={n: _policy(n, raw) for n, raw in data.get("policies", {}).items()},
        steps=steps,
        on_error=flow_error,
        budget=Budget(**data["budget"]) if "budget" in data else None,
        review=ReviewPolicy(**data["review"]) if "review" in data else None,
        notify=Notify(tool=data["notify"]["tool"], args=data["notify"].get("args", {}),
                      on=tuple(data["notify"].get("on", ("escalated", "failed"))))
        if "notify" in data else None,
        document=document,
        digest=hashlib.sha256(document.text.encode("utf-8")).hexdigest(),
    )


def retry_policy(raw: int | Mapping[str, Any] | None, default: RetryPolicy) -> RetryPolicy:
    """Expand `retry: 3` or a partial mapping over `default`."""
    if raw is None:
        return default
    if isinstance(raw, int):
        return RetryPolicy(**{**default.__dict__, "max_attempts": raw})
    given = {k: tuple(v) if k == "retry_on" else v for k, v in raw.items()}
    return RetryPolicy(**{**default.__dict__, **given})


def _model(name: str, raw: str | Mapping[str, Any]) -> Model:
    if isinstance(raw, str):
        return Model(name=name, model=raw, path=("models", name))
    return Model(
        name=name, model=raw["model"], api_base=raw.get("api_base"),
        temperature=raw.get("temperature"),
        max_tokens=raw.get("max_tokens"),
        timeout_seconds=raw.get("timeout_seconds", DEFAULT_MODEL_TIMEOUT),
        retry=retry_policy(raw.get("retry"), RetryPolicy()),
        fallbacks=tuple(raw.get("fallbacks", ())), path=("models", name),
    )


def _tool(name: str, raw: Mapping[str, Any]) -> Tool:
    http = raw.get("http")
    return Tool(
        name=name, kind=next(k for k in ("python", "http", "smtp") if k in raw),
        python=raw.get("python"), http=_http(http) if http else None, smtp=raw.get("smtp"),
        description=raw.get("description"),
        input_schema=raw.get("input", True), output_schema=raw.get("output", True),
        effect=raw.get("effect", False), idempotent=raw.get("idempotent", False),
        idempotency_key=raw.get("idempotency_key"),
        timeout_seconds=raw.get("timeout_seconds", DEFAULT_TOOL_TIMEOUT),
        retry=retry_policy(raw.get("retry"), RetryPolicy()), path=("tools", name),
    )


def _http(raw: Mapping[str, Any]) -> HttpRequest:
    has_body = "json" in raw or "body" in raw
    return HttpRequest(
        method=raw.get("method", "POST" if has_body else "GET"), url=raw["url"],
        headers=dict(raw.get("headers", {})), query=dict(raw.get("query", {})),
        json=raw.get("json"), body=raw.get("body"), has_json="json" in raw,
    )


_POLICY_KINDS = ("deny", "require", "max_length", "detect", "check", "judge")


def _policy(name: str, raw: Mapping[str, Any]) -> Policy:
    kind = next(k for k in _POLICY_KINDS if k in raw)
    value = raw[kind]
    if kind == "detect" and isinstance(value, str):
        value = [value]
    value = tuple(value) if isinstance(value, list) else value
    return Policy(name=name, kind=kind, value=value, message=raw.get("message"),
                  path=("policies", name))


def _step(raw: Mapping[str, Any], index: int, ids: list[str], flow_error: str | None) -> Step:
    following = ids[index + 1] if index + 1 < len(ids) else "done"
    common: dict[str, Any] = {
        "id": raw["id"], "index": index, "path": ("steps", index),
        "next": raw.get("next", following), "on_error": raw.get("on_error", flow_error),
        "description": raw.get("description"),
        "retry": retry_policy(raw["retry"], RetryPolicy()) if "retry" in raw else None,
        "timeout_seconds": raw.get("timeout_seconds"),
    }
    if "llm" in raw:
        return _llm_step(raw, common)
    if "agent" in raw:
        agent = raw["agent"]
        return AgentStep(
            **common, model=agent.get("model"), system=agent.get("system"),
            prompt=agent["prompt"], tools=tuple(agent["tools"]),
            max_turns=agent.get("max_turns", DEFAULT_MAX_TURNS),
            output_schema=agent.get("output"), repairs=agent.get("repairs", DEFAULT_REPAIRS))
    if "tool" in raw:
        return ToolStep(**common, tool=raw["tool"], args=raw.get("args", {}))
    if "policies" in raw:
        return PolicyStep(**common, policies=tuple(raw["policies"]), text=raw["text"],
                          on_violation=raw.get("on_violation", "human_review"))
    cases = tuple(SwitchCase(when=c["when"], next=c["next"]) for c in raw["switch"])
    return SwitchStep(**common, cases=cases)


def _llm_step(raw: Mapping[str, Any], common: dict[str, Any]) -> LlmStep:
    llm, gate = raw["llm"], raw.get("confidence")
    confidence = None
    if gate is not None:
        confidence = ConfidenceGate(
            method=gate.get("method", "field"), min=gate["min"], score=gate.get("score"),
            samples=gate.get("samples", 5), judge=gate.get("judge"),
        )
    return LlmStep(
        **common, model=llm.get("model"), system=llm.get("system"), prompt=llm["prompt"],
        output_schema=llm.get("output"), repairs=llm.get("repairs", DEFAULT_REPAIRS),
        confidence=confidence, on_low_confidence=raw.get("on_low_confidence", "human_review"),
    )
