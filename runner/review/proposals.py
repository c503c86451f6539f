"""What a reviewer decides on: where a run stopped, why, and the output it proposes.

The proposal of an escalation is the output of the step a person approves: the stopped
step's own (a gate, an error, an approval step's proposed values), or for a policy check
the output its text came from (the draft). A switch route proposes nothing to edit.
Beside it, what the reviewer should see: the findings and scores of the visit that
stopped the run (not of earlier ones), who may decide, where each decision leads and
when the review expires.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from runner.core.events import (
    AnswerInvalid,
    ConfidenceScored,
    EffectEvent,
    Event,
    PolicyFired,
    last_visit,
)
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
    invalid_answers: Sequence[AnswerInvalid] = ()  # model answers that did not fit
    on_approved: str | None = None  # where an approval leads (a step or an ending)
    on_rejected: str | None = None  # where a rejection leads; None: the run is closed
    on_expired: str | None = None  # where the run goes when its review expires
    expires_after_seconds: float | None = None  # the review's time limit, if any

    @property
    def due_at(self) -> datetime | None:
        """When the review expires: the deadline stored with the run, else (a run that
        stopped before deadlines were stored) by the flow's time limit."""
        if self.run.due_at is not None or self.run.status != RunStatus.ESCALATED:
            return self.run.due_at
        if self.expires_after_seconds is None:
            return None
        return self.run.updated_at + timedelta(seconds=self.expires_after_seconds)


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
    step = flow.find(step_id)
    target = step.review_target() if step is not None else step_id
    target_step = flow.find(target)
    stored = outputs_of(store, record.id).get(target)
    content = target_step.proposal_of(stored) if target_step is not None else stored
    events = store.events(record.id)
    visit = last_visit(events, step_id)
    waiting = record.status == RunStatus.ESCALATED
    return Proposal(
        run=record,
        step_id=step_id,
        target=target,
        content=content,
        content_hash=content_hash(content),
        schema=output_schema(flow, target_step),
        effect_key=_in_doubt(visit) if waiting else None,
        **_score(visit),
        editable=step.editable if step is not None else True,
        reviewers=step.reviewers() if step is not None else (),
        **_approval(stored if target_step is not None and target == step_id else None),
        hits=[e for e in visit if isinstance(e, PolicyFired)],
        invalid_answers=_invalid(last_visit(events, target)),
        **(_routes(compiled, step) if step is not None else {}),
    )


def output_schema(flow: Flow, step: Step | None) -> Any:
    """What an approved (or edited) output must fit: the step's output schema."""
    schema = step.output_schema_in(flow) if step is not None else None
    return True if schema is None else schema


def _in_doubt(events: Sequence[Event]) -> str | None:
    doubt = [e for e in events if isinstance(e, EffectEvent) and e.status == "in_doubt"]
    return doubt[-1].key if doubt else None


def _score(events: Sequence[Event]) -> dict[str, Any]:
    """The score that stopped the run: of the gates that failed (a step may have several),
    the lowest; without a failed gate, the last gate's."""
    gates = [e for e in events if isinstance(e, ConfidenceScored)]
    failed = [g for g in gates if not g.passed]
    worst: ConfidenceScored | None = gates[-1] if gates else None
    if failed:
        worst = min(failed, key=lambda g: -1.0 if g.score is None else g.score)
    return {
        "score": worst.score if worst else None,
        "method": (worst.gate or worst.method) if worst else None,
    }


def _approval(output: Any) -> dict[str, Any]:
    if not isinstance(output, dict) or "proposed" not in output:
        return {}
    return {"title": output.get("title"), "shown": output.get("show") or {}}


def _invalid(events: Sequence[Event]) -> list[AnswerInvalid]:
    return [e for e in events if isinstance(e, AnswerInvalid) and e.answer is not None]


def _routes(compiled: CompiledFlow, step: Step) -> dict[str, Any]:
    """Where approving, rejecting and letting the review expire lead from `step`."""
    seconds, expired = step.review_expiry(compiled.flow)
    routes = step.routes()
    if Outcome.EXPIRED in routes:
        expired = _route(compiled, step, Outcome.EXPIRED) or expired
    rejected = _route(compiled, step, Outcome.REJECTED) if Outcome.REJECTED in routes else None
    return {
        "on_approved": _route(compiled, step, step.success),
        "on_rejected": rejected,
        "on_expired": expired if seconds else None,
        "expires_after_seconds": seconds or None,
    }


def _route(compiled: CompiledFlow, step: Step, trigger: str) -> str | None:
    try:
        return compiled.route(step.id, trigger)
    except KeyError:
        return None


def proposal_json(p: Proposal) -> dict[str, Any]:
    """A proposal as `--format json` gives it: the text's data, as fields."""
    return {
        "run": p.run.id,
        "flow": p.run.flow_name,
        "status": p.run.status,
        "step": p.step_id,
        "reason": p.run.reason,
        "title": p.title,
        "shown": dict(p.shown),
        "score": p.score,
        "method": p.method,
        "proposed_step": p.target,
        "proposed_output": p.content,
        "content_hash": p.content_hash,
        "editable": p.editable,
        "effect_in_doubt": p.effect_key,
        "hits": [h.data for h in p.hits],
        "invalid_answers": [
            {"repair": a.repair, "problem": a.problem, "answer": a.answer}
            for a in p.invalid_answers
        ],
        "reviewers": list(p.reviewers),
        "due_at": p.due_at.isoformat() if p.due_at else None,
        "on_approved": p.on_approved,
        "on_rejected": p.on_rejected,
        "on_expired": p.on_expired,
        "error": p.run.error,
        "input": p.run.input,
        "updated_at": p.run.updated_at.isoformat(),
    }
