"""Durable state of runs, with SQLAlchemy Core: SQLite by default, PostgreSQL the same way.

Tables: flow_versions (the exact flow text a run started with), runs (status and
position), checkpoints (each finished step's output), effects (the effect ledger) and
events (an append-only audit trail). A step commits its checkpoint, the run's new
position, its effect row and its events in one transaction.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from runner.core.errors import StoreError
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
from runner.store.tables import (
    ADVANCE_RUN,
    FINISH_EFFECT,
    INSERT_CHECKPOINT,
    INSERT_EVENTS,
    INSERT_RUN,
    SCHEMA_VERSION,
    checkpoints,
    decisions,
    effects,
    events,
    flow_versions,
    meta,
    metadata,
    runs,
)

DEFAULT_URL = "sqlite:///.runner/runner.db"
LEASE_SECONDS = 60.0

def owner_id() -> str:
    """Who holds a lease: host, process id and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class SqlStore:
    """The run store on any SQLAlchemy database (SQLite and PostgreSQL are tested)."""

    def __init__(self, url: str, *, durable: bool = True) -> None:
        self.url = url
        self.engine = _create_engine(url, durable=durable)
        # An in-memory database is one connection shared by all threads: take turns.
        memory = self.engine.pool.__class__ is sa.pool.StaticPool
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if memory else contextlib.nullcontext())
        # Flow versions are immutable once stored: no need to look for them again.
        self._stored_versions: set[str] = set()
        # On SQLite: each hot-path statement's SQL and parameter order (see _execute).
        self._sqlite_sql: dict[Any, tuple[str, tuple[str, ...]]] | None = (
            {} if self.engine.dialect.name == "sqlite" else None)
        try:
            self._check_schema()
        except (OperationalError, ProgrammingError) as exc:
            raise StoreError(f"cannot open the run store at {_safe_url(url)}: "
                             f"{exc.orig}") from exc

    def _check_schema(self) -> None:
        """Create the tables of a new database; refuse one of another schema version
        rather than fail later on a missing column."""
        existing = set(sa.inspect(self.engine).get_table_names())
        metadata.create_all(self.engine)
        with self._begin() as conn:
            row = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema")).first()
            if row is None and "runs" not in existing:
                # A new database (if another process just made it too, its row is ours).
                conn.execute(sa.text("INSERT INTO runner_meta (key, value) VALUES "
                                     "('schema', :v) ON CONFLICT (key) DO NOTHING"),
                             {"v": str(SCHEMA_VERSION)})
                return
        found = row.value if row is not None else "none (an early runner)"
        if found != str(SCHEMA_VERSION):
            raise StoreError(f"the run store at {_safe_url(self.url)} has schema version "
                             f"{found}; this runner uses version {SCHEMA_VERSION}. Keep it "
                             "aside with the runner that made it, or start a new one "
                             "(--db or RUNNER_DB)")

    @contextlib.contextmanager
    def _begin(self) -> Iterator[sa.Connection]:
        """A write transaction (on SQLite it takes the write lock from the start)."""
        with self._lock, self.engine.connect() as conn:
            conn.info["write"] = True
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info.pop("write", None)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sa.Connection]:
        with self._lock, self.engine.connect() as conn:
            yield conn

    @classmethod
    def memory(cls) -> SqlStore:
        """A store in memory, for tests and for trying flows out."""
        return cls("sqlite://")

    def close(self) -> None:
        self.engine.dispose()

    # -- flow versions and runs --------------------------------------------------------
    def create_run(self, run_id: str, version: FlowVersion, input_value: Any,
                   first_step: str, owner: str) -> None:
        """Pin the flow version and create the run, already leased to `owner`."""
        stamp = now()
        with self._begin() as conn:
            if version.digest not in self._stored_versions:
                known = conn.execute(sa.select(flow_versions.c.digest)
                                     .where(flow_versions.c.digest == version.digest)).first()
                if known is None:
                    conn.execute(flow_versions.insert().values(
                        digest=version.digest, name=version.name, path=version.path,
                        git_commit=version.git_commit, text=version.text, created_at=stamp))
            conn.execute(INSERT_RUN, {
                "id": run_id, "flow_name": version.name, "flow_digest": version.digest,
                "status": "running", "position": first_step, "input": input_value,
                "steps_run": 0, "llm_calls": 0, "tokens": 0, "cost_usd": 0.0,
                "lease_owner": owner,
                "lease_expires": stamp + timedelta(seconds=LEASE_SECONDS),
                "created_at": stamp, "updated_at": stamp, "failed_step": None,
                "reason": None, "error": None})
            self._insert_events(conn, run_id, [Event("run_started", data={
                "flow": version.name, "digest": version.digest,
                "git_commit": version.git_commit})])

    def flow_version(self, digest: str) -> FlowVersion:
        with self._connect() as conn:
            row = conn.execute(flow_versions.select()
                               .where(flow_versions.c.digest == digest)).first()
        if row is None:
            raise StoreError(f"flow version {digest[:12]} is not in the store")
        return FlowVersion(row.digest, row.name, row.path, row.text, row.git_commit)

    def run(self, run_id: str) -> RunRecord:
        with self._connect() as conn:
            row = conn.execute(runs.select().where(runs.c.id == run_id)).first()
            if row is None:
                row = self._by_prefix(conn, run_id)
        return _run_record(row)

    def _by_prefix(self, conn: sa.Connection, prefix: str) -> Any:
        rows = conn.execute(runs.select().where(runs.c.id.startswith(prefix, autoescape=True))
                            .limit(2)).all()
        if len(rows) == 1:
            return rows[0]
        raise StoreError(f"no run {prefix}" if not rows else f"run id {prefix} is ambiguous")

    def list_runs(self, *, status: str | None = None, flow: str | None = None,
                  limit: int = 50) -> list[RunRecord]:
        query = runs.select().order_by(runs.c.created_at.desc(), runs.c.id).limit(limit)
        if status:
            query = query.where(runs.c.status == status)
        if flow:
            query = query.where(runs.c.flow_name == flow)
        with self._connect() as conn:
            return [_run_record(row) for row in conn.execute(query)]

    def claim(self, run_id: str, owner: str, *, statuses: Sequence[str] = ("running",),
              reopen_at: str | None = None) -> RunRecord:
        """Lease a run to `owner`. A lease held by a live process is respected; one whose
        holder died (expired, or a dead process on this host) is taken over. With
        `reopen_at`, a run in one of `statuses` is set running again at that step."""
        record = self.run(run_id)
        if record.status not in statuses:
            raise StoreError(f"run {record.id} is {record.status}; cannot resume it here")
        with self._begin() as conn:
            lease = conn.execute(sa.select(runs.c.lease_owner, runs.c.lease_expires)
                                 .where(runs.c.id == record.id)).one()
            if not _lease_free(lease.lease_owner, aware(lease.lease_expires)):
                raise StoreError(f"run {record.id} is being run by {lease.lease_owner}")
            values: dict[str, Any] = {"lease_owner": owner, "updated_at": now(),
                                      "lease_expires": now() + timedelta(seconds=LEASE_SECONDS)}
            if reopen_at:
                values.update(status="running", position=reopen_at, reason=None, error=None)
            updated = conn.execute(runs.update().where(
                runs.c.id == record.id, runs.c.status == record.status,
                _same(runs.c.lease_owner, lease.lease_owner)).values(**values))
            if updated.rowcount != 1:
                raise StoreError(f"run {record.id} was claimed by another process")
            self._insert_events(conn, record.id, [Event("run_resumed", data={
                "owner": owner, "from": reopen_at or record.position})])
        return self.run(record.id)

    def release(self, run_id: str, owner: str) -> None:
        with self._begin() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id, runs.c.lease_owner == owner)
                         .values(lease_owner=None, lease_expires=None))

    # -- steps -------------------------------------------------------------------------
    def commit_step(self, run_id: str, owner: str, commit: StepCommit) -> None:
        """Write a finished step in one transaction; fails if `owner` lost the lease.
        A step that ends the run also gives the lease up."""
        cp, stamp = commit.checkpoint, now()
        ending = commit.status != "running"
        run = {
            "rid": run_id, "owner": owner, "new_owner": None if ending else owner,
            "status": commit.status, "position": commit.position, "updated_at": stamp,
            "failed_step": commit.failed_step, "reason": commit.reason, "error": commit.error,
            "lease_expires": None if ending else stamp + timedelta(seconds=LEASE_SECONDS),
            "llm_calls": commit.usage[0], "tokens": commit.usage[1],
            "cost_usd": commit.usage[2]}
        checkpoint = {
            "run_id": run_id, "seq": cp.seq, "step_id": cp.step_id, "outcome": cp.outcome,
            "route": cp.route, "output": cp.output, "attempts": cp.attempts,
            "started_at": cp.started_at, "finished_at": cp.finished_at}
        with self._begin() as conn:
            if self._execute(conn, ADVANCE_RUN, run) != 1:
                raise StoreError(f"run {run_id} is no longer leased to this process")
            self._execute(conn, INSERT_CHECKPOINT, checkpoint)
            if commit.effect:
                key, status, result = commit.effect
                self._execute(conn, FINISH_EFFECT, {"k": key, "status": status,
                                                    "result": result, "finished_at": stamp})
            self._insert_events(conn, run_id, commit.events)

    def _insert_events(self, conn: sa.Connection, run_id: str,
                       batch: Sequence[Event]) -> None:
        for event in batch:
            self._execute(conn, INSERT_EVENTS, {
                "run_id": run_id, "at": event.at, "kind": event.kind,
                "step_id": event.step_id, "data": dict(event.data)})

    def _execute(self, conn: sa.Connection, statement: Any, params: dict[str, Any]) -> int:
        """Run one of the hot path's statements; its row count. On SQLite the statement's
        SQL is compiled once and its values converted here as SQLAlchemy's types would,
        which makes a step's commit several times cheaper."""
        if self._sqlite_sql is None:
            return int(conn.execute(statement, params).rowcount)
        if statement not in self._sqlite_sql:
            compiled = statement.compile(dialect=self.engine.dialect, column_keys=list(params))
            self._sqlite_sql[statement] = (str(compiled), tuple(compiled.positiontup or ()))
        sql, names = self._sqlite_sql[statement]
        values = tuple(_sqlite_value(name, params[name]) for name in names)
        return int(conn.exec_driver_sql(sql, values).rowcount)

    def checkpoints(self, run_id: str) -> list[Checkpoint]:
        query = checkpoints.select().where(checkpoints.c.run_id == run_id) \
            .order_by(checkpoints.c.seq)
        with self._connect() as conn:
            return [Checkpoint(r.seq, r.step_id, r.outcome, r.route, r.output, r.attempts,
                               aware(r.started_at) or now(), aware(r.finished_at) or now())
                    for r in conn.execute(query)]

    def events(self, run_id: str) -> list[Event]:
        query = events.select().where(events.c.run_id == run_id).order_by(events.c.id)
        with self._connect() as conn:
            return [Event(r.kind, r.step_id, r.data or {}, aware(r.at) or now())
                    for r in conn.execute(query)]

    def add_events(self, run_id: str, batch: Sequence[Event]) -> None:
        with self._begin() as conn:
            self._insert_events(conn, run_id, batch)

    # -- decisions ---------------------------------------------------------------------
    def decide(self, record: RunRecord, decision: Decision, *, status: str, position: str,
               owner: str | None = None, checkpoint: Checkpoint | None = None,
               effect: tuple[str, str, Any] | None = None) -> None:
        """Record a decision and move the run, in one transaction, only if the run is
        still exactly as `record` shows it: of two people deciding at once, one wins."""
        stamp = now()
        with self._begin() as conn:
            updated = conn.execute(runs.update().where(
                runs.c.id == record.id, runs.c.status == record.status,
                runs.c.steps_run == record.steps_run, runs.c.lease_owner.is_(None)).values(
                status=status, position=position, updated_at=stamp, lease_owner=owner,
                lease_expires=stamp + timedelta(seconds=LEASE_SECONDS) if owner else None,
                reason=None if status == "running" else record.reason,
                steps_run=runs.c.steps_run + (1 if checkpoint else 0)))
            if updated.rowcount != 1:
                raise StoreError(f"run {record.id} changed while this decision was made "
                                 "(someone else decided first?): look at it again")
            conn.execute(decisions.insert().values(
                run_id=decision.run_id, step_id=decision.step_id, decision=decision.decision,
                decided_by=decision.decided_by, decided_at=decision.decided_at,
                content_hash=decision.content_hash, note=decision.note,
                content=decision.content))
            if checkpoint is not None:
                conn.execute(INSERT_CHECKPOINT, {
                    "run_id": record.id, "seq": checkpoint.seq, "step_id": checkpoint.step_id,
                    "outcome": checkpoint.outcome, "route": checkpoint.route,
                    "output": checkpoint.output, "attempts": checkpoint.attempts,
                    "started_at": checkpoint.started_at, "finished_at": checkpoint.finished_at})
            if effect is not None:
                key, effect_status, result = effect
                conn.execute(FINISH_EFFECT, {"k": key, "status": effect_status,
                                              "result": result, "finished_at": stamp})
            self._insert_events(conn, record.id, [Event("decision", decision.step_id, {
                "decision": decision.decision, "by": decision.decided_by,
                "content_hash": decision.content_hash, "note": decision.note,
                "status": status, "position": position})])

    def decisions(self, run_id: str) -> list[Decision]:
        query = decisions.select().where(decisions.c.run_id == run_id).order_by(decisions.c.id)
        with self._connect() as conn:
            return [Decision(r.run_id, r.step_id, r.decision, r.decided_by, r.content_hash,
                             r.note, r.content, aware(r.decided_at) or now())
                    for r in conn.execute(query)]

    # -- the effect ledger -------------------------------------------------------------
    def effect(self, key: str) -> Effect | None:
        with self._connect() as conn:
            row = conn.execute(effects.select().where(effects.c.key == key)).first()
        return None if row is None else Effect(row.key, row.run_id, row.step_id, row.tool,
                                               row.status, row.result)

    def start_effect(self, key: str, run_id: str, step_id: str, tool: str) -> Effect | None:
        """Record that an effect is about to run, durably, before it runs. Returns the
        existing row instead if the key is already in the ledger (then nothing is written),
        or None after writing a new `started` row. A `failed` row is restarted."""
        with self._begin() as conn:
            row = conn.execute(effects.select().where(effects.c.key == key)).first()
            if row is not None and row.status != "failed":
                return Effect(row.key, row.run_id, row.step_id, row.tool, row.status,
                              row.result)
            try:
                if row is None:
                    conn.execute(effects.insert().values(
                        key=key, run_id=run_id, step_id=step_id, tool=tool,
                        status="started", started_at=now()))
                else:
                    conn.execute(effects.update().where(effects.c.key == key).values(
                        status="started", run_id=run_id, step_id=step_id, result=None,
                        started_at=now(), finished_at=None))
            except IntegrityError as exc:  # another process wrote the key first
                raise StoreError(f"effect {key} was started by another process") from exc
        return None


