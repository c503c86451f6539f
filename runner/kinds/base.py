"""What a kind is, and what it sees of the rest of runner.

A kind is one module: a step kind (llm, tool, switch ...), a tool kind (python, http,
smtp), a policy kind (deny, detect, judge ...) or a confidence method (field, logprobs
...). It owns its record, its meaning checks and its run, and reaches the flow checker
and the engine only through the small protocols below, which `runner.lang.checker` and
`runner.runtime` implement. `runner.kinds.registry` lists them; the flow schema's kinds
must equal its keys.

Adding a kind: write its module here, add its line to the registry and its entry to
`schemas/flow.v1.json`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from runner.core.errors import Attempt, BudgetExceededError, StepError
from runner.core.events import AttemptFailed, Event
from runner.core.llm import Answer
from runner.core.vocabulary import Outcome
from runner.lang.model import ConfidenceGate, Flow, Model, ModelStep, Policy, Step, Tool
from runner.lang.source import Path_

Violation = dict[str, Any]  # a policy's finding: policy, rule, message, where in the text

# The names templates may read, by where the template is written.
STEP_ROOTS = ("input", "steps", "run", "env", "secret")
TOOL_ROOTS = ("args", "input", "run", "env", "secret")


# -- what kinds see ----------------------------------------------------------------------
class Checks(Protocol):
    """The flow checker, as a kind's meaning checks use it."""

    @property
    def flow(self) -> Flow: ...

    def add(self, path: Path_, message: str, *, key: bool = False) -> None:
        """Report a problem located at `path`."""

    def template(
        self,
        path: Path_,
        text: str,
        roots: tuple[str, ...],
        *,
        step: Step | None = None,
        expression: bool = False,
    ) -> None:
        """Check a template (or a bare expression) and every name it reads."""

    def model_ref(self, path: Path_, name: str | None) -> None:
        """Check that `name` names a model of the flow (None: the default model)."""

    def known(self, path: Path_, what: str, name: str, names: Mapping[str, Any]) -> bool:
        """Report `unknown <what> `name`` (with "did you mean") unless it is in `names`."""

    def sound(self, schema: Any) -> Any:
        """The schema if it is a valid JSON Schema, else None."""


class ModelSession(Protocol):
    """Model calls for one step: retries, fallbacks, repairs, budget and their events."""

    @property
    def events(self) -> list[Event]: ...

    def model(self, name: str | None) -> Model:
        """A named model of the flow, or a model string used directly."""

    def ask(
        self,
        messages: Sequence[Mapping[str, Any]],
        schema: Any,
        *,
        model: str | None,
        repairs: int,
        logprobs: bool = False,
        temperature: float | None = None,
        tools: Sequence[Mapping[str, Any]] = (),
    ) -> Answer:
        """An answer that fits `schema`, repairing invalid ones at most `repairs` times."""

    def embed(self, model: str, texts: Sequence[str], *, keep: bool = True) -> list[list[float]]:
        """Unit-length embeddings of `texts`, one per text, cached by content (`keep`
        False: not written to the cache)."""

    @property
    def folder(self) -> Path:
        """The folder of the flow file: where files beside the flow are read from."""


class StepRun(Protocol):
    """One visit of a step by the engine: what a step kind's run may use."""

    @property
    def flow(self) -> Flow: ...

    @property
    def run_id(self) -> str: ...

    @property
    def seq(self) -> int:
        """The number of the checkpoint this visit will write."""

    def context(self) -> dict[str, Any]:
        """What the step's templates read: input, steps, run, env, secret."""

    def session(self) -> ModelSession:
        """Model calls for this step, sharing the run's usage for its budget."""

    def call_tool(self, tool: Tool, args: Any, default_key: str) -> StepResult:
        """Call a tool: input checked, retried, an effect through the ledger."""

    def recorded(self) -> list[Event]:
        """The run's events so far."""

    def record(self, event: Event) -> None:
        """Commit an event now: progress a crash must not repeat."""


# -- what kinds give back ----------------------------------------------------------------
@dataclass
class StepResult:
    """What a step produced: its outcome (a trigger) and what to record."""

    outcome: str
    output: Any = None
    attempts: int = 1
    events: list[Event] = field(default_factory=list)
    effect: tuple[str, str, Any] | None = None  # (key, ledger status, result)
    error: Any = None
    reason: str | None = None


def attempt_events(step: Step, attempts: Sequence[Attempt]) -> list[Event]:
    """An `attempt_failed` event for each failed attempt."""
    return [
        AttemptFailed(
            step_id=step.id,
            attempt=a.number,
            error_kind=a.kind,
            message=a.message,
            wait=a.wait_seconds,
        )
        for a in attempts
    ]


