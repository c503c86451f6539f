"""How the API shows runs, and the cursors of its run listing.

A run is shown without its lease (which process holds it is the store's business) and,
in the listing, without its input and error (they may be large). A cursor is the
(created_at, id) of the last run of a page, as url-safe base64 of JSON: opaque to
clients, and checked when it comes back, since anyone can send one.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from runner.core.errors import RunnerError
from runner.store.records import Checkpoint, RunRecord


class CursorError(RunnerError):
    """A cursor this API did not give out."""


def run_path(run_id: str) -> str:
    """The run's URL path (its `self` link and the Location of a submission)."""
    return f"/v1/runs/{quote(run_id, safe='')}"


def run_view(record: RunRecord) -> dict[str, Any]:
    """A run as the listing and the decisions show it."""
    return {
        "id": record.id,
        "flow": record.flow_name,
        "status": record.status,
        "position": record.position,
        "failed_step": record.failed_step,
        "reason": record.reason,
        "created_at": _time(record.created_at),
        "updated_at": _time(record.updated_at),
        "steps_run": record.steps_run,
        "llm_calls": record.llm_calls,
        "tokens": record.tokens,
        "cost_usd": record.cost_usd,
        "due_at": _time(record.due_at) if record.due_at else None,
        "links": {"self": run_path(record.id)},
    }


def run_detail(
    record: RunRecord, steps: list[Checkpoint], proposal: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A run with its input, its error, its finished steps (not their outputs) and,
    while it waits for review, its proposal."""
    return {
        **run_view(record),
        "input": record.input,
        "error": record.error,
        "proposal": proposal,
        "steps": [
            {
                "step_id": c.step_id,
                "outcome": c.outcome,
                "route": c.route,
                "attempts": c.attempts,
                "started_at": _time(c.started_at),
                "finished_at": _time(c.finished_at),
            }
            for c in steps
        ],
    }


def cursor_after(record: RunRecord) -> str:
    """The cursor of the page that follows `record`."""
    pair = json.dumps([_time(record.created_at), record.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(pair.encode()).decode().rstrip("=")


def cursor_position(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor stands for; CursorError if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, run_id = json.loads(raw)
        stamp = datetime.fromisoformat(at)
        if not isinstance(run_id, str) or stamp.tzinfo is None:
            raise ValueError("not a (time, id) pair")
        return stamp.astimezone(UTC), run_id
    except (binascii.Error, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise CursorError("the cursor is not one this API gave out") from exc


def _time(moment: datetime) -> str:
    """A stored time in ISO 8601, UTC (SQLite hands times back without their zone)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat()
