"""A step's commit on PostgreSQL in one statement and one round trip.

The commit is fenced by the lease and writes up to four tables: the run's new position
(only while the caller holds the lease), the checkpoint, the effect's row and the
events. Through SQLAlchemy that is a connection check, BEGIN, four statements and
COMMIT: six round trips. Here it is one statement, run on its own (autocommit, so the
server commits it as a transaction of its own, durably, before it answers):

    WITH moved AS (UPDATE runs ... WHERE id = :rid AND lease_owner = :owner RETURNING id),
         cp AS (INSERT INTO checkpoints SELECT ... FROM moved),
         fx AS (UPDATE effects ... WHERE key = :key AND EXISTS (SELECT 1 FROM moved)),
         ev AS (INSERT INTO events SELECT ... FROM moved, jsonb_to_recordset(:events))
    SELECT count(*) FROM moved

Every part but the fence reads `moved`: when the lease is not the caller's, nothing
at all is written, and the count says so. The statement is atomic like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from runner.store.records import Event, StepCommit
from runner.store.sqlite import dumps

COMMIT_STEP = sa.text(
    """
WITH moved AS (
    UPDATE runs SET
        status = :status, position = :position, updated_at = :updated_at,
        failed_step = :failed_step, reason = :reason, error = CAST(:error AS json),
        steps_run = steps_run + 1, lease_owner = :new_owner, lease_expires = :lease_expires,
        llm_calls = :llm_calls, tokens = :tokens, cost_usd = :cost_usd, due_at = :due_at
    WHERE id = :rid AND lease_owner = :owner
    RETURNING id
), cp AS (
    INSERT INTO checkpoints
        (run_id, seq, step_id, outcome, route, output, attempts, started_at, finished_at)
    SELECT id, :seq, :step_id, :outcome, :route, CAST(:output AS json), :attempts,
        :started_at, :finished_at
    FROM moved
), fx AS (
    UPDATE effects SET
        status = :effect_status, result = CAST(:effect_result AS json), finished_at = :updated_at
    WHERE key = :effect_key AND EXISTS (SELECT 1 FROM moved)
), ev AS (
    INSERT INTO events (run_id, at, kind, step_id, data)
    SELECT moved.id, e.at, e.kind, e.step_id, e.data
    FROM moved, jsonb_to_recordset(CAST(:events AS jsonb))
        AS e(at timestamptz, kind text, step_id text, data json)
)
SELECT count(*) FROM moved
"""
)


def commit_params(run: dict[str, Any], commit: StepCommit) -> dict[str, Any]:
    """The statement's values: `run` (the run's new state, as ADVANCE_RUN takes it) and
    the checkpoint, effect and events of `commit`."""
    cp = commit.checkpoint
    key, effect_status, result = commit.effect or (None, None, None)
    return {
        **run,
        "error": dumps(run["error"]),
        "seq": cp.seq,
        "step_id": cp.step_id,
        "outcome": cp.outcome,
        "route": cp.route,
        "output": dumps(cp.output),
        "attempts": cp.attempts,
        "started_at": cp.started_at,
        "finished_at": cp.finished_at,
        "effect_key": key,
        "effect_status": effect_status,
        "effect_result": dumps(result),
        "events": dumps(_events(commit.events)),
    }


def _events(batch: Sequence[Event]) -> list[dict[str, Any]]:
    return [
        {"at": _iso(e.at), "kind": e.kind, "step_id": e.step_id, "data": dict(e.data)}
        for e in batch
    ]


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def commit_step(engine: sa.Engine, run: dict[str, Any], commit: StepCommit) -> bool:
    """Write the step in one statement; False, with nothing written, when the lease is
    not the caller's."""
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        moved = conn.execute(COMMIT_STEP, commit_params(run, commit)).scalar()
    return moved == 1
