"""The records the run store reads and writes. A run's audit trail is made of the typed
events of runner.core.events (`Event` is re-exported here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from runner.core.events import Event, now

__all__ = [
    "Checkpoint",
    "Decision",
    "Effect",
    "Event",
    "FlowVersion",
    "RunRecord",
    "StepCommit",
    "aware",
    "now",
]


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without their zone; every stored time is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass(frozen=True)
class FlowVersion:
    """The exact flow text a run uses, and where its file was when the run started:
    `path` as given, `abs_path` resolved, and when a git repository holds the file, that
    repository's root (`git_root`) and the file's path in it (`repo_path`, with `/`).
    The last three are None when unknown (runs of release 0.1)."""

    digest: str
    name: str
    path: str
    text: str
    git_commit: str | None = None
    abs_path: str | None = None
    git_root: str | None = None
    repo_path: str | None = None


@dataclass(frozen=True)
class RunRecord:
    """A run as stored."""

    id: str
    flow_name: str
    flow_digest: str
    status: str
    position: str
    failed_step: str | None
    reason: str | None
    error: Any
    input: Any
    steps_run: int
    llm_calls: int
    tokens: int
    cost_usd: float
    lease_owner: str | None
    created_at: datetime
    updated_at: datetime
    due_at: datetime | None = None  # when its review expires, while it waits for one
    lease_expires: datetime | None = None  # when the holder's lease lapses unless renewed


@dataclass(frozen=True)
class Checkpoint:
    """A finished step: its outcome, the route taken and its output."""

    seq: int
    step_id: str
    outcome: str
    route: str
    output: Any
    attempts: int
    started_at: datetime
    finished_at: datetime


@dataclass(frozen=True)
class Effect:
    """A row of the effect ledger: status is started, done or failed."""

    key: str
    run_id: str
    step_id: str
    tool: str
    status: str
    result: Any


@dataclass(frozen=True)
class StepCommit:
    """Everything one finished step writes, in one transaction."""

    checkpoint: Checkpoint
    position: str
    status: str
    events: Sequence[Event] = ()
    effect: tuple[str, str, Any] | None = None  # (key, status, result)
    failed_step: str | None = None
    reason: str | None = None
    error: Any = None
    usage: tuple[int, int, float] = (0, 0, 0.0)  # the run's model calls, tokens, cost
    due_at: datetime | None = None  # a run stopped for review: when the review expires


@dataclass(frozen=True)
class Decision:
    """A person's decision on an escalated or failed run, as recorded."""

    run_id: str
    step_id: str | None
    decision: str  # approved, rejected, retried, expired, dropped
    decided_by: str
    content_hash: str | None = None
    note: str | None = None
    content: Any = None
    decided_at: datetime = field(default_factory=now)
    diff: Any = None  # [{path, before, after}] of what the person changed
    override: str | None = None  # why the person approved past a policy
    # The policy checks the override covers -> the fingerprint of the text approved
    # (kept in the decision's event, where the check looks for it).
    overrides: Mapping[str, str] | None = None
