"""What a reviewer decides on: where a run stopped, why, and the output it proposes.

The proposal of an escalation is the output of the step a person approves: the stopped
step's own (a gate, an error, an approval step's proposed values), or for a policy check
the output its text came from (the draft). A switch route proposes nothing to edit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from runner.core.events import AnswerInvalid, ConfidenceScored, EffectEvent, Event, PolicyFired
from runner.core.vocabulary import Outcome, RunStatus
from runner.lang.compiler import CompiledFlow
from runner.lang.model import Flow, Step
from runner.store.base import Store
from runner.store.records import RunRecord


@dataclass(frozen=True)
class Proposal:
    """What a reviewer decides on: where the run stopped, and the output it proposes."""

    run: RunRecord
    step_id: str
    target: str  # the step whose output is approved (or edited)
    content: Any
    content_hash: str
    schema: Any
    effect_key: str | None
    score: float | None
    method: str | None
    editable: bool = True
    reviewers: tuple[str, ...] = ()
    title: str | None = None  # an approval step's title
    shown: Mapping[str, Any] = field(default_factory=dict)  # an approval step's `show`
    hits: Sequence[PolicyFired] = ()  # the policy findings that stopped the run
    invalid_answers: Sequence[str] = ()  # what a model wrote that did not fit its schema

    @property
    def due_at(self) -> datetime | None:
        return self.run.due_at


def content_hash(value: Any) -> str:
    """sha256 of a value's canonical JSON: the fingerprint of what was approved."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def outputs_of(store: Store, run_id: str) -> dict[str, Any]:
    """Each finished step's latest output."""
    return {c.step_id: c.output for c in store.checkpoints(run_id) if c.outcome != Outcome.ERROR}


def build_proposal(store: Store, compiled: CompiledFlow, record: RunRecord) -> Proposal:
    """The proposal of a stopped run, with what a reviewer should see beside it."""
    flow = compiled.flow
    step_id = record.failed_step or record.position
    step = _step(flow, step_id)
    target = step.review_target() if step is not None else step_id
    target_step = _step(flow, target)
    stored = outputs_of(store, record.id).get(target)
    content = target_step.proposal_of(stored) if target_step is not None else stored
    events = [e for e in store.events(record.id) if e.step_id == step_id]
    waiting = record.status == RunStatus.ESCALATED
    return Proposal(
        run=record,
        step_id=step_id,
        target=target,
        content=content,
        content_hash=content_hash(content),
        schema=output_schema(flow, target_step),
        effect_key=_in_doubt(events) if waiting else None,
        **_score(events),
        editable=step.editable if step is not None else True,
        reviewers=step.reviewers() if step is not None else (),
        **_approval(stored if target_step is not None and target == step_id else None),
        hits=[e for e in events if isinstance(e, PolicyFired)],
        invalid_answers=_invalid(store.events(record.id), target),
    )


def output_schema(flow: Flow, step: Step | None) -> Any:
    """What an approved (or edited) output must fit: the step's output schema."""
    schema = step.output_schema_in(flow) if step is not None else None
    return True if schema is None else schema


def _step(flow: Flow, step_id: str) -> Step | None:
    return flow.step(step_id) if step_id in {s.id for s in flow.steps} else None


def _in_doubt(events: Sequence[Event]) -> str | None:
    doubt = [e for e in events if isinstance(e, EffectEvent) and e.status == "in_doubt"]
    return doubt[-1].key if doubt else None


def _score(events: Sequence[Event]) -> dict[str, Any]:
    gates = [e for e in events if isinstance(e, ConfidenceScored)]
    return {
        "score": gates[-1].score if gates else None,
        "method": gates[-1].method if gates else None,
    }


def _approval(output: Any) -> dict[str, Any]:
    if not isinstance(output, dict) or "proposed" not in output:
        return {}
    return {"title": output.get("title"), "shown": output.get("show") or {}}


def _invalid(events: Sequence[Event], target: str) -> list[str]:
    return [
        e.answer
        for e in events
        if isinstance(e, AnswerInvalid) and e.step_id == target and e.answer is not None
    ]
