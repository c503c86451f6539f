"""What the inbox's pages show, as plain records for the templates: the queues' rows,
the text a policy fired on with each finding marked, the timeline and the decisions.

Values are text here; the templates escape them. The one exception is `marked`, which
builds the <mark> tags around the findings itself, after escaping every piece of the
text (markupsafe.escape), never from unescaped text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from markupsafe import Markup, escape

from runner.core import templates
from runner.core.errors import RunnerError
from runner.kinds.steps.policies import PolicyStep
from runner.lang.compiler import CompiledFlow
from runner.review import reading
from runner.review.proposals import Proposal
from runner.runtime.visit import RunState, context
from runner.store.records import Decision

EXCERPT_MARGIN = 20  # characters a policy finding's excerpt keeps each side of it


@dataclass(frozen=True)
class QueueRow:
    """A run waiting for review, as the queue shows it."""

    run_id: str
    flow: str
    step: str
    title: str | None
    kind: str  # a key of reading.REASON_KINDS
    reason: str
    score: str
    due: str
    overdue: bool
    age: str


@dataclass(frozen=True)
class DeadRow:
    """A failed run, as the dead-letter queue shows it."""

    run_id: str
    flow: str
    step: str
    error: str
    attempts: int | None  # of the failed step's call, when it was retried
    age: str
    seen: str  # the state tag its forms carry
    hash: str


@dataclass(frozen=True)
class Change:
    """One value a person changed: where, and before -> after, as text."""

    path: str
    before: str
    after: str


@dataclass(frozen=True)
class HistoryItem:
    """A decision on the run, as its history shows it."""

    at: datetime
    by: str
    decision: str
    note: str | None
    override: str | None
    changes: list[Change]


def queue_row(p: Proposal, at: datetime) -> QueueRow:
    return QueueRow(
        run_id=p.run.id,
        flow=p.run.flow_name,
        step=p.step_id,
        title=p.title,
        kind=reading.reason_kind(p),
        reason=reading.reason(p),
        score="-" if p.score is None else f"{p.score:.2f}",
        due=reading.due(p, at),
        overdue=reading.overdue(p, at),
        age=reading.age(p.run.updated_at, at),
    )


def dead_row(p: Proposal, at: datetime, seen: str) -> DeadRow:
    error = p.run.error if isinstance(p.run.error, Mapping) else {}
    tried = error.get("attempts")
    return DeadRow(
        run_id=p.run.id,
        flow=p.run.flow_name,
        step=p.step_id,
        error=str(error.get("message") or reading.reason(p)),
        attempts=len(tried) if isinstance(tried, list) and tried else None,
        age=reading.age(p.run.updated_at, at),
        seen=seen,
        hash=p.content_hash,
    )


def shown(value: Any) -> str:
    """A value as one line of text: a string as it is, anything else as JSON."""
    if value is None:
        return "(none)"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def changes(diff: Any) -> list[Change]:
    """A decision's diff ([{path, before, after}]) as text."""
    if not isinstance(diff, list):
        return []
    return [
        Change(str(c.get("path")), shown(c.get("before")), shown(c.get("after")))
        for c in diff
        if isinstance(c, Mapping)
    ]


def history(decisions: Sequence[Decision]) -> list[HistoryItem]:
    return [
        HistoryItem(d.decided_at, d.decided_by, d.decision, d.note, d.override, changes(d.diff))
        for d in decisions
    ]


def marked(text: str, spans: Sequence[tuple[int, int]]) -> Markup:
    """`text`, escaped, with each span in <mark> (overlapping spans as one)."""
    pieces: list[str] = []
    at = 0
    for start, end in _merged(spans, len(text)):
        pieces += [escape(text[at:start]), Markup("<mark>"), escape(text[start:end])]
        pieces.append(Markup("</mark>"))
        at = end
    pieces.append(escape(text[at:]))
    return Markup("").join(pieces)


def _merged(spans: Sequence[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted((max(0, s), min(size, e)) for s, e in spans):
        if start >= end:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def checked_text(compiled: CompiledFlow, p: Proposal, outputs: Mapping[str, Any]) -> Markup | None:
    """The text the stopped policy check read, its findings marked; None when the run
    did not stop at a policy check, or the text cannot be told again exactly.

    The text is rendered again from what the store holds, without the environment (a
    text that reads `env` or `secret` is not shown). It is shown only if every finding
    points at the same characters in it as when the check ran: a stored output that was
    redacted would make another text."""
    step = compiled.flow.find(p.step_id)
    if not isinstance(step, PolicyStep) or not p.hits:
        return None
    state = RunState(p.run.id, p.run.flow_name, p.run.input, dict(outputs), 0)
    try:
        text = str(templates.render(step.text, context(state, {})))
    except RunnerError:
        return None
    spans = []
    for hit in p.hits:
        if hit.start is None or hit.end is None or not 0 <= hit.start <= hit.end <= len(text):
            return None
        start, end = hit.start, hit.end
        around = text[max(0, start - EXCERPT_MARGIN) : end + EXCERPT_MARGIN]
        if hit.excerpt is not None and hit.excerpt != around:
            return None
        spans.append((start, end))
    return marked(text, spans)
