"""The audit trail's event kinds, one typed record each.

Every event kind is a frozen dataclass written by one module and read through its
fields, so renaming a field is a type error rather than a silent break. On disk an event
is its kind and its `data` mapping (the keys below; optional fields are left out when
empty), exactly as earlier releases wrote it. `parse` reads one back; a kind this
release does not know comes back as `UnknownEvent`, its data untouched.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

from runner.core.text import plural, short


def now() -> datetime:
    """The current time, in UTC: every stored time is."""
    return datetime.now(UTC)


_SKIP = ("step_id", "at")
ANSWER_LIMIT = 4000  # characters of an invalid model answer kept for its reviewer


@dataclass(frozen=True, kw_only=True)
class Event:
    """One entry of a run's audit trail. Subclasses name their kind in `KIND`; a field
    whose default is None is optional and left out of `data` when it is None."""

    KIND: ClassVar[str] = ""
    KEYS: ClassVar[Mapping[str, str]] = {}  # field name -> its key on disk, where they differ

    step_id: str | None = None
    at: datetime = field(default_factory=now)

    @property
    def kind(self) -> str:
        return self.KIND

    @property
    def data(self) -> dict[str, Any]:
        """The event as stored: its fields under their keys on disk."""
        data: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name in _SKIP or (value is None and item.default is None):
                continue
            data[self.KEYS.get(item.name, item.name)] = value
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any], step_id: str | None, at: datetime) -> Self:
        """The event from its stored data (a missing key reads as None)."""
        values = {
            item.name: data.get(cls.KEYS.get(item.name, item.name))
            for item in dataclasses.fields(cls)
            if item.name not in _SKIP
        }
        return cls(step_id=step_id, at=at, **values)

    def redacted(self, redact: Callable[[Any], Any]) -> Self:
        """The same event with `redact` applied to its data."""
        return type(self).from_data(redact(self.data), self.step_id, self.at)

    def describe(self) -> str:
        """One line for a person reading the run's timeline."""
        return f"{self.kind} {json.dumps(self.data, default=str)}"


@dataclass(frozen=True, kw_only=True)
class UnknownEvent(Event):
    """An event of a kind this release does not know (written by a newer one)."""

    stored_kind: str = ""
    stored_data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.stored_kind

    @property
    def data(self) -> dict[str, Any]:
        return dict(self.stored_data)


@dataclass(frozen=True, kw_only=True)
class StepFinished(Event):
    """A step ended: its outcome, the route taken, its attempts and duration."""

    KIND = "step"
    outcome: str
    route: str
    attempts: int
    ms: float
    error: Mapping[str, Any] | None = None

    def describe(self) -> str:
        text = f"{self.outcome} -> {self.route}  ({plural(self.attempts, 'attempt')}, "
        text += f"{self.ms:.1f} ms)"
        if self.error:
            text += f"\n{'':30}error: {short(self.error['message'], 200)}"
        return text


@dataclass(frozen=True, kw_only=True)
class AttemptFailed(Event):
    """One failed attempt of a call (a tool's, or a model's when `model` is set)."""

    KIND = "attempt_failed"
    KEYS: ClassVar[Mapping[str, str]] = {"error_kind": "kind"}
    attempt: int
    error_kind: str
    message: str
    wait: float | None  # seconds waited before the next attempt; None after the last
    model: str | None = None

    def describe(self) -> str:
        wait = f", retry in {self.wait:.2f}s" if self.wait is not None else ""
        return f"attempt {self.attempt} failed: {self.error_kind}: {short(self.message, 120)}{wait}"


@dataclass(frozen=True, kw_only=True)
class EffectEvent(Event):
    """What the effect ledger did for a step: done, reused, resent or in_doubt."""

    KIND = "effect"
    key: str
    status: str
    first_run: str | None = None
    why: str | None = None

    def describe(self) -> str:
        return f"effect {self.key}: {self.status}"


@dataclass(frozen=True, kw_only=True)
class BudgetReached(Event):
    """The run reached a budget limit before a model call."""

    KIND = "budget"
    message: str

    def describe(self) -> str:
        return self.message


@dataclass(frozen=True, kw_only=True)
class AlertSent(Event):
    """The alert for an escalated or failed run: sent, or why it failed."""

    KIND = "alert"
    tool: str
    status: str
    attempts: int | None = None
    error: str | None = None

    def describe(self) -> str:
        failed = f" ({short(self.error, 120)})" if self.error else ""
        return f"alert through {self.tool}: {self.status}{failed}"


@dataclass(frozen=True, kw_only=True)
class PolicyFired(Event):
    """A policy rule found a violation, and where in the text."""

    KIND = "policy"
    policy: str
    rule: str
    message: str
    start: int | None = None
    end: int | None = None
    excerpt: str | None = None

    def describe(self) -> str:
        return f"policy {self.policy} fired ({self.rule}): {self.message}"


@dataclass(frozen=True, kw_only=True)
class ModelCalled(Event):
    """A model answered: tokens, cost and latency."""

    KIND = "llm_call"
    model: str
    attempts: int
    repair: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    latency_ms: float

    def describe(self) -> str:
        repair = f", repair {self.repair}" if self.repair else ""
        return (
            f"model {self.model}: {self.prompt_tokens}+{self.completion_tokens} tokens, "
            f"{self.latency_ms:.0f} ms{repair}"
        )


