"""Leases: renewed while a step runs, named by host, process and boot, and void once
their holder is known to be gone."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.core.errors import StoreError
from runner.store.leases import Heartbeat, boot_id, lease_free, lease_seconds, owner_id
from runner.store.records import Checkpoint, FlowVersion, StepCommit, now
from runner.store.sql import SqlStore

VERSION = FlowVersion("e" * 64, "leases", "flows/leases.yaml", "text")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    url = (
        f"sqlite:///{tmp_path / 'runs.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    made = SqlStore(url, lease_seconds=30)
    try:
        yield made
    finally:
        made.close()


def test_only_the_holder_renews_its_lease(store: SqlStore) -> None:
    store.create_run("r1", VERSION, {}, "one", "me")
    before = store.run("r1").lease_expires
    assert store.renew_lease("r1", "me") is True
    after = store.run("r1").lease_expires
    assert before is not None and after is not None and after > before
    assert store.renew_lease("r1", "someone-else") is False
    assert store.run("r1").lease_expires == after
    store.release("r1", "me")
    assert store.renew_lease("r1", "me") is False
    assert store.run("r1").lease_expires is None


def test_a_run_that_ended_has_no_lease_to_renew(store: SqlStore) -> None:
    store.create_run("r1", VERSION, {}, "one", "me")
    stamp = now()
    store.commit_step(
        "r1",
        "me",
        StepCommit(Checkpoint(1, "one", "ok", "done", {}, 1, stamp, stamp), "done", "completed"),
    )
    assert store.renew_lease("r1", "me") is False


def test_the_lease_lasts_as_the_store_says(store: SqlStore) -> None:
    store.create_run("r1", VERSION, {}, "one", "me")
    expires = store.run("r1").lease_expires
    assert expires is not None
    assert 25 < (expires - now()).total_seconds() <= 30


def test_an_owner_names_host_process_and_boot() -> None:
    host, pid, boot, random = owner_id().split(":")
    assert (host, pid, boot) == (socket.gethostname(), str(os.getpid()), boot_id())
    assert len(random) == 8 and owner_id() != owner_id()


@pytest.mark.skipif(not boot_id(), reason="this system does not say its boot id")
@pytest.mark.parametrize(
    ("holder", "free"),
    [
        ("{host}:{pid}:{boot}:x", False),  # this very process
        ("{host}:{pid}:000000000000:x", True),  # the same pid, but an earlier boot
        ("{host}:{pid}:x", False),  # release 0.1's form: no boot, a live pid
        ("otherhost:{pid}:000000000000:x", False),  # elsewhere: wait for the lease
        ("me", False),
    ],
)
def test_which_holders_are_known_to_be_gone(holder: str, free: bool) -> None:
    named = holder.format(host=socket.gethostname(), pid=os.getpid(), boot=boot_id())
    assert lease_free(named, now().replace(year=now().year + 1)) is free


@pytest.mark.parametrize(
    ("value", "seconds", "error"),
    [
        (None, 60.0, None),
        ("2.5", 2.5, None),
        ("soon", None, "RUNNER_LEASE_SECONDS must be a number of seconds, not 'soon'"),
        ("0", None, "RUNNER_LEASE_SECONDS must be above 0, not 0"),
    ],
)
def test_lease_seconds_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str | None, seconds: float | None, error: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("RUNNER_LEASE_SECONDS", raising=False)
    else:
        monkeypatch.setenv("RUNNER_LEASE_SECONDS", value)
    if error is None:
        assert lease_seconds() == seconds
    else:
        with pytest.raises(StoreError, match=error):
            lease_seconds()


class Renewals:
    """A store double that counts renewals and signals each one."""

    lease_seconds = 0.03

    def __init__(self, fail: bool = False) -> None:
        import threading

        self.calls: list[tuple[str, str]] = []
        self.fail = fail
        self.renewed = threading.Condition()

    def renew_lease(self, run_id: str, owner: str) -> bool:
        with self.renewed:
            self.calls.append((run_id, owner))
            self.renewed.notify_all()
        if self.fail:
            raise StoreError("cannot reach the database server")
        return True


@pytest.mark.parametrize("fail", [False, True], ids=["renews", "outlives failures"])
def test_the_heartbeat_renews_while_a_step_runs_and_stops_after(fail: bool) -> None:
    renewals = Renewals(fail)
    heartbeat = Heartbeat(renewals)
    with heartbeat.holding("r1", "me"), renewals.renewed:
        assert renewals.renewed.wait_for(lambda: len(renewals.calls) >= 3, timeout=10)
    thread = heartbeat._thread
    if thread is not None:
        thread.join(timeout=10)  # with no step running, the thread ends by itself
        assert not thread.is_alive()
    count = len(renewals.calls)
    assert set(renewals.calls) == {("r1", "me")}
    with heartbeat.holding("r2", "me"), renewals.renewed:  # and starts again when needed
        assert renewals.renewed.wait_for(lambda: ("r2", "me") in renewals.calls, timeout=10)
    assert len(renewals.calls) > count
