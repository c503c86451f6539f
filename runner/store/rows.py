"""The store's records as table rows and back: one place that knows both shapes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from runner.core.errors import StoreError
from runner.core.events import DecisionMade, FlowChanged
from runner.store.leases import lease_until
from runner.store.records import (
    Checkpoint,
    Decision,
    Effect,
    Event,
    FlowVersion,
    RunRecord,
    StepCommit,
    aware,
    now,
)
from runner.store.tables import effects, flow_versions, runs


def by_prefix(conn: sa.Connection, prefix: str) -> Any:
    """The one run whose id starts with `prefix`."""
    rows = conn.execute(
        runs.select().where(runs.c.id.startswith(prefix, autoescape=True)).limit(2)
    ).all()
    if len(rows) == 1:
        return rows[0]
    raise StoreError(f"no run {prefix}" if not rows else f"run id {prefix} is ambiguous")


def holds(conn: sa.Connection, run_id: str, owner: str) -> bool:
    """Whether `owner` holds the run's lease, read inside the caller's transaction and
    kept so until it ends: the row stays locked (FOR UPDATE on PostgreSQL; SQLite's
    write lock is held already), so no claim can take the run before the write that
    this check guards commits."""
    query = sa.select(runs.c.lease_owner).where(runs.c.id == run_id).with_for_update()
    return bool(conn.execute(query).scalar() == owner)


def same(column: Any, value: Any) -> Any:
    """`column = value`, where None matches NULL."""
    return column.is_(None) if value is None else column == value


def advanced(
    run_id: str, owner: str, commit: StepCommit, stamp: datetime, lease_seconds: float
) -> dict[str, Any]:
    """The values ADVANCE_RUN moves the run with: its new status, position and model
    use; the lease kept by `owner` (renewed from `stamp`), or given up when it ends."""
    ending = commit.status != "running"
    return {
        "rid": run_id,
        "owner": owner,
        "new_owner": None if ending else owner,
        "status": commit.status,
        "position": commit.position,
        "updated_at": stamp,
        "failed_step": commit.failed_step,
        "reason": commit.reason,
        "error": commit.error,
        "lease_expires": None if ending else lease_until(stamp, lease_seconds),
        "llm_calls": commit.usage[0],
        "tokens": commit.usage[1],
        "cost_usd": commit.usage[2],
        "due_at": commit.due_at,
    }


def checkpoint_row(run_id: str, cp: Checkpoint) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "seq": cp.seq,
        "step_id": cp.step_id,
        "outcome": cp.outcome,
        "route": cp.route,
        "output": cp.output,
        "attempts": cp.attempts,
        "started_at": cp.started_at,
        "finished_at": cp.finished_at,
    }


def checkpoint_of(row: Any) -> Checkpoint:
    return Checkpoint(
        row.seq,
        row.step_id,
        row.outcome,
        row.route,
        row.output,
        row.attempts,
        aware(row.started_at) or now(),
        aware(row.finished_at) or now(),
    )


def event_rows(run_id: str, batch: Sequence[Event]) -> list[dict[str, Any]]:
    return [
        {"run_id": run_id, "at": e.at, "kind": e.kind, "step_id": e.step_id, "data": dict(e.data)}
        for e in batch
    ]


def decision_row(decision: Decision) -> dict[str, Any]:
    return {
        "run_id": decision.run_id,
        "step_id": decision.step_id,
        "decision": decision.decision,
        "decided_by": decision.decided_by,
        "decided_at": decision.decided_at,
        "content_hash": decision.content_hash,
        "note": decision.note,
        "content": decision.content,
        "diff": decision.diff,
        "override": decision.override,
    }


def decision_of(row: Any) -> Decision:
    return Decision(
        row.run_id,
        row.step_id,
        row.decision,
        row.decided_by,
        row.content_hash,
        row.note,
        row.content,
        aware(row.decided_at) or now(),
        row.diff,
        row.override,
    )


def decision_event(decision: Decision, status: str, position: str) -> DecisionMade:
    """The audit trail's entry for a decision that moved the run to `position`."""
    return DecisionMade(
        step_id=decision.step_id,
        decision=decision.decision,
        by=decision.decided_by,
        content_hash=decision.content_hash,
        note=decision.note,
        status=status,
        position=position,
        diff=decision.diff,
        override=decision.override,
        overrides=decision.overrides,
    )


def effect_of(row: Any) -> Effect:
    return Effect(row.key, row.run_id, row.step_id, row.tool, row.status, row.result)


def flow_version_of(row: Any) -> FlowVersion:
    return FlowVersion(
        row.digest,
        row.name,
        row.path,
        row.text,
        row.git_commit,
        abs_path=row.abs_path,
        git_root=row.git_root,
        repo_path=row.repo_path,
    )


def run_record(row: Any) -> RunRecord:
    return RunRecord(
        id=row.id,
        flow_name=row.flow_name,
        flow_digest=row.flow_digest,
        status=row.status,
        position=row.position,
        failed_step=row.failed_step,
        reason=row.reason,
        error=row.error,
        input=row.input,
        steps_run=row.steps_run,
        llm_calls=row.llm_calls,
        tokens=row.tokens,
        cost_usd=row.cost_usd,
        lease_owner=row.lease_owner,
        created_at=aware(row.created_at) or now(),
        updated_at=aware(row.updated_at) or now(),
        due_at=aware(row.due_at),
        lease_expires=aware(row.lease_expires),
    )