@dataclass(frozen=True, kw_only=True)
class AnswerInvalid(Event):
    """A model's answer did not fit its schema; it is sent back to be repaired."""

    KIND = "llm_invalid"
    repair: int
    problem: str
    answer: str | None = None  # what the model wrote (cut to ANSWER_LIMIT characters)

    def describe(self) -> str:
        wrote = f": {short(self.answer, 120)}" if self.answer else ""
        return f"answer {self.repair + 1} invalid, {self.problem}{wrote}"


@dataclass(frozen=True, kw_only=True)
class ConfidenceScored(Event):
    """A confidence gate's verdict, recorded pass or fail."""

    KIND = "confidence"
    method: str
    score: float | None
    min: float
    passed: bool
    gate: str | None = None  # the gate's name, where the step has several
    fields: list[str] | None = None  # the answer's fields the score is of
    detail: Mapping[str, Any] | None = None  # how the method came to it (per field, ...)

    def describe(self) -> str:
        score = "none" if self.score is None else f"{self.score:.3f}"
        verdict = "passed" if self.passed else "failed"
        of = f" of {', '.join(self.fields)}" if self.fields else ""
        return f"confidence {score} ({self.gate or self.method}{of}) vs {self.min:g}: {verdict}"


@dataclass(frozen=True, kw_only=True)
class AgentTurn(Event):
    """An agent's model asked for tools (kept so a resumed run replays it)."""

    KIND = "agent_turn"
    seq: int
    turn: int
    assistant: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class AgentCall(Event):
    """A tool call an agent asked for finished, with its result."""

    KIND = "agent_call"
    seq: int
    turn: int
    call_id: str
    tool: str
    result: Any


@dataclass(frozen=True, kw_only=True)
class AgentReplay(Event):
    """A resumed agent replayed a recorded turn instead of asking its model again."""

    KIND = "agent_replay"
    seq: int
    turn: int


@dataclass(frozen=True, kw_only=True)
class RunStarted(Event):
    """A run was created on a pinned flow version."""

    KIND = "run_started"
    flow: str
    digest: str
    git_commit: str | None

    def describe(self) -> str:  # "run started" or "run queued"
        return (
            f"run {self.KIND.removeprefix('run_')} (flow {self.flow}, version {self.digest[:12]})"
        )


@dataclass(frozen=True, kw_only=True)
class RunQueued(RunStarted):
    """A run was submitted, to be run by a worker."""

    KIND = "run_queued"


@dataclass(frozen=True, kw_only=True)
class RunParked(Event):
    """A retry wait too long to hold a worker for: the run is queued until `due`."""

    KIND = "run_parked"
    due: str
    attempts: int
    seconds: float

    def describe(self) -> str:
        return f"parked for {self.seconds:g} s after attempt {self.attempts} (due {self.due})"


@dataclass(frozen=True, kw_only=True)
class RunResumed(Event):
    """A process took a run's lease to continue it."""

    KIND = "run_resumed"
    KEYS: ClassVar[Mapping[str, str]] = {"from_step": "from"}
    owner: str
    from_step: str

    def describe(self) -> str:
        return f"run resumed at {self.from_step}"


@dataclass(frozen=True, kw_only=True)
class DecisionMade(Event):
    """A person's (or an expiry's) decision, and where it moved the run."""

    KIND = "decision"
    decision: str
    by: str
    content_hash: str | None
    note: str | None
    status: str
    position: str
    diff: list[Mapping[str, Any]] | None = None  # [{path, before, after}]
    override: str | None = None
    overrides: Mapping[str, str] | None = None  # policy check -> approved text's sha256

    def describe(self) -> str:
        note = f" ({self.note})" if self.note else ""
        text = f"{self.decision} by {self.by}{note} -> {self.position}"
        for change in self.diff or ():
            text += (
                f"\n{'':30}{change['path']}: {json.dumps(change['before'])} -> "
                f"{json.dumps(change['after'])}"
            )
        if self.override:
            text += f"\n{'':30}policy overridden: {self.override}"
        return text


@dataclass(frozen=True, kw_only=True)
class FlowChanged(Event):
    """A stopped run was moved to another version of its flow (`--flow FILE`)."""

    KIND = "flow_changed"
    from_digest: str
    to_digest: str
    path: str

    def describe(self) -> str:
        return f"moved to flow version {self.to_digest[:12]} ({self.path})"


EVENT_KINDS: dict[str, type[Event]] = {
    kind.KIND: kind
    for kind in (
        StepFinished,
        AttemptFailed,
        EffectEvent,
        BudgetReached,
        AlertSent,
        PolicyFired,
        ModelCalled,
        AnswerInvalid,
        ConfidenceScored,
        AgentTurn,
        AgentCall,
        AgentReplay,
        RunStarted,
        RunQueued,
        RunParked,
        RunResumed,
        DecisionMade,
        FlowChanged,
    )
}


def last_visit(events: Sequence[Event], step_id: str) -> list[Event]:
    """The events of a step's latest visit: from after its previous `step` event up
    to and including its last one (a run retried from a step visits it again)."""
    mine = [e for e in events if e.step_id == step_id]
    ends = [i for i, e in enumerate(mine) if isinstance(e, StepFinished)]
    if not ends:
        return mine
    start = ends[-2] + 1 if len(ends) > 1 else 0
    return mine[start : ends[-1] + 1]


def parse(kind: str, step_id: str | None, data: Mapping[str, Any] | None, at: datetime) -> Event:
    """A stored event as its typed record."""
    known = EVENT_KINDS.get(kind)
    if known is None:
        return UnknownEvent(step_id=step_id, at=at, stored_kind=kind, stored_data=data or {})
    return known.from_data(data or {}, step_id, at)
