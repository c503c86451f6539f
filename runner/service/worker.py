"""`runner worker`: claims queued and interrupted runs from the store and drives them.

A worker keeps up to `concurrency` runs going, each on a thread of its own: it claims as
many runs as it has room for (runner.store.queue: SKIP LOCKED on PostgreSQL, so workers
on many hosts never claim one run twice), leases each to an owner token of its own, and
drives it with the engine, whose heartbeat renews the lease while a step runs. A worker
that dies, is paused or cut off lets its leases lapse; any worker then resumes those
runs from their last checkpoint, and the lost worker's late commits are refused (they
are fenced by the lease).

Reviews that expire take their expiry route here (no cron job): every few seconds a
worker looks for overdue reviews and hands each run on.

Stopping (SIGTERM, Ctrl-C): the worker claims nothing more, and each run stops at its
next step boundary and gives its lease up. Runs still inside a step when the grace
period ends are released too: their commit would be refused, and the run resumes
elsewhere from its last checkpoint (an effect cut off mid-call is in doubt, as after a
kill).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from runner.core.errors import RunnerError, StoreError, crash_report
from runner.core.notices import notice
from runner.runtime.engine import Engine
from runner.service.wakeup import Wakeup
from runner.store.leases import owner_id
from runner.store.records import RunRecord, now


@dataclass(frozen=True)
class WorkerOptions:
    concurrency: int = 8
    flows: tuple[str, ...] = ()  # only runs of these flows (all when empty)
    poll_seconds: float = 1.0
    grace_seconds: float = 30.0
    expire_seconds: float = 5.0  # how often overdue reviews are looked for
    park_seconds: float = 60.0  # how long a run that cannot go on here waits
    park_after_seconds: float = 30.0  # a longer retry wait parks the run (runtime.parking)


@dataclass
class Tally:
    """What a worker did: runs by how their drive here ended."""

    by_status: dict[str, int] = field(default_factory=dict)
    released: int = 0  # still inside a step when the grace period ended

    def add(self, status: str) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1


class Worker:
    """Claims and drives runs until `stop` is set; see the module's docstring."""

    def __init__(self, engine: Engine, options: WorkerOptions) -> None:
        self.engine = engine
        self.engine.park_after = options.park_after_seconds
        self.store = engine.store
        self.options = options
        self.wakeup = Wakeup(self.store.url, options.poll_seconds)
        self.tally = Tally()
        self._active: dict[str, tuple[threading.Thread, str]] = {}  # run id -> thread, owner
        self._lock = threading.Lock()
        self._expired_at = 0.0

    def run(self, stop: threading.Event) -> Tally:
        """Work until `stop` is set, then drain; what was done."""
        failures = 0
        while not stop.is_set():
            try:
                full = self._claim()
                self._expire_reviews()
                failures = 0
            except StoreError as exc:  # the database is away: try again, slower each time
                failures += 1
                notice(f"cannot claim runs: {exc}", level="warning")
                full = False
                self.wakeup.wait(min(self.options.poll_seconds * 2**failures, 15.0))
                continue
            if not full:
                self.wakeup.wait()
        self._drain()
        self.wakeup.close()
        return self.tally

    # -- claiming ----------------------------------------------------------------------
    def _claim(self) -> bool:
        """Claim runs for every free slot; whether it filled them all (more may wait)."""
        with self._lock:
            free = self.options.concurrency - len(self._active)
        if free <= 0:
            return False
        owners = [owner_id() for _ in range(free)]
        claimed = self.store.claim_queued(owners, flows=self.options.flows)
        for record in claimed:
            self._start(record)
        return len(claimed) == free

    def _start(self, record: RunRecord) -> None:
        owner = str(record.lease_owner)
        thread = threading.Thread(
            target=self._drive, args=(record, owner), name=f"run-{record.id}", daemon=True
        )
        with self._lock:
            self._active[record.id] = (thread, owner)
        thread.start()

    def _drive(self, record: RunRecord, owner: str) -> None:
        """Drive one claimed run to its end or to a step boundary; never raises."""
        run_id = record.id
        try:
            result = self.engine.continue_claimed(run_id, owner, record)
            status = str(result.status)
            where = f" at {result.position}" if status != "completed" else ""
            notice(f"run {run_id} {status}{where}", run=run_id, status=status)
        except StoreError as exc:  # lease lost, database away: another worker goes on
            status = "error"
            notice(f"run {run_id} stopped: {exc}", level="warning", run=run_id)
        except RunnerError as exc:  # cannot run here (a secret missing, the flow broken)
            status = "parked"
            self._park(run_id, owner, str(exc))
        except Exception as exc:  # a bug: this run stops here, the worker goes on
            status = "error"
            report = crash_report(self.store.url)
            notice(
                f"run {run_id}: internal error ({type(exc).__name__}); this is a bug in "
                f"runner. The traceback is in {report}",
                level="error",
                run=run_id,
            )
        with self._lock:
            self._active.pop(run_id, None)
            self.tally.add(status)
        self.wakeup.wake()

    def _park(self, run_id: str, owner: str, why: str) -> None:
        """Put a run that cannot go on here back in the queue for a while, saying why,
        instead of claiming it again at once (another host may have what it needs)."""
        due = now() + timedelta(seconds=self.options.park_seconds)
        notice(f"run {run_id} parked until {due:%H:%M:%S}: {why}", level="warning", run=run_id)
        try:
            self.store.park(run_id, owner, due, f"waiting: {why}")
        except StoreError as exc:
            notice(f"cannot park run {run_id}: {exc}", level="warning", run=run_id)

    # -- reviews -------------------------------------------------------------------------
    def _expire_reviews(self) -> None:
        """Hand on runs whose review expired, every `expire_seconds`."""
        if time.monotonic() - self._expired_at < self.options.expire_seconds:
            return
        self._expired_at = time.monotonic()
        from runner.review.desk import Desk

        try:
            moved = Desk(self.engine, hand_off=True).expire()
        except StoreError:
            raise  # the database: the claim loop waits and tries again
        except RunnerError as exc:  # a waiting run's flow no longer loads here, say
            notice(f"cannot expire reviews: {exc}", level="warning")
            return
        for run_id, route in moved:
            notice(f"review of run {run_id} expired -> {route}", run=run_id, route=route)

    # -- stopping ------------------------------------------------------------------------
    def _drain(self) -> None:
        """Let every run reach a step boundary within the grace period; release the
        leases of those that do not."""
        self.engine.draining.set()
        deadline = time.monotonic() + self.options.grace_seconds
        while time.monotonic() < deadline:
            with self._lock:
                threads = [thread for thread, _ in self._active.values()]
            if not threads:
                return
            threads[0].join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = list(self._active.items())
        for run_id, (_, owner) in left:
            try:
                self.store.release(run_id, owner)
                self.tally.released += 1
            except StoreError as exc:
                notice(f"cannot release run {run_id}: {exc}", level="warning", run=run_id)
