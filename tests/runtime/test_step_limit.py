"""A run has a step limit (`max_steps`, default 200): a run that would take one step
more takes the budget's route instead (`budget.on_exceeded`, default human_review), with
the reason "step limit reached: N steps". A loop of failures that routes back to itself
ends there instead of running for ever.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.cli.main import main
from runner.lang.load import load_flow
from runner.runtime.engine import Engine
from runner.store.sql import SqlStore

TOOLS = """\
def fail():
    raise RuntimeError("the service is down")


def note():
    return {"noted": True}
"""
RETRYING = {"id": "call", "tool": "flaky", "args": {}, "on_error": "call", "next": "done"}


def write_flow(tmp_path: Path, steps: list[dict[str, Any]], **extra: Any) -> Path:
    (tmp_path / "limit_tools.py").write_text(TOOLS, encoding="utf-8")
    document = {
        "version": 1,
        "name": "looping",
        **extra,
        "tools": {
            "flaky": {"python": "limit_tools:fail", "retry": 1},
            "note": {"python": "limit_tools:note"},
        },
        "steps": steps,
        "on_error": "dead_letter",
    }
    path = tmp_path / "looping.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def routes(store: SqlStore, run_id: str) -> list[tuple[str, str, str]]:
    return [(c.step_id, c.outcome, c.route) for c in store.checkpoints(run_id)]


@pytest.mark.parametrize(
    ("extra", "limit", "status", "ending"),
    [
        pytest.param({}, 200, "escalated", "human_review", id="default"),
        pytest.param({"max_steps": 5}, 5, "escalated", "human_review", id="max_steps"),
        pytest.param(
            {"max_steps": 3, "budget": {"max_llm_calls": 10, "on_exceeded": "dead_letter"}},
            3,
            "failed",
            "dead_letter",
            id="budget-route",
        ),
    ],
)
def test_an_error_route_that_loops_back_stops_at_the_step_limit(
    tmp_path: Path, extra: dict[str, Any], limit: int, status: str, ending: str
) -> None:
    store = SqlStore.memory()
    compiled = load_flow(write_flow(tmp_path, [RETRYING], **extra))

    result = Engine(store).start(compiled, {})

    reason = f"step limit reached: {limit} steps"
    assert (result.status, result.position, result.reason) == (status, ending, reason)
    assert routes(store, result.run_id) == [("call", "error", "call")] * limit + [
        ("call", "budget_exceeded", ending)
    ]
    run = store.run(result.run_id)
    assert (run.failed_step, run.reason, run.error) == (
        "call",
        reason,
        {"kind": "budget_exceeded", "message": reason},
    )
    budget = [e.data for e in store.events(result.run_id) if e.kind == "budget"]
    assert budget == [{"message": reason}]
    store.close()


@pytest.mark.parametrize(
    ("after", "status", "tail"),
    [
        pytest.param("done", "completed", [("wrap_up", "ok", "done")], id="then-done"),
        pytest.param(
            "again",
            "escalated",
            [("wrap_up", "ok", "again"), ("again", "budget_exceeded", "human_review")],
            id="then-another-step",
        ),
    ],
)
def test_a_step_named_by_on_exceeded_runs_once_past_the_limit(
    tmp_path: Path, after: str, status: str, tail: list[tuple[str, str, str]]
) -> None:
    steps = [
        {**RETRYING, "next": "wrap_up"},
        {"id": "wrap_up", "tool": "note", "args": {}, "next": after},
        {"id": "again", "tool": "note", "args": {}},
    ][: 3 if after == "again" else 2]
    extra = {"max_steps": 4, "budget": {"max_llm_calls": 10, "on_exceeded": "wrap_up"}}
    store = SqlStore.memory()
    compiled = load_flow(write_flow(tmp_path, steps, **extra))

    result = Engine(store).start(compiled, {})

    assert result.status == status
    assert routes(store, result.run_id) == [
        *[("call", "error", "call")] * 4,
        ("call", "budget_exceeded", "wrap_up"),
        *tail,
    ]
    store.close()


def test_a_resumed_run_counts_the_steps_it_took_before(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    budget = {"max_llm_calls": 1, "on_exceeded": "dead_letter"}
    flow = write_flow(tmp_path, [RETRYING], max_steps=3, budget=budget)
    source = tmp_path / "input.json"
    source.write_text("{}", encoding="utf-8")
    out = io.StringIO()
    assert main(["run", str(flow), "--input", str(source), "--db", url], out=out) == 1
    run_id = out.getvalue().split()[1]

    out = io.StringIO()
    assert main(["resume", run_id, "--db", url], out=out) == 4

    store = SqlStore(url)
    assert [c.outcome for c in store.checkpoints(run_id)] == ["error"] * 3 + [
        "budget_exceeded",
        "budget_exceeded",
    ]
    assert store.run(run_id).reason == "step limit reached: 3 steps"
    store.close()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "must be at least 1, found 0"),
        (-1, "must be at least 1, found -1"),
        (1.5, "expected a whole number, found a number 1.5"),
        ("many", 'expected a whole number, found text "many"'),
    ],
)
def test_max_steps_must_be_a_positive_whole_number(
    tmp_path: Path, value: Any, message: str
) -> None:
    flow = write_flow(tmp_path, [RETRYING], max_steps=value)
    out = io.StringIO()

    assert main(["validate", str(flow)], out=out) == 1
    assert out.getvalue().splitlines()[0] == f"{flow}:3:12: max_steps: {message}"
