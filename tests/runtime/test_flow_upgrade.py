"""After the cause of a failure is fixed in the flow, `runner resume RUN --flow FILE`
(and `runner dlq retry RUN --flow FILE`) goes on with the fixed text; without it the
run keeps the version it pinned. A flow that lost a step the run completed is refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from runner.cli.main import main
from runner.store.sql import SqlStore

BROKEN = """\
version: 1
name: invoice
input: {type: object, required: [amount], properties: {amount: {type: number}}}
steps:
  - id: total
    switch:
      - when: "input.amount < 0"
        next: dead_letter
  - id: split
    switch:
      - when: "input.amount / input.parts > 10"
        next: done
on_error: dead_letter
"""
FIXED = BROKEN.replace("input.amount / input.parts > 10", "input.amount / 2 > 10")
WITHOUT_TOTAL = FIXED.replace(
    '  - id: total\n    switch:\n      - when: "input.amount < 0"\n        next: dead_letter\n', ""
)


@pytest.fixture
def failed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, str, str]:
    flow = tmp_path / "invoice.yaml"
    flow.write_text(BROKEN, encoding="utf-8")
    (tmp_path / "in.json").write_text(json.dumps({"amount": 50}), encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    assert main(["run", str(flow), "--input", str(tmp_path / "in.json"), "--db", db]) == 1
    out = capsys.readouterr().out
    found = re.search(r"run (\S+) failed", out)
    assert found is not None, out
    assert "(with --flow FILE if the fix is in the flow)" in out
    return flow, found.group(1), db


def steps_run(db: str, run: str) -> list[str]:
    store = SqlStore(db)
    try:
        return [c.step_id for c in store.checkpoints(run)]
    finally:
        store.close()


def test_resume_keeps_the_pinned_text_unless_given_the_fixed_flow(
    failed: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    flow, run, db = failed
    flow.write_text(FIXED, encoding="utf-8")
    assert main(["resume", run, "--db", db]) == 1  # still the pinned, broken text
    capsys.readouterr()
    assert main(["resume", run, "--flow", str(flow), "--db", db, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "completed"
    assert steps_run(db, run) == ["total", "split", "split", "split"]  # total ran once
    assert main(["show", run, "--db", db]) == 0
    assert "moved to flow version " in capsys.readouterr().out
    store = SqlStore(db)
    try:
        assert store.flow_version(store.run(run).flow_digest).text == FIXED
    finally:
        store.close()


def test_dlq_retry_can_move_to_the_fixed_flow(
    failed: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    flow, run, db = failed
    flow.write_text(FIXED, encoding="utf-8")
    code = main(["dlq", "retry", run, "--flow", str(flow), "--as", "ops", "--db", db])
    assert code == 0, capsys.readouterr()
    assert steps_run(db, run) == ["total", "split", "split"]


def test_a_flow_without_a_completed_step_is_refused(
    failed: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    flow, run, db = failed
    flow.write_text(WITHOUT_TOTAL, encoding="utf-8")
    capsys.readouterr()
    assert main(["resume", run, "--flow", str(flow), "--db", db]) == 1
    assert capsys.readouterr().err == (
        f"runner: run {run} cannot move to {flow}: it has no step `total` (the run "
        "completed or stopped there)\n"
    )
    assert steps_run(db, run) == ["total", "split"]
