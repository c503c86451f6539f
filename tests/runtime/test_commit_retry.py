"""A step's commit rides out a moment when the store cannot be reached: a transient
failure is tried again while the lease would last, a commit that went through before
its answer was lost is recognised by its checkpoint, and a lost lease is never retried.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runner.core.errors import StoreError
from runner.lang.load import load_flow
from runner.runtime.engine import Engine
from runner.store.records import StepCommit
from runner.store.sql import SqlStore
from runner.testing import FakeClock

FLOW = """\
version: 1
name: pair
input: {type: object}
tools:
  echo:
    python: tools.echo:echo
    input: {type: object}
    output: {type: object}
steps:
  - id: first
    tool: echo
    args: {n: 1}
  - id: second
    tool: echo
    args: {n: 2}
on_error: dead_letter
"""


class Flaky(SqlStore):
    """A store whose commits fail as told: `before` fails without writing, `after`
    writes and then fails as if the answer were lost."""

    plan: list[str]

    def commit_step(self, run_id: str, owner: str, commit: StepCommit) -> None:
        what = self.plan.pop(0) if self.plan else "ok"
        if what == "before":
            raise StoreError("cannot reach the database server", transient=True)
        super().commit_step(run_id, owner, commit)
        if what == "after":
            raise StoreError("server closed the connection unexpectedly", transient=True)


def _start(tmp_path: Path, plan: list[str]) -> tuple[Flaky, Any, FakeClock]:
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "echo.py").write_text("def echo(n):\n    return {'n': n}\n")
    (tmp_path / "pair.yaml").write_text(FLOW)
    store = Flaky("sqlite://", lease_seconds=10)
    store.plan = plan
    clock = FakeClock()
    result = Engine(store, clock=clock).start(load_flow(tmp_path / "pair.yaml"), {})
    return store, result, clock


def test_a_transient_failure_is_tried_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, result, clock = _start(tmp_path, ["before", "before", "ok"])
    assert result.status == "completed"
    said = capsys.readouterr().err.splitlines()  # once, however many tries
    assert said == [
        f"runner: run {result.run_id}: cannot reach the database server; "
        "trying again for up to 10 s"
    ]
    assert [c.step_id for c in store.checkpoints(result.run_id)] == ["first", "second"]
    assert clock.sleeps == [0.2, 0.4]


def test_a_commit_that_went_through_is_not_written_twice(tmp_path: Path) -> None:
    store, result, _ = _start(tmp_path, ["after", "after"])
    assert result.status == "completed"
    assert [c.step_id for c in store.checkpoints(result.run_id)] == ["first", "second"]
    assert store.run(result.run_id).steps_run == 2


def test_it_gives_up_when_the_lease_would_have_lapsed(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot reach"):
        _start(tmp_path, ["before"] * 100)


def test_a_lost_lease_is_not_tried_again(tmp_path: Path) -> None:
    class Fenced(Flaky):
        def commit_step(self, run_id: str, owner: str, commit: StepCommit) -> None:
            self.tries = getattr(self, "tries", 0) + 1
            raise StoreError(f"run {run_id} is no longer leased to this process")

    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "echo.py").write_text("def echo(n):\n    return {'n': n}\n")
    (tmp_path / "pair.yaml").write_text(FLOW)
    store = Fenced("sqlite://")
    clock = FakeClock()
    with pytest.raises(StoreError, match="no longer leased"):
        Engine(store, clock=clock).start(load_flow(tmp_path / "pair.yaml"), {})
    assert store.tries == 1 and clock.sleeps == []