def failure(step: Step, exc: StepError, attempts: Sequence[Attempt]) -> StepResult:
    """The error outcome, carrying every attempt's error (each also an event), and the
    last error in its library's own words where they differ (`detail`)."""
    last = getattr(exc, "last", exc)
    detail = getattr(last, "detail", None)
    error = {
        "kind": exc.kind,
        "message": str(exc),
        **({"detail": detail} if detail else {}),
        "attempts": [
            {
                "number": a.number,
                "kind": a.kind,
                "message": a.message,
                "wait_seconds": a.wait_seconds,
            }
            for a in attempts
        ],
    }
    return StepResult(
        Outcome.ERROR, None, max(len(attempts), 1), attempt_events(step, attempts), error=error
    )


def attempts_of(exc: StepError) -> list[Attempt]:
    """Every attempt an error carries (one, if it was not retried)."""
    attempts: list[Attempt] | None = getattr(exc, "attempts", None)
    return attempts if attempts is not None else [Attempt(1, exc.kind, str(exc), None)]


def model_failure(step: Step, exc: StepError, session: ModelSession) -> StepResult:
    """The error outcome of a step that asked a model: the session's events already
    hold every attempt. A reached budget is not a failure: it goes to the engine."""
    if isinstance(exc, BudgetExceededError):
        raise exc
    result = (
        exc.result if isinstance(exc, StepFailedError) else failure(step, exc, attempts_of(exc))
    )
    result.events = session.events
    return result


class StepFailedError(StepError):
    """A step failed with a result of its own to record (an agent's failed tool: its
    error, or its effect held in doubt)."""

    def __init__(self, message: str, result: StepResult) -> None:
        self.result = result
        super().__init__(message, result.outcome)


# -- the kinds ---------------------------------------------------------------------------
class StepKind(Protocol):
    """A kind of step: the key that marks it in YAML, its record, checks and run."""

    name: str
    example: Mapping[str, Any]  # the least YAML mapping of such a step (without its id)

    def build(self, raw: Mapping[str, Any], common: dict[str, Any]) -> Step:
        """The step's record from its YAML mapping; `common` holds what every step has."""

    def check(self, checks: Checks, step: Step) -> None:
        """Meaning checks the JSON Schema cannot express."""

    def run(self, step: Step, visit: StepRun) -> StepResult:
        """Run the step once; raise StepError to take its error route."""


ToolCall = Callable[["Call"], Any]  # makes one call of a tool, or raises ToolError


@dataclass(frozen=True)
class Call:
    """One call of a tool: rendered arguments (and request, for http) and its context."""

    args: Mapping[str, Any]
    timeout_seconds: float
    idempotency_key: str | None
    request: Mapping[str, Any] | None = None


class ToolKind(Protocol):
    """A kind of tool: its spec, its checks, the request it renders and its client."""

    name: str
    calls_out: bool  # reaches another system: flow tests must script it, never call it

    def build(self, raw: Mapping[str, Any]) -> Any:
        """The tool's spec from its YAML mapping (the value under the kind's key)."""

    def check(self, checks: Checks, tool: Tool) -> None:
        """Meaning checks: targets that exist, templates that resolve."""

    def request(self, tool: Tool, ctx: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The request one call sends, rendered from the tool's templates."""

    def connect(self, tool: Tool, *, flow_file: Path, http_transport: Any = None) -> ToolCall:
        """What makes the calls (imported or opened once per flow version)."""


class PolicyKind(Protocol):
    """A kind of policy rule checked on text before it reaches a side effect."""

    name: str

    def build(self, value: Any) -> Any:
        """The rule's value from its YAML (shorthands expanded)."""

    def check(self, checks: Checks, policy: Policy) -> None:
        """Meaning checks on the rule."""

    def find(
        self, policy: Policy, text: str, ctx: Mapping[str, Any], session: ModelSession
    ) -> list[Violation]:
        """Every violation of the rule in `text`."""


@dataclass(frozen=True)
class Scored:
    """A gate's score in [0, 1] (None: no valid score, which never passes), the answer's
    fields it is of, and how the method came to it, for the audit trail."""

    score: float | None
    fields: tuple[str, ...] = ()
    detail: Mapping[str, Any] = field(default_factory=dict)


class ConfidenceMethod(Protocol):
    """A way to score how sure a model step's answer is."""

    name: str
    logprobs: bool  # the answer must be asked for with token logprobs

    def check(self, checks: Checks, step: ModelStep, gate: ConfidenceGate) -> None:
        """Meaning checks on the gate."""

    def score(
        self,
        session: ModelSession,
        step: ModelStep,
        messages: Sequence[Mapping[str, Any]],
        answer: Answer,
        gate: ConfidenceGate,
        ctx: Mapping[str, Any],
    ) -> Scored:
        """How sure the step's `answer` (to `messages`) is, by this gate."""