# -- statements that write rows ----------------------------------------------------------
def pinned(dialect: str, version: FlowVersion, stamp: datetime) -> Any:
    """The insert that stores a flow version unless its digest is stored already. It is
    race-free: of processes (or threads) pinning one new version at once, one writes it
    and the others find it there (INSERT ... ON CONFLICT DO NOTHING)."""
    values = {
        "digest": version.digest,
        "name": version.name,
        "path": version.path,
        "git_commit": version.git_commit,
        "text": version.text,
        "created_at": stamp,
        "abs_path": version.abs_path,
        "git_root": version.git_root,
        "repo_path": version.repo_path,
    }
    if dialect == "postgresql":
        return postgresql.insert(flow_versions).values(values).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(flow_versions).values(values).on_conflict_do_nothing()
    raise StoreError(f"runner keeps runs in SQLite or PostgreSQL, not in {dialect}")


def renewed(run_id: str, owner: str, lease_seconds: float) -> Any:
    """The update that extends `owner`'s lease on the run, if it still holds it."""
    return (
        runs.update()
        .where(runs.c.id == run_id, runs.c.lease_owner == owner)
        .values(lease_expires=lease_until(now(), lease_seconds))
    )


def new_run_row(
    run_id: str,
    version: FlowVersion,
    input_value: Any,
    first_step: str,
    owner: str,
    lease_seconds: float,
) -> dict[str, Any]:
    """A new run, running at its first step and leased to `owner`."""
    stamp = now()
    return {
        "id": run_id,
        "flow_name": version.name,
        "flow_digest": version.digest,
        "status": "running",
        "position": first_step,
        "input": input_value,
        "steps_run": 0,
        "llm_calls": 0,
        "tokens": 0,
        "cost_usd": 0.0,
        "lease_owner": owner,
        "lease_expires": lease_until(stamp, lease_seconds),
        "created_at": stamp,
        "updated_at": stamp,
        "failed_step": None,
        "reason": None,
        "error": None,
    }


def claimed(
    record: RunRecord, holder: str | None, owner: str, reopen_at: str | None, lease_seconds: float
) -> Any:
    """The update that leases a run to `owner`, if `holder` still holds it; with
    `reopen_at`, the run runs again from that step."""
    stamp = now()
    values: dict[str, Any] = {
        "lease_owner": owner,
        "updated_at": stamp,
        "lease_expires": lease_until(stamp, lease_seconds),
    }
    if reopen_at:
        values.update(status="running", position=reopen_at, reason=None, error=None)
    return (
        runs.update()
        .where(
            runs.c.id == record.id,
            runs.c.status == record.status,
            same(runs.c.lease_owner, holder),
        )
        .values(**values)
    )


START_EFFECT = effects.insert()


def started_effect(key: str, run_id: str, step_id: str, tool: str) -> dict[str, Any]:
    """The ledger row of an effect about to run, new (inserted with START_EFFECT)."""
    return {
        "key": key,
        "run_id": run_id,
        "step_id": step_id,
        "tool": tool,
        "status": "started",
        "started_at": now(),
    }


def restarted_effect(key: str, run_id: str, step_id: str, tool: str) -> Any:
    """The update that starts a failed effect's ledger row again."""
    return (
        effects.update()
        .where(effects.c.key == key)
        .values(
            status="started",
            run_id=run_id,
            step_id=step_id,
            result=None,
            started_at=now(),
            finished_at=None,
        )
    )


def decided(
    record: RunRecord,
    status: str,
    position: str,
    owner: str | None,
    checkpoint: Checkpoint | None,
    due_at: datetime | None,
    lease_seconds: float,
) -> Any:
    """The update that moves a decided run, if it is still as `record` shows it."""
    stamp = now()
    return (
        runs.update()
        .where(
            runs.c.id == record.id,
            runs.c.status == record.status,
            runs.c.steps_run == record.steps_run,
            runs.c.lease_owner.is_(None),
        )
        .values(
            status=status,
            position=position,
            updated_at=stamp,
            lease_owner=owner,
            lease_expires=lease_until(stamp, lease_seconds) if owner else None,
            reason=None if status == "running" else record.reason,
            due_at=due_at,
            steps_run=runs.c.steps_run + (1 if checkpoint else 0),
        )
    )


def repinned(run_id: str, owner: str, digest: str) -> Any:
    """The update that moves a run `owner` holds to the flow version `digest`."""
    return (
        runs.update()
        .where(runs.c.id == run_id, runs.c.lease_owner == owner)
        .values(flow_digest=digest)
    )


def flow_changed(record: RunRecord, version: FlowVersion) -> FlowChanged:
    """The audit trail's entry for a run moved to another version of its flow."""
    return FlowChanged(from_digest=record.flow_digest, to_digest=version.digest, path=version.path)
