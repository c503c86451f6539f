"""Leases: which process may write a run's steps, and when its claim lapses.

A lease names its holder (`host:pid:boot:random`, boot being the start of the host's
boot id) and runs out `lease_seconds()` after the holder last wrote or renewed it.
While a step runs, a `Heartbeat` renews it every third of that time, so only a holder
that stopped (killed, frozen, cut off from the database) lets it lapse. A holder that
is a dead process on this host, or a process of an earlier boot of this host, is void
at once; a dead holder on another host is recognised once its lease lapses.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Protocol

from runner.core.errors import StoreError
from runner.core.vocabulary import RunStatus
from runner.store.records import RunRecord, now

LEASE_SECONDS = 60.0
LEASE_SECONDS_VARIABLE = "RUNNER_LEASE_SECONDS"


def lease_seconds() -> float:
    """How long a lease lasts unless renewed: RUNNER_LEASE_SECONDS, else LEASE_SECONDS.
    (Tests shorten it; so may a service that wants dead holders noticed sooner.)"""
    given = os.environ.get(LEASE_SECONDS_VARIABLE)
    try:
        seconds = float(given) if given else LEASE_SECONDS
    except ValueError:
        raise StoreError(
            f"{LEASE_SECONDS_VARIABLE} must be a number of seconds, not {given!r}"
        ) from None
    if seconds <= 0:
        raise StoreError(f"{LEASE_SECONDS_VARIABLE} must be above 0, not {given}")
    return seconds


@functools.cache
def boot_id() -> str:
    """The start of this host's boot id ("" where the system does not say it)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as file:
            return file.read().strip().replace("-", "")[:12]
    except OSError:
        return ""


def owner_id() -> str:
    """Who holds a lease: host, process id, boot and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{boot_id()}:{uuid.uuid4().hex[:8]}"


def lease_until(stamp: datetime, seconds: float = LEASE_SECONDS) -> datetime:
    """When a lease taken or renewed at `stamp` runs out."""
    return stamp + timedelta(seconds=seconds)


def lease_free(holder: str | None, expires: datetime | None) -> bool:
    """Whether a lease may be taken: nobody holds it, it ran out, or its holder is a
    process on this host that no longer exists (or one from an earlier boot)."""
    if holder is None or expires is None or expires < now():
        return True
    parts = holder.split(":")
    if parts[0] != socket.gethostname() or len(parts) < 3 or not parts[1].isdigit():
        return False
    boot = parts[2] if len(parts) >= 4 else ""  # `host:pid:random` before boots were named
    if boot and boot_id() and boot != boot_id():
        return True  # the host restarted since: the holder is gone
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True  # the holder died on this host: its lease is void
    except PermissionError:
        return False
    return False


def interrupted(record: RunRecord) -> bool:
    """A run stored as running that nobody runs: its lease is free (its process was
    stopped or died), so only `runner resume` moves it on."""
    running = record.status == RunStatus.RUNNING
    return running and lease_free(record.lease_owner, record.lease_expires)


class Renewing(Protocol):
    """What a heartbeat needs of a store (runner.store.base.Store has it)."""

    lease_seconds: float

    def renew_lease(self, run_id: str, owner: str) -> bool: ...


class Heartbeat:
    """Renews the leases of runs whose step is running, every third of the lease, on
    one background thread (started when a step needs it, gone at the first beat that
    finds none running).

    A renewal that finds the lease lost does nothing more: the step's commit is fenced
    by the lease (`Store.commit_step`), so the step's work is never written over the
    run's new holder. A store that cannot be reached for a moment is tried again at the
    next beat."""

    def __init__(self, store: Renewing) -> None:
        self._store = store
        self._held: dict[object, tuple[str, str]] = {}  # one entry per running step
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def holding(self, run_id: str, owner: str) -> Iterator[None]:
        """Keep `owner`'s lease on the run alive until the block ends."""
        token = object()
        with self._lock:
            self._held[token] = (run_id, owner)
            if self._thread is None:
                self._thread = threading.Thread(target=self._beat, name="lease-heartbeat")
                self._thread.daemon = True
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                del self._held[token]

    def _beat(self) -> None:
        interval = self._store.lease_seconds / 3
        while True:
            time.sleep(interval)
            with self._lock:
                held = list(self._held.values())
                if not held:
                    self._thread = None
                    return
            for run_id, owner in held:
                with contextlib.suppress(StoreError):
                    self._store.renew_lease(run_id, owner)
