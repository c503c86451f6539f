"""Durable state of runs, with SQLAlchemy Core: SQLite by default, PostgreSQL the same way.

`SqlStore` implements the `Store` protocol (runner.store.base) on the tables of
runner.store.tables. A step commits its checkpoint, the run's new position, its effect
row and its events in one transaction. Opening a store checks its schema revision and,
on SQLite, upgrades an older database (runner.store.revisions). The database's own
failures reach callers as StoreErrors that say what to do (runner.store.faults).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from runner.core.errors import StoreError
from runner.core.events import RunResumed, RunStarted, parse
from runner.store import postgres
from runner.store.engines import (
    DEFAULT_URL,
    create_engine,
    make_room,
    opening,
    place_of,
    store_url,
)
from runner.store.faults import StoreFile, translated
from runner.store.groupcommit import GroupCommit, Refused
from runner.store.leases import LEASE_SECONDS, lease_free, owner_id
from runner.store.leases import lease_seconds as _lease_seconds
from runner.store.queue import RunQueue
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
from runner.store.revisions import ensure_schema
from runner.store.rows import (
    START_EFFECT,
    advanced,
    by_prefix,
    checkpoint_of,
    checkpoint_row,
    claimed,
    decided,
    decision_event,
    decision_of,
    decision_row,
    effect_of,
    event_rows,
    flow_changed,
    flow_version_of,
    holds,
    new_run_row,
    pinned,
    renewed,
    repinned,
    restarted_effect,
    run_record,
    started_effect,
)
from runner.store.sqlite import CompiledStatements, write_transaction
from runner.store.tables import (
    ADVANCE_RUN,
    FINISH_EFFECT,
    INSERT_CHECKPOINT,
    INSERT_EVENTS,
    INSERT_RUN,
    checkpoints,
    decisions,
    effects,
    events,
    flow_versions,
    runs,
)
from runner.store.tokens import TokenStore
from runner.store.users import UserStore

__all__ = ["DEFAULT_URL", "LEASE_SECONDS", "SqlStore", "owner_id", "store_url"]


class SqlStore(RunQueue, TokenStore, UserStore):
    """The run store on any SQLAlchemy database (SQLite and PostgreSQL are tested)."""

    def __init__(
        self,
        url: str,
        *,
        durable: bool = True,
        create: bool = True,
        lease_seconds: float | None = None,
        connections: int | None = None,
    ) -> None:
        self.url = url
        self.lease_seconds = lease_seconds or _lease_seconds()
        make_room(url, create=create)
        self._place = place_of(url)
        self.engine = create_engine(url, durable=durable, connections=connections)
        sqlite = self.engine.dialect.name == "sqlite"
        # An in-memory database is one connection shared by all threads: take turns.
        memory = self.engine.pool.__class__ is sa.pool.StaticPool
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if memory else contextlib.nullcontext()
        )
        # Flow versions are immutable once stored: no need to look for them again.
        self._stored_versions: set[str] = set()
        self._compiled = CompiledStatements(self.engine.dialect) if sqlite else None
        try:
            with opening(url):
                ensure_schema(self.engine, url, upgrade=sqlite, create=create)
        except StoreError:
            self.engine.dispose()
            raise
        self._file = StoreFile(self._place) if self._place.file else None
        self.group_commit = GroupCommit(self._begin)  # runner.store.groupcommit

    @classmethod
    def memory(cls) -> SqlStore:
        """A store in memory, for tests and for trying flows out."""
        return cls("sqlite://")

    def close(self) -> None:
        """Let go of the store's connections."""
        self.engine.dispose()

    @contextlib.contextmanager
    def _begin(self) -> Iterator[sa.Connection]:
        """A write transaction (on SQLite it takes the write lock from the start). It
        commits only while the SQLite file is still the one opened."""
        if self._file is not None:
            self._file.check()  # before connecting: a new connection would make a new file
        with (
            translated(self._place),
            self._lock,
            self.engine.connect() as conn,
            write_transaction(conn),
        ):
            yield conn
            if self._file is not None:
                self._file.check()

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sa.Connection]:
        with translated(self._place), self._lock, self.engine.connect() as conn:
            yield conn

    def _execute(self, conn: sa.Connection, statement: Any, params: dict[str, Any]) -> int:
        """Run one of the hot path's statements; its row count."""
        if self._compiled is None:
            return int(conn.execute(statement, params).rowcount)
        return self._compiled.execute(conn, statement, params)

    # -- flow versions and runs --------------------------------------------------------
    def create_run(
        self, run_id: str, version: FlowVersion, input_value: Any, first_step: str, owner: str
    ) -> None:
        """Pin the flow version and create the run, already leased to `owner` (in a
        group commit with other threads' commits of the moment)."""
        stamp = now()
        row = new_run_row(run_id, version, input_value, first_step, owner, self.lease_seconds)
        started = RunStarted(
            flow=version.name, digest=version.digest, git_commit=version.git_commit
        )

        def write(conn: sa.Connection) -> None:
            if version.digest not in self._stored_versions:
                conn.execute(pinned(conn.dialect.name, version, stamp))
            self._execute(conn, INSERT_RUN, row)
            self._insert_events(conn, run_id, [started])

        self.group_commit.commit(write)
        self._stored_versions.add(version.digest)  # committed: no need to pin it again

    def flow_version(self, digest: str) -> FlowVersion:
        """The pinned flow version with this digest."""
        with self._connect() as conn:
            row = conn.execute(
                flow_versions.select().where(flow_versions.c.digest == digest)
            ).first()
        if row is None:
            raise StoreError(f"flow version {digest[:12]} is not in the store")
        return flow_version_of(row)

    def run(self, run_id: str) -> RunRecord:
        """The run with this id, or the only one whose id starts with it."""
        with self._connect() as conn:
            row = conn.execute(runs.select().where(runs.c.id == run_id)).first()
            if row is None:
                row = by_prefix(conn, run_id)
        return run_record(row)

    def list_runs(
        self,
        *,
        status: str | None = None,
        flow: str | None = None,
        limit: int = 50,
        before: tuple[datetime, str] | None = None,
    ) -> list[RunRecord]:
        """Runs newest first (then by id, descending), optionally of one status and one
        flow; with `before` (created_at, id), only the runs after that one in this order."""
        query = runs.select().order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit)
        if status:
            query = query.where(runs.c.status == status)
        if flow:
            query = query.where(runs.c.flow_name == flow)
        if before is not None:
            at, last = before
            older = sa.and_(runs.c.created_at == at, runs.c.id < last)
            query = query.where(sa.or_(runs.c.created_at < at, older))
        with self._connect() as conn:
            return [run_record(row) for row in conn.execute(query)]

    def claim(
        self,
        run_id: str,
        owner: str,
        *,
        statuses: Sequence[str] = ("running",),
        reopen_at: str | None = None,
    ) -> RunRecord:
        """Lease a run to `owner`. A lease held by a live process is respected; one whose
        holder died (expired, or a dead process on this host) is taken over. With
        `reopen_at`, a run in one of `statuses` is set running again at that step."""
        record = self.run(run_id)
        if record.status not in statuses:
            raise StoreError(f"run {record.id} is {record.status}; cannot resume it here")
        with self._begin() as conn:
            lease = conn.execute(
                sa.select(runs.c.lease_owner, runs.c.lease_expires).where(runs.c.id == record.id)
            ).one()
            if not lease_free(lease.lease_owner, aware(lease.lease_expires)):
                raise StoreError(f"run {record.id} is being run by {lease.lease_owner}")
            updated = conn.execute(
                claimed(record, lease.lease_owner, owner, reopen_at, self.lease_seconds)
            )
            if updated.rowcount != 1:
                raise StoreError(f"run {record.id} was claimed by another process")
            self._insert_events(
                conn, record.id, [RunResumed(owner=owner, from_step=reopen_at or record.position)]
            )
        return self.run(record.id)

    def repin(self, run_id: str, owner: str, version: FlowVersion) -> None:
        """Move a run `owner` holds to another version of its flow, recorded."""
        record = self.run(run_id)
        with self._begin() as conn:
            conn.execute(pinned(conn.dialect.name, version, now()))
            if conn.execute(repinned(run_id, owner, version.digest)).rowcount != 1:
                raise StoreError(f"run {run_id} is no longer leased to this process")
            self._insert_events(conn, run_id, [flow_changed(record, version)])

    def renew_lease(self, run_id: str, owner: str) -> bool:
        """Extend `owner`'s lease on the run by `lease_seconds` from now; False, and
        nothing written, if `owner` no longer holds it."""
        with self._begin() as conn:
            return conn.execute(renewed(run_id, owner, self.lease_seconds)).rowcount == 1

    # -- steps -------------------------------------------------------------------------
    def commit_step(self, run_id: str, owner: str, commit: StepCommit) -> None:
        """Write a finished step in one transaction; fails if `owner` lost the lease.
        A step that ends the run also gives the lease up. (On PostgreSQL: in one
        statement, runner.store.postgres.)"""
        run = advanced(run_id, owner, commit, now(), self.lease_seconds)
        if self.engine.dialect.name == "postgresql":
            with translated(self._place):
                if not postgres.commit_step(self.engine, run, commit):
                    raise StoreError(f"run {run_id} is no longer leased to this process")
            return

        def write(conn: sa.Connection) -> None:
            if self._execute(conn, ADVANCE_RUN, run) != 1:  # the fence: nothing written
                raise Refused(f"run {run_id} is no longer leased to this process")
            self._execute(conn, INSERT_CHECKPOINT, checkpoint_row(run_id, commit.checkpoint))
            if commit.effect:
                key, status, result = commit.effect
                finished = {"k": key, "status": status, "result": result}
                self._execute(conn, FINISH_EFFECT, {**finished, "finished_at": run["updated_at"]})
            self._insert_events(conn, run_id, commit.events)

        self.group_commit.commit(write)

    def _insert_events(self, conn: sa.Connection, run_id: str, batch: Sequence[Event]) -> None:
        """The events of one transaction, in one statement run for all of them."""
        rows = event_rows(run_id, batch)
        if self._compiled is not None:
            self._compiled.execute_many(conn, INSERT_EVENTS, rows)
        elif rows:
            conn.execute(INSERT_EVENTS, rows)

    def checkpoints(self, run_id: str) -> list[Checkpoint]:
        """The run's finished steps, by `seq`."""
        query = (
            checkpoints.select().where(checkpoints.c.run_id == run_id).order_by(checkpoints.c.seq)
        )
        with self._connect() as conn:
            return [checkpoint_of(r) for r in conn.execute(query)]

    def events(self, run_id: str) -> list[Event]:
        """The run's audit trail, oldest first, each event as its typed record."""
        query = events.select().where(events.c.run_id == run_id).order_by(events.c.id)
        with self._connect() as conn:
            return [
                parse(r.kind, r.step_id, r.data, aware(r.at) or now()) for r in conn.execute(query)
            ]

    def add_events(self, run_id: str, batch: Sequence[Event]) -> None:
        """Append events to the run's audit trail, in one transaction."""
        with self._begin() as conn:
            self._insert_events(conn, run_id, batch)

    # -- decisions ---------------------------------------------------------------------
    def decide(
        self,
        record: RunRecord,
        decision: Decision,
        *,
        status: str,
        position: str,
        owner: str | None = None,
        checkpoint: Checkpoint | None = None,
        effect: tuple[str, str, Any] | None = None,
        due_at: datetime | None = None,
    ) -> None:
        """Record a decision and move the run, in one transaction, only if the run is
        still exactly as `record` shows it: of two people deciding at once, one wins."""
        stamp = now()
        with self._begin() as conn:
            moved = conn.execute(
                decided(record, status, position, owner, checkpoint, due_at, self.lease_seconds)
            )
            if moved.rowcount != 1:
                raise StoreError(
                    f"run {record.id} changed while this decision was made "
                    "(someone else decided first?): look at it again"
                )
            conn.execute(decisions.insert().values(**decision_row(decision)))
            if checkpoint is not None:
                conn.execute(INSERT_CHECKPOINT, checkpoint_row(record.id, checkpoint))
            if effect is not None:
                key, effect_status, result = effect
                conn.execute(
                    FINISH_EFFECT,
                    {"k": key, "status": effect_status, "result": result, "finished_at": stamp},
                )
            self._insert_events(conn, record.id, [decision_event(decision, status, position)])

    def decisions(self, run_id: str) -> list[Decision]:
        """The decisions made on the run, oldest first."""
        query = decisions.select().where(decisions.c.run_id == run_id).order_by(decisions.c.id)
        with self._connect() as conn:
            return [decision_of(r) for r in conn.execute(query)]

    # -- the effect ledger -------------------------------------------------------------
    def effect(self, key: str) -> Effect | None:
        """The ledger's row for `key`, if any."""
        with self._connect() as conn:
            row = conn.execute(effects.select().where(effects.c.key == key)).first()
        return None if row is None else effect_of(row)

    def start_effect(
        self, key: str, run_id: str, step_id: str, tool: str, owner: str | None = None
    ) -> Effect | None:
        """Record that an effect is about to run, durably, before it runs. Returns the
        existing row instead if the key is already in the ledger (then nothing is written),
        or None after writing a new `started` row. A `failed` row is restarted. With
        `owner`, only while `owner` holds the run's lease (else StoreError)."""
        with self._begin() as conn:
            if owner is not None and not holds(conn, run_id, owner):
                raise StoreError(f"run {run_id} is no longer leased to this process")
            row = conn.execute(effects.select().where(effects.c.key == key)).first()
            if row is not None and row.status != "failed":
                return effect_of(row)
            try:
                if row is None:
                    self._execute(conn, START_EFFECT, started_effect(key, run_id, step_id, tool))
                else:
                    conn.execute(restarted_effect(key, run_id, step_id, tool))
            except IntegrityError as exc:  # another process wrote the key first
                raise StoreError(f"effect {key} was started by another process") from exc
        return None