_JSON_PARAMS = {"error", "output", "result", "data"}
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a DateTime in SQLite


def _sqlite_value(name: str, value: Any) -> Any:
    """A value as SQLAlchemy's types store it in SQLite: JSON as text (None as `null`),
    times as UTC text."""
    if name in _JSON_PARAMS:
        return _dumps(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime(_SQLITE_TIME)
    return value


def _same(column: Any, value: Any) -> Any:
    return column.is_(None) if value is None else column == value


def _lease_free(holder: str | None, expires: datetime | None) -> bool:
    if holder is None or expires is None or expires < now():
        return True
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True  # the holder died on this host: its lease is void
    except PermissionError:
        return False
    return False


def _run_record(row: Any) -> RunRecord:
    return RunRecord(
        id=row.id, flow_name=row.flow_name, flow_digest=row.flow_digest, status=row.status,
        position=row.position, failed_step=row.failed_step, reason=row.reason,
        error=row.error, input=row.input, steps_run=row.steps_run, llm_calls=row.llm_calls,
        tokens=row.tokens, cost_usd=row.cost_usd,
        lease_owner=row.lease_owner, created_at=aware(row.created_at) or now(),
        updated_at=aware(row.updated_at) or now(),
    )


def _safe_url(url: str) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(an invalid URL)"


def _create_engine(url: str, *, durable: bool) -> sa.Engine:
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StoreError(f"not a database URL: {url!r}") from exc
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True, json_serializer=_dumps)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, json_serializer=_dumps)
    else:
        engine = sa.create_engine(parsed, json_serializer=_dumps,
                                  poolclass=sa.pool.StaticPool,
                                  connect_args={"check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # transactions are begun below, explicitly
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before it returns, so a checkpoint survives power loss.
        cursor.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        # A write takes the lock up front: a deferred transaction that reads, then
        # writes, can fail at once with "database is locked" when another process
        # writes too. Reads stay deferred, so in WAL mode they never wait for writers.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")

    return engine


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def store_url(given: str | None) -> str:
    """The database URL: `--db`, else RUNNER_DB, else `.runner/runner.db` here."""
    return given or os.environ.get("RUNNER_DB") or DEFAULT_URL

