"""How a worker learns there is work: PostgreSQL's LISTEN/NOTIFY, else polling.

Submitting a run, and giving a run's lease up, send a NOTIFY on the queue's channel
(runner.store.queue). A worker on PostgreSQL keeps one extra connection that LISTENs and
wakes the claim loop at once; everywhere (SQLite, a listener that lost its connection,
a notification missed while reconnecting) the loop also looks every `poll` seconds, so
a notification is a shortcut, never a requirement.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from runner.store.queue import QUEUE_CHANNEL

RECONNECT_SECONDS = 2.0


class Wakeup:
    """An event the claim loop waits on: set by notifications, finished runs and stop."""

    def __init__(self, url: str, poll: float) -> None:
        self.poll = poll
        self._event = threading.Event()
        self._closed = threading.Event()
        self._conninfo = _conninfo(url)
        if self._conninfo is not None:
            threading.Thread(target=self._listen, name="queue-listener", daemon=True).start()

    def wake(self) -> None:
        self._event.set()

    def wait(self, seconds: float | None = None) -> None:
        """Until woken or `seconds` (default: the poll interval) pass."""
        self._event.wait(self.poll if seconds is None else seconds)
        self._event.clear()

    def close(self) -> None:
        self._closed.set()
        self.wake()

    def _listen(self) -> None:
        while not self._closed.is_set():
            with contextlib.suppress(Exception):  # the server went away: connect again
                self._listen_once()
            self._closed.wait(RECONNECT_SECONDS)

    def _listen_once(self) -> None:
        import psycopg

        assert self._conninfo is not None
        with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"LISTEN {QUEUE_CHANNEL}")
            self.wake()  # runs may have come while no one listened
            while not self._closed.is_set():
                for _ in conn.notifies(timeout=self.poll, stop_after=1):
                    self.wake()


def _conninfo(url: str) -> Any:
    """The psycopg connection string of a PostgreSQL store URL; None for other stores."""
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return None
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)
