"""Leases: which process may write a run's steps, and when its claim lapses.

A lease names its holder (`host:pid:random`) and runs out LEASE_SECONDS after the
holder last wrote. A lease whose holder is a dead process on this host is void at once.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta

from runner.store.records import now

LEASE_SECONDS = 60.0


def owner_id() -> str:
    """Who holds a lease: host, process id and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_until(stamp: datetime) -> datetime:
    """When a lease taken or renewed at `stamp` runs out."""
    return stamp + timedelta(seconds=LEASE_SECONDS)


def lease_free(holder: str | None, expires: datetime | None) -> bool:
    """Whether a lease may be taken: nobody holds it, it ran out, or its holder is a
    process on this host that no longer exists."""
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
