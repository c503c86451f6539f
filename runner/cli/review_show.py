"""How the review and dead-letter queues read in the terminal: `review show` (why a run
stopped, what a person decides on, who may decide, until when, and the commands that
decide), the queue tables, and the same data as JSON. The desk decides; this module
only words it, with runner.review.reading (which the browser's inbox shares).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from runner.core.events import Event
from runner.core.text import short
from runner.core.vocabulary import ENDINGS, RunStatus
from runner.review.edits import describe_hits
from runner.review.proposals import Proposal
from runner.review.reading import age, due, reason, span, waiting_order

INDENT = " " * 9  # where a value starts: after an 8-character label and a space
ANSWER_SHOWN = 300  # characters of each invalid model answer shown
LINES_SHOWN = 40  # lines of a proposal (or of a shown value) before it is cut

# The times, the order and the reasons are runner.review.reading's (the inbox's too).
__all__ = ["age", "due", "print_proposal", "queue_rows", "reason", "span", "waiting_order"]


def queue_rows(items: Sequence[Proposal], status: str, at: datetime) -> list[tuple[str, ...]]:
    """The review queue's table (RUN FLOW STEP REASON SCORE DUE AGE), or the dead-letter
    queue's (RUN FLOW STEP ERROR AGE)."""
    if status != RunStatus.ESCALATED:
        rows: list[tuple[str, ...]] = [("RUN", "FLOW", "STEP", "ERROR", "AGE")]
        for p in items:
            why = short(reason(p), 60)
            rows.append((p.run.id, p.run.flow_name, p.step_id, why, age(p.run.updated_at, at)))
        return rows
    rows = [("RUN", "FLOW", "STEP", "REASON", "SCORE", "DUE", "AGE")]
    for p in items:
        score = "-" if p.score is None else f"{p.score:.2f}"
        why = short(reason(p), 60)
        when = (due(p, at), age(p.run.updated_at, at))
        rows.append((p.run.id, p.run.flow_name, p.step_id, why, score, *when))
    return rows


# -- review show ----------------------------------------------------------------------------
def print_proposal(p: Proposal, events: Sequence[Event], out: TextIO) -> None:
    """Everything above a run's audit trail in `review show` and `dlq show`."""
    at = datetime.now(UTC)
    lines = [*_where(p, events, at), *_approval(p), *_doubt(p)]
    lines += _block("input", [short(json.dumps(p.run.input, ensure_ascii=False), 300)])
    if p.run.status == RunStatus.ESCALATED:
        lines += [*_hits(p), *_invalid(p), *_proposed(p), *_who(p), *_expiry(p, at)]
        lines += _decide(p)
    elif p.run.status == RunStatus.FAILED:
        if p.run.error:
            lines += _block("error", [short(p.run.error.get("message", ""), 300)])
        lines += _commands(
            [
                (f"runner dlq retry {p.run.id}", f"resumes at {p.step_id}"),
                (f"runner dlq drop {p.run.id}", "archives the run, keeping its audit trail"),
            ]
        )
    print("\n".join(lines), file=out)


def _block(label: str, lines: Sequence[str]) -> list[str]:
    """Lines under a label: the first beside it, the rest indented as far."""
    return [f"{label:<8} {line}" if i == 0 else INDENT + line for i, line in enumerate(lines)]


def _where(p: Proposal, events: Sequence[Event], at: datetime) -> list[str]:
    run = f"{p.run.id} ({p.run.flow_name}), {p.run.status} {age(p.run.updated_at, at)} ago"
    lines = _block("run", [run])
    if not p.run.failed_step:
        return lines + _block("status", [f"{p.run.status}: nothing waits for a decision"])
    why = "an approval step" if p.title is not None else reason(p, events)
    lines += _block("stopped", [f"at {p.step_id}" + (", " if p.title else ": ") + why])
    if p.score is not None:
        lines += _block("score", [f"{p.score:.3f} ({p.method})"])
    return lines


def _approval(p: Proposal) -> list[str]:
    """An approval step's title and what it shows, each value under its label."""
    if p.title is None:
        return []
    lines = _block("title", [p.title])
    if p.shown:
        width = max(len(label) for label in p.shown) + 1
        shown: list[str] = []
        for label, value in p.shown.items():
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            rows = [short(row, 300) for row in text.splitlines()[:LINES_SHOWN]] or [""]
            shown += [
                f"{label + ':':<{width}} {rows[0]}",
                *(" " * (width + 1) + r for r in rows[1:]),
            ]
        lines += _block("show", shown)
    return lines


