"""Group commit on SQLite: the step commits of concurrent runs share one transaction
and one fsync.

SQLite has one writer at a time, and a durable commit waits for its fsync: runs that
finish steps at the same moment queue for the write lock and pay an fsync each. Here
the first thread to arrive leads: it takes every commit queued so far, writes them all
in one transaction, each inside a savepoint of its own, and commits once; the threads
whose commits it carried wait until that commit is on disk, then go on. Commits that
arrive meanwhile queue for the next leader. A lone run pays nothing: its commit leads a
group of one, at once.

Each commit keeps its own outcome. One whose lease was lost is refused by its fence
before it writes anything (it raises `Refused`), gets its StoreError, and the others
commit. One that fails after writing (a bug) would leave half of itself in the group:
the group's transaction is rolled back and the others are written again without it.
When the transaction fails as a whole (a full disk, a replaced file), every commit in
it gets the error and nothing of any of them is written. No step proceeds, and no
effect starts, before its own commit is durable. (Savepoints would do the same, at two
statements more for every commit.)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa

from runner.core.errors import StoreError

Write = Callable[[sa.Connection], None]


class Refused(StoreError):
    """A commit refused before it wrote anything (its fence: the lease is not the
    caller's). Raising it promises that nothing of the commit was written."""


@dataclass
class _Pending:
    write: Write
    done: bool = False
    error: BaseException | None = None
    # Set when the commit is durable (done), or when its thread is to lead the next group.
    woken: threading.Event = field(default_factory=threading.Event)


class GroupCommit:
    """Runs commits, grouping those of threads that commit at the same time."""

    def __init__(self, begin: Callable[[], contextlib.AbstractContextManager[sa.Connection]]):
        self._begin = begin  # a write transaction that commits durably as it ends
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._leading = False
        self.groups = 0  # transactions made, and commits carried (for tests and benches)
        self.commits = 0

    def commit(self, write: Write) -> None:
        """Run `write` in a transaction, maybe shared; return once it is durable, or
        raise what failed it. A thread that waits is woken once, when its commit is
        durable or when it is its turn to lead (never all waiters at every group)."""
        mine = _Pending(write)
        with self._lock:
            self._queue.append(mine)
            follow, self._leading = self._leading, True
        if follow:
            mine.woken.wait()
            if mine.done:
                return _outcome(mine)
        with self._lock:  # leading: every commit queued so far goes in this group
            group, self._queue = self._queue, []
        try:
            self._write(group)
        finally:
            with self._lock:
                for pending in group:
                    pending.done = True
                after = self._queue[0] if self._queue else None
                self._leading = after is not None
            for pending in group:
                pending.woken.set()
            if after is not None:
                after.woken.set()  # its thread leads the next group
        return _outcome(mine)

    def _write(self, group: list[_Pending]) -> None:
        todo = group
        while todo:
            broken = self._try(todo)
            if broken is None:
                break
            todo = [p for p in todo if p is not broken and not isinstance(p.error, Refused)]
            for pending in todo:  # rolled back with the broken one: written again
                pending.error = None
        self.groups += 1
        self.commits += len(group)

    def _try(self, todo: list[_Pending]) -> _Pending | None:
        """Write `todo` in one transaction; the commit that broke it, if one did."""
        broken: _Pending | None = None
        try:
            with self._begin() as conn:
                for pending in todo:
                    try:
                        pending.write(conn)
                    except Refused as exc:
                        pending.error = exc
                    except Exception:
                        broken = pending
                        raise
        except BaseException as exc:
            if broken is not None:
                broken.error = exc  # as the transaction raised it (a database error told)
                return broken
            for pending in todo:  # the transaction failed: none of it was written
                pending.error = pending.error or exc
            if not isinstance(exc, Exception):
                raise
        return None


def _outcome(pending: _Pending) -> None:
    if pending.error is not None:
        raise pending.error
