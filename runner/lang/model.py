"""Frozen, typed records of a flow that passed its schema; defaults and shorthands expanded.

These are the records every kind shares: the flow, its models, tools, policies and the
base of every step. Each kind's own record (an `llm` step, an `http` tool's request)
lives in its module under `runner.kinds`; `runner.lang.build` makes them all. Nothing
past the builder reads the raw YAML data. JSON values that are the author's data
(schemas, tool arguments, request bodies) stay as they were written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from runner.core.vocabulary import ENDINGS, Ending, Outcome
from runner.lang.source import Document, Path_

__all__ = ["ENDINGS", "Flow", "ModelStep", "Step", "Tool"]
RETRY_CLASSES = ("timeout", "connection", "http_429", "http_5xx", "smtp_4xx", "invalid_output")
DEFAULT_RETRY_ON = ("timeout", "connection", "http_429", "http_5xx", "smtp_4xx")
DEFAULT_TOOL_TIMEOUT = 30.0
DEFAULT_MODEL_TIMEOUT = 60.0
DEFAULT_REPAIRS = 2
DEFAULT_MAX_TURNS = 8
DEFAULT_MAX_STEPS = 200
DEFAULT_MAX_RETRY_WAIT = 60.0
DEFAULT_MAX_OUTPUT_BYTES = 4 * 1024 * 1024


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
    threads: int | None = None  # local models: CPU threads (None: the usable cores)
    path: Path_ = ()


@dataclass(frozen=True, kw_only=True)
class Tool:
    """A named tool. `kind` names its tool kind (python, http, smtp, ...) and `spec`
    holds that kind's own record (the python target, the request to send, ...)."""

    name: str
    kind: str
    spec: Any
    description: str | None
    input_schema: Any
    output_schema: Any
    effect: bool
    idempotent: bool
    idempotency_key: str | None
    timeout_seconds: float
    retry: RetryPolicy
    path: Path_
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES


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
    """A confidence gate: how the score is obtained and the least score that passes.
    `name` tells a step's gates apart in events and reports: the method, with its place
    when a step has two gates of one method (`logprobs#2`)."""

    method: str
    min: float
    name: str = ""
    path: Path_ = ()
    score: str | None = None  # field: the template that gives the score
    samples: int = 5  # agreement: answers sampled
    temperature: float = 1.0  # agreement: the temperature they are sampled at
    judge: str | None = None  # judge: the grading model
    fields: tuple[str, ...] | None = None  # logprobs, agreement: the fields scored
    examples: str | None = None  # similarity: the labelled examples file, beside the flow
    text: str | None = None  # similarity: the template of the text compared
    embedding: str = "local/minilm"  # similarity: the embedding model
    neighbours: int = 5  # similarity: the nearest examples weighed


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

    kind: ClassVar[str] = "step"
    uses_models: ClassVar[bool] = False  # may call a model: the run's budget applies
    success: ClassVar[str] = Outcome.OK  # the trigger an approval of its output takes
    editable: ClassVar[bool] = True  # a reviewer may edit its output when it stops a run

    def routes(self) -> dict[str, str]:
        """Each outcome of the step -> the route it takes (a step id or an ending)."""
        routes = {Outcome.OK.value: self.next}
        if self.on_error:
            routes[Outcome.ERROR.value] = self.on_error
        return routes

    def route_path(self, trigger: str) -> Path_:
        """Where the route of `trigger` is written in the flow."""
        keys: dict[str, str] = {
            Outcome.OK: "next",
            Outcome.DEFAULT: "next",
            Outcome.ERROR: "on_error",
        }
        return (*self.path, keys.get(trigger, f"on_{trigger}"))

    def tool_names(self) -> tuple[str, ...]:
        """The flow's tools this step may call."""
        return ()

    def review_target(self) -> str:
        """The step whose output a reviewer approves when this step stops the run."""
        return self.id

    def proposal_of(self, output: Any) -> Any:
        """What a reviewer decides on, from this step's stored output."""
        return output

    def reviewers(self) -> tuple[str, ...]:
        """Who may decide when this step stops the run (empty: anyone)."""
        return ()

    def review_expiry(self, flow: Flow) -> tuple[float | None, str]:
        """How long a review of this step may wait, and where the run goes after."""
        policy = flow.review
        if policy is None:
            return None, Ending.DEAD_LETTER.value
        return policy.expires_after_seconds, policy.on_expired

    def produces_output(self, trigger: str) -> bool:
        """Whether the step has an output when it leaves by `trigger`'s route."""
        return trigger != Outcome.ERROR

    def shadows(self) -> dict[tuple[str | int, ...], str]:
        """Values this step lets a person change: the reference a later step must not
        read any more (`("assess", "output", "amount")`) -> what to read instead."""
        return {}

    def condition_of(self, trigger: str) -> str | None:
        """The condition that leads to the route of `trigger`, where one decides it."""
        return None

    def output_schema_in(self, flow: Flow) -> Any:
        """The JSON Schema of this step's output, if it has one."""
        return None

    def author_schemas(self) -> list[tuple[Path_, Any]]:
        """JSON Schemas the author wrote in this step, where they are written."""
        return []


@dataclass(frozen=True, kw_only=True)
class ModelStep(Step):
    """What steps that ask a model share: the model, the prompts, the answer's schema."""

    model: str | None
    system: str | None
    prompt: str
    output_schema: Any
    repairs: int

    uses_models: ClassVar[bool] = True

    def output_schema_in(self, flow: Flow) -> Any:
        """The answer's schema; without one the answer is text."""
        return {"type": "string"} if self.output_schema is None else self.output_schema

    def author_schemas(self) -> list[tuple[Path_, Any]]:
        if self.output_schema is None:
            return []
        return [((*self.path, self.kind, "output"), self.output_schema)]


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
    max_steps: int = DEFAULT_MAX_STEPS  # steps one run may take; past them, the budget route
    document: Document = field(repr=False)
    digest: str

    def step(self, step_id: str) -> Step:
        """The step with this id (KeyError if there is none)."""
        found = self.find(step_id)
        if found is None:
            raise KeyError(step_id)
        return found

    def find(self, step_id: str | None) -> Step | None:
        """The step with this id, or None (a position that is an ending, say)."""
        return next((step for step in self.steps if step.id == step_id), None)