def _doubt(p: Proposal) -> list[str]:
    if not p.effect_key:
        return []
    return [
        f"in doubt effect {p.effect_key} may have happened: approve if it did, "
        f"retry --from {p.step_id} if it did not"
    ]


def _hits(p: Proposal) -> list[str]:
    """The policy findings, each distinct one once (with a count), excerpts on one line."""
    found: list[Mapping[str, Any]] = [
        {**h.data, "excerpt": short(h.excerpt, 120) if h.excerpt else None} for h in p.hits
    ]
    return _block("hits", describe_hits(found)) if found else []


def _invalid(p: Proposal) -> list[str]:
    """What the model wrote that did not fit the schema: its own words, bounded."""
    if not p.invalid_answers:
        return []
    lines = [
        f"answers of {p.target} that did not fit its schema "
        f"(first {ANSWER_SHOWN} characters of each):"
    ]
    for number, answer in enumerate(p.invalid_answers, 1):
        lines.append(f"{number}. {short(answer.answer or '', ANSWER_SHOWN)}")
        lines.append(f"   problem: {short(answer.problem, ANSWER_SHOWN)}")
    return _block("invalid", lines)


def _proposed(p: Proposal) -> list[str]:
    """What approving accepts: the proposed output (or values), or nothing to edit."""
    hash_ = p.content_hash[:12]
    if not p.editable:
        return [f"nothing to edit: approve to continue on `{p.on_approved}`, or reject"]
    if p.content is None:
        return [f"proposed output of {p.target} (hash {hash_}): none was recorded"]
    what = "proposed values" if p.title is not None else f"proposed output of {p.target}"
    shown = json.dumps(p.content, indent=2, ensure_ascii=False).splitlines()
    if len(shown) > LINES_SHOWN:
        shown = [
            *shown[:LINES_SHOWN],
            f"... ({len(shown) - LINES_SHOWN} more lines: --format json)",
        ]
    return [f"{what} (hash {hash_}):", *("  " + line for line in shown)]


def _who(p: Proposal) -> list[str]:
    if not p.reviewers:
        return _block("who", ["anyone"])
    return _block("who", [f'{", ".join(p.reviewers)} (--as "Your Name ({p.reviewers[0]})")'])


def _expiry(p: Proposal, at: datetime) -> list[str]:
    if p.due_at is None:
        return _block("expires", ["never"])
    left = (p.due_at - at).total_seconds()
    when = f"in {span(left)}" if left > 0 else f"overdue by {span(-left)}"
    moment = p.due_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return _block("expires", [f"{moment} ({when}) -> {p.on_expired}"])


def _decide(p: Proposal) -> list[str]:
    """The commands that decide, each with where it leads; how to edit, if one may."""
    approve = f"runner review approve {p.run.id} --hash {p.content_hash[:12]}"
    rejected = _leads(p.on_rejected) if p.on_rejected else "closes the run"
    pairs = [
        (approve, _leads(p.on_approved)),
        (f"runner review reject {p.run.id} --reason TEXT", rejected),
    ]
    if p.editable and p.title is None:  # an approval or a route decides the same again
        pairs.append(
            (f"runner review retry {p.run.id} --from {p.target}", f"runs {p.target} again")
        )
    lines = _commands(pairs)
    if p.editable:
        how = "--set PATH=VALUE (repeatable) or --edit FILE"
        what = "give the output it should have" if p.content is None else "change values"
        lines += _block("edit", [f"to {what}, approve with {how}"])
    if p.editable and p.hits:
        lines.append(
            INDENT + "an edit that still breaks a policy is refused: add --override REASON"
        )
    return lines


def _leads(route: str | None) -> str:
    if route is None:
        return ""
    return f"ends at {route}" if route in ENDINGS else f"continues at {route}"


def _commands(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """Commands in a column, each followed by what it does."""
    width = max(len(command) for command, _ in pairs)
    return _block("decide", [f"{c:<{width}}  {what}".rstrip() for c, what in pairs])
