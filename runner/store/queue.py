"""The run queue: runs submitted to be run later, and workers claiming them.

`runner submit` and `runner serve` queue runs (status queued, no lease); `runner worker`
processes claim them, with interrupted runs (running, lease lapsed or given up), oldest
first. On PostgreSQL a claim is `SELECT ... FOR UPDATE SKIP LOCKED`, so workers on any
number of hosts claim disjoint runs without waiting for one another; on SQLite the same
statements run under the database's one write lock. Each claimed run is leased to an
owner token of its own: every later commit of the run is fenced by that token (see
`Store.commit_step`), so a worker that lost a run's lease can never write over its new
holder.

A queued run with a `due_at` is parked until then (a long wait that holds no thread and
no lease). Submitting and releasing notify waiting workers on PostgreSQL (NOTIFY on
QUEUE_CHANNEL, sent when the transaction commits).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from runner.core.errors import StoreError
from runner.core.events import RunQueued, RunResumed
from runner.core.vocabulary import EffectStatus, RunStatus
from runner.store.leases import lease_until
from runner.store.records import Event, FlowVersion, RunRecord, aware, now
from runner.store.rows import holds, pinned, run_record
from runner.store.tables import effects, runs

QUEUE_CHANNEL = "runner_queue"


class RunQueue:
    """Queue operations of `SqlStore` (a mixin: it uses the store's transactions)."""

    lease_seconds: float
    _begin: Callable[[], contextlib.AbstractContextManager[sa.Connection]]
    _connect: Callable[[], contextlib.AbstractContextManager[sa.Connection]]
    _insert_events: Callable[[sa.Connection, str, Sequence[Event]], None]

    def submit_run(
        self,
        run_id: str,
        version: FlowVersion,
        input_value: Any,
        first_step: str,
        *,
        due_at: datetime | None = None,
    ) -> tuple[RunRecord, bool]:
        """Queue a new run at `first_step`, pinning `version`, unless a run with this id
        exists: (the run, whether this call made it). Of processes submitting one id at
        once, exactly one makes the run and the others get it."""
        stamp = now()
        row = {
            "id": run_id,
            "flow_name": version.name,
            "flow_digest": version.digest,
            "status": RunStatus.QUEUED.value,
            "position": first_step,
            "input": input_value,
            "steps_run": 0,
            "llm_calls": 0,
            "tokens": 0,
            "cost_usd": 0.0,
            "created_at": stamp,
            "updated_at": stamp,
            "due_at": due_at,
        }
        with self._begin() as conn:
            conn.execute(pinned(conn.dialect.name, version, stamp))
            made = conn.execute(_insert_new(conn.dialect.name, row)).first() is not None
            if made:
                queued = RunQueued(
                    flow=version.name, digest=version.digest, git_commit=version.git_commit
                )
                self._insert_events(conn, run_id, [queued])
                _notify(conn)
            found = conn.execute(runs.select().where(runs.c.id == run_id)).one()
        return run_record(found), made

    def claim_queued(self, owners: Sequence[str], *, flows: Sequence[str] = ()) -> list[RunRecord]:
        """Claim up to one run per owner token: queued runs that are due and interrupted
        runs (running, with no live lease), oldest first, each leased to its own token
        and set running, with a `run_resumed` event. `flows` limits it to those flows.
        Each record's `due_at` is when the run was due (a parked run), else None."""
        if not owners:
            return []
        stamp = now()
        with self._begin() as conn:
            query = _ready(stamp, flows).limit(len(owners))
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            found = conn.execute(query).all()
            for row, owner in zip(found, owners, strict=False):
                conn.execute(
                    runs.update()
                    .where(runs.c.id == row.id)
                    .values(
                        status=RunStatus.RUNNING.value,
                        lease_owner=owner,
                        lease_expires=lease_until(stamp, self.lease_seconds),
                        updated_at=stamp,
                        due_at=None,
                        reason=None,
                    )
                )
                self._insert_events(conn, row.id, [RunResumed(owner=owner, from_step=row.position)])
            ids = [row.id for row in found]
            claimed = conn.execute(runs.select().where(runs.c.id.in_(ids))).all() if ids else []
        due = {row.id: aware(row.due_at) for row in found}
        by_id = {row.id: replace(run_record(row), due_at=due[row.id]) for row in claimed}
        return [by_id[i] for i in ids]

    def park(
        self,
        run_id: str,
        owner: str,
        due_at: datetime,
        reason: str | None = None,
        events: Sequence[Event] = (),
    ) -> bool:
        """Queue the run again, due at `due_at`, with `reason` saying why it waits and
        `events` for its audit trail, if `owner` holds its lease or nobody does (its
        lease given up); False, with nothing written, if another process holds it or it
        is no longer running."""
        with self._begin() as conn:
            moved = conn.execute(
                runs.update()
                .where(
                    runs.c.id == run_id,
                    runs.c.status == RunStatus.RUNNING.value,
                    sa.or_(runs.c.lease_owner == owner, runs.c.lease_owner.is_(None)),
                )
                .values(
                    status=RunStatus.QUEUED.value,
                    lease_owner=None,
                    lease_expires=None,
                    due_at=due_at,
                    reason=reason,
                    updated_at=now(),
                )
            )
            if moved.rowcount != 1:
                return False
            self._insert_events(conn, run_id, events)
            return True

    def set_aside_effect(self, key: str, run_id: str, owner: str | None) -> None:
        """Mark a started effect of the run failed, so that it starts again (a parked
        step's, whose call did not go through), while `owner` holds the run's lease."""
        with self._begin() as conn:
            if owner is not None and not holds(conn, run_id, owner):
                raise StoreError(f"run {run_id} is no longer leased to this process")
            conn.execute(
                effects.update()
                .where(
                    effects.c.key == key,
                    effects.c.run_id == run_id,
                    effects.c.status == EffectStatus.STARTED.value,
                )
                .values(status=EffectStatus.FAILED.value, finished_at=now())
            )

    def release(self, run_id: str, owner: str) -> None:
        """Give up `owner`'s lease on the run, if it holds it; a run left running is
        then one a worker may claim (it is woken)."""
        with self._begin() as conn:
            moved = conn.execute(
                runs.update()
                .where(runs.c.id == run_id, runs.c.lease_owner == owner)
                .values(lease_owner=None, lease_expires=None)
            )
            if moved.rowcount:
                _notify(conn)

    def due_runs(self, at: datetime, limit: int = 100) -> list[RunRecord]:
        """Runs waiting for review whose review expired by `at`, the oldest due first."""
        query = (
            runs.select()
            .where(runs.c.status == RunStatus.ESCALATED.value, runs.c.due_at <= at)
            .order_by(runs.c.due_at)
            .limit(limit)
        )
        with self._connect() as conn:
            return [run_record(row) for row in conn.execute(query)]

    def queue_depth(self, at: datetime | None = None) -> tuple[int, datetime | None]:
        """How many runs wait to be claimed now, and when the oldest of them was made."""
        ready = _ready(at or now(), ()).subquery()
        query = sa.select(sa.func.count(), sa.func.min(ready.c.created_at))
        with self._connect() as conn:
            count, oldest = conn.execute(query).one()
        return int(count), aware(oldest)


def _ready(at: datetime, flows: Sequence[str]) -> sa.Select[Any]:
    """Runs a worker may claim at `at`, oldest first."""
    due = sa.and_(
        runs.c.status == RunStatus.QUEUED.value,
        sa.or_(runs.c.due_at.is_(None), runs.c.due_at <= at),
    )
    interrupted = sa.and_(
        runs.c.status == RunStatus.RUNNING.value,
        sa.or_(runs.c.lease_owner.is_(None), runs.c.lease_expires < at),
    )
    query = (
        sa.select(runs.c.id, runs.c.position, runs.c.created_at, runs.c.due_at)
        .where(sa.or_(due, interrupted))
        .order_by(runs.c.created_at, runs.c.id)
    )
    if flows:
        query = query.where(runs.c.flow_name.in_(list(flows)))
    return query


def _insert_new(dialect: str, row: dict[str, Any]) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING id: a run id that exists is left as it
    is (and no row comes back)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(runs).values(row).on_conflict_do_nothing(index_elements=["id"]).returning(runs.c.id)
    )


def _notify(conn: sa.Connection) -> None:
    """Wake the workers waiting on PostgreSQL (sent when the transaction commits)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": QUEUE_CHANNEL})
