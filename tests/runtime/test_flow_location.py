"""A run finds its flow's folder wherever a command runs: `resume` and `review approve`
from another directory, a checkout that moved, and python tools of two flow folders that
share module names, all without touching sys.path."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from runner.cli.main import main
from runner.store.sql import SqlStore

FLOW = """\
version: 1
name: pay
input: {type: object, required: [amount]}
tools:
  pay:
    python: tools.payments:pay
    input: {type: object, required: [amount]}
    output: {type: object, required: [paid]}
steps:
  - id: limit
    switch:
      - when: "input.amount > 200"
        next: human_review
  - id: pay
    tool: pay
    args: {amount: "{{ input.amount }}"}
on_error: dead_letter
"""

TOOL = """\
from pathlib import Path

from .ledger import note


def pay(amount):
    if not (Path(__file__).parent / "open").exists():
        raise RuntimeError("the payments desk is closed")
    return {"paid": amount, "by": note()}
"""


def make_repo(root: Path, who: str = "repo") -> Path:
    """A git repository (its `.git` folder is enough) holding flows/pay.yaml and its
    tool package, whose module imports a neighbour relatively."""
    (root / ".git").mkdir(parents=True)
    tools = root / "flows" / "tools"
    tools.mkdir(parents=True)
    (root / "flows" / "pay.yaml").write_text(FLOW, encoding="utf-8")
    (tools / "__init__.py").write_text("", encoding="utf-8")
    (tools / "payments.py").write_text(TOOL, encoding="utf-8")
    (tools / "ledger.py").write_text(f"def note():\n    return {who!r}\n", encoding="utf-8")
    return root / "flows" / "pay.yaml"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().out


def only_run(db: str) -> str:
    store = SqlStore(db)
    try:
        return store.list_runs()[0].id
    finally:
        store.close()


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, str]:
    flow = make_repo(tmp_path / "repo")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    return flow, elsewhere, f"sqlite:///{tmp_path / 'runs.db'}"


def test_resume_from_another_directory_imports_the_flows_tools(
    places: tuple[Path, Path, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flow, elsewhere, db = places
    (Path("input.json")).write_text(json.dumps({"amount": 20}), encoding="utf-8")
    code, _ = run(["run", "flows/pay.yaml", "--input", "input.json", "--db", db], capsys)
    assert code == 1  # the desk is closed: dead letter
    (flow.parent / "tools" / "open").touch()
    path_before = list(sys.path)
    monkeypatch.chdir(elsewhere)
    code, out = run(["resume", only_run(db), "--db", db, "--format", "json"], capsys)
    assert code == 0, out
    assert json.loads(out)["status"] == "completed"
    assert sys.path == path_before
    store = SqlStore(db)
    paid = [
        c.output
        for c in store.checkpoints(only_run(db))
        if c.step_id == "pay" and c.outcome == "ok"
    ]
    store.close()
    assert paid == [{"paid": 20, "by": "repo"}]


def test_approve_from_another_directory_continues_with_the_flows_tools(
    places: tuple[Path, Path, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flow, elsewhere, db = places
    (flow.parent / "tools" / "open").touch()
    Path("input.json").write_text(json.dumps({"amount": 300}), encoding="utf-8")
    code, _ = run(["run", "flows/pay.yaml", "--input", "input.json", "--db", db], capsys)
    assert code == 4
    monkeypatch.chdir(elsewhere)
    code, out = run(
        ["review", "approve", only_run(db), "--as", "Lena", "--db", db, "--format", "json"], capsys
    )
    assert code == 0, out
    assert json.loads(out)["status"] == "completed"


def test_a_moved_checkout_is_found_from_inside_it(
    places: tuple[Path, Path, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _, _, db = places
    Path("input.json").write_text(json.dumps({"amount": 20}), encoding="utf-8")
    run(["run", "flows/pay.yaml", "--input", "input.json", "--db", db], capsys)
    moved = tmp_path / "moved"
    shutil.move(str(tmp_path / "repo"), moved)
    (moved / "flows" / "tools" / "open").touch()
    (moved / "flows" / "tools" / "ledger.py").write_text(
        "def note():\n    return 'moved'\n", encoding="utf-8"
    )
    monkeypatch.chdir(moved / "flows")
    code, out = run(["resume", only_run(db), "--db", db, "--format", "json"], capsys)
    assert code == 0, out
    store = SqlStore(db)
    paid = [
        c.output
        for c in store.checkpoints(only_run(db))
        if c.step_id == "pay" and c.outcome == "ok"
    ]
    store.close()
    assert paid == [{"paid": 20, "by": "moved"}]


def test_two_flow_folders_with_the_same_module_names_keep_their_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_repo(tmp_path / "one", who="one")
    second = make_repo(tmp_path / "two", who="two")
    for flow in (first, second):
        (flow.parent / "tools" / "open").touch()
    monkeypatch.chdir(tmp_path)
    Path("input.json").write_text(json.dumps({"amount": 5}), encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    path_before = list(sys.path)
    for flow in (first, second):
        code, out = run(["run", str(flow), "--input", "input.json", "--db", db], capsys)
        assert code == 0, out
    assert sys.path == path_before
    store = SqlStore(db)
    paid = sorted(
        c.output["by"]
        for r in store.list_runs()
        for c in store.checkpoints(r.id)
        if c.step_id == "pay"
    )
    store.close()
    assert paid == ["one", "two"]
