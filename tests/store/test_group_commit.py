"""Group commit on SQLite (runner.store.groupcommit): step commits of threads that
commit at the same time share one transaction and one fsync, each keeps its own outcome,
and none returns before its own commit is durable."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from runner.core.errors import StoreError
from runner.store.groupcommit import GroupCommit, Refused
from runner.store.records import Checkpoint, FlowVersion, StepCommit, now
from runner.store.sql import SqlStore

VERSION = FlowVersion("d" * 64, "grouped", "grouped.yaml", "version: 1\n")


def _commit(seq: int) -> StepCommit:
    stamp = now()
    checkpoint = Checkpoint(seq, f"s{seq}", "ok", f"s{seq + 1}", {"seq": seq}, 1, stamp, stamp)
    return StepCommit(checkpoint=checkpoint, position=f"s{seq + 1}", status="running")


def _runs(store: SqlStore, count: int) -> list[str]:
    for n in range(count):
        store.create_run(f"r{n}", VERSION, {"n": n}, "s1", f"owner-{n}")
    return [f"r{n}" for n in range(count)]


def test_concurrent_commits_share_transactions(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'runs.db'}")
    ids = _runs(store, 16)
    before = (store.group_commit.groups, store.group_commit.commits)
    start = threading.Barrier(16)

    def steps(n: int) -> None:
        start.wait()
        for seq in range(1, 11):
            store.commit_step(f"r{n}", f"owner-{n}", _commit(seq))

    threads = [threading.Thread(target=steps, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    groups = store.group_commit.groups - before[0]
    commits = store.group_commit.commits - before[1]
    assert commits == 160
    assert groups < commits / 2  # shared: fewer transactions than commits
    for run_id in ids:
        assert [c.seq for c in store.checkpoints(run_id)] == list(range(1, 11))
        assert store.run(run_id).steps_run == 10


def test_a_refused_or_broken_commit_fails_alone(tmp_path: Path) -> None:
    """r1's lease is not its caller's (refused before it writes); r3 breaks after it
    wrote (a bug): each gets its own error, nothing of either is kept, r0 and r2 commit."""
    store = SqlStore(f"sqlite:///{tmp_path / 'runs.db'}")
    _runs(store, 4)
    group = GroupCommit(store._begin)
    outcomes: dict[str, BaseException | None] = {}
    gate = threading.Event()

    def leader(conn: sa.Connection) -> None:
        gate.wait(5)  # the others queue meanwhile: they form the next group

    def commit(run_id: str, owner: str) -> None:
        def write(conn: sa.Connection) -> None:
            moved = conn.execute(
                sa.text("UPDATE runs SET position = 'moved' WHERE id = :id AND lease_owner = :o"),
                {"id": run_id, "o": owner},
            )
            if moved.rowcount != 1:
                raise Refused(f"run {run_id} is no longer leased to this process")
            if run_id == "r3":
                raise RuntimeError("a bug, after writing")

        try:
            group.commit(write)
            outcomes[run_id] = None
        except (StoreError, RuntimeError) as exc:
            outcomes[run_id] = exc

    first = threading.Thread(target=group.commit, args=(leader,))
    first.start()
    others = [
        threading.Thread(target=commit, args=("r0", "owner-0")),
        threading.Thread(target=commit, args=("r1", "someone-else")),
        threading.Thread(target=commit, args=("r2", "owner-2")),
        threading.Thread(target=commit, args=("r3", "owner-3")),
    ]
    for thread in others:
        thread.start()
    while len(group._queue) < 4:
        time.sleep(0.001)
    gate.set()
    for thread in [first, *others]:
        thread.join(10)
    assert (group.groups, group.commits) == (2, 5)
    assert outcomes["r0"] is None and outcomes["r2"] is None
    assert isinstance(outcomes["r1"], Refused) and "no longer leased" in str(outcomes["r1"])
    assert str(outcomes["r3"]) == "a bug, after writing"
    positions = [store.run(r).position for r in ("r0", "r1", "r2", "r3")]
    assert positions == ["moved", "s1", "moved", "s1"]


def test_a_group_that_fails_as_a_whole_writes_nothing(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'runs.db'}")
    _runs(store, 1)
    calls = []

    def begin_then_fail() -> object:
        class Failing:
            def __enter__(self) -> sa.Connection:
                self.inner = store._begin()
                return self.inner.__enter__()

            def __exit__(self, *exc: object) -> None:
                self.inner.__exit__(RuntimeError, RuntimeError("disk gone"), None)
                raise StoreError("cannot write to the run store: the disk is full")

        calls.append(1)
        return Failing()

    group = GroupCommit(begin_then_fail)  # type: ignore[arg-type]

    def write(conn: sa.Connection) -> None:
        conn.execute(sa.text("UPDATE runs SET position = 'moved' WHERE id = 'r0'"))

    with pytest.raises(StoreError, match="disk is full"):
        group.commit(write)
    assert store.run("r0").position == "s1" and calls == [1]
