"""What the commands share: the store options, and how runs, tables and timelines are
printed."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

from runner.core.notices import notice
from runner.core.vocabulary import ExitCode, RunStatus, exit_code


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """`--db` and `--format`, which every command that reads the run store takes."""
    parser.add_argument(
        "--db",
        metavar="URL",
        help="database URL (default RUNNER_DB, else sqlite .runner/runner.db)",
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")


def open_store(
    args: argparse.Namespace,
    *,
    expire: bool = True,
    create: bool = False,
    connections: int | None = None,
) -> Any:
    """The run store `--db` (or RUNNER_DB, or the default) names. Only commands that
    start runs `create` it; for the others a store that is not there is a StoreError
    that says where they looked. Reviews that are overdue take their expiry route
    first: no one has to run `runner review expire`."""
    from runner.store import open_store as open_at
    from runner.store.sql import store_url

    store = open_at(store_url(args.db), create=create, connections=connections)
    if expire:
        _expire_due(store)
    return store


def _expire_due(store: Any) -> None:
    from runner.review.desk import Desk
    from runner.runtime.engine import Engine

    for run_id, route in Desk(Engine(store)).expire():
        notice(f"review of run {run_id} expired -> {route}", run=run_id, route=route)


def outcome(result: Any, seconds: float, form: str, out: TextIO) -> ExitCode:
    """Print where a run stopped; the exit code its status gives."""
    if form == "json":
        json.dump(
            {
                "run": result.run_id,
                "status": result.status,
                "position": result.position,
                "reason": result.reason,
                "error": result.error,
            },
            out,
            indent=2,
        )
        out.write("\n")
        return exit_code(result.status)
    print(f"run {result.run_id} {result.status} ({seconds:.2f} s)", file=out)
    if result.status == RunStatus.ESCALATED:
        print(f"  waiting for human review: {result.reason}", file=out)
    elif result.status == RunStatus.FAILED:
        print(f"  in the dead-letter queue: {result.reason}", file=out)
        print(
            f"  after fixing the cause: runner resume {result.run_id}"
            " (with --flow FILE if the fix is in the flow)",
            file=out,
        )
    return exit_code(result.status)


def timeline(events: list[Any], out: TextIO) -> None:
    """Events as lines: time since the first, step, what happened. The same thing
    happening several times in a row at one step (a policy that fires on every card
    number) prints once, with a count."""
    start = events[0].at if events else None
    lines: list[list[Any]] = []  # [offset, step, text, count]
    for event in events:
        offset = (event.at - start).total_seconds() if start else 0.0
        step, text = event.step_id or "-", event.describe()
        if lines and lines[-1][1:3] == [step, text]:
            lines[-1][3] += 1
            continue
        lines.append([offset, step, text, 1])
    for offset, step, text, count in lines:
        times = f" (x{count})" if count > 1 else ""
        print(f"  +{offset:8.3f}s  {step:<16} {text}{times}", file=out)


def events_json(events: list[Any]) -> list[dict[str, Any]]:
    return [
        {"at": e.at.isoformat(), "kind": e.kind, "step": e.step_id, "data": e.data} for e in events
    ]


def gated(store: Any, run_id: str) -> list[dict[str, Any]]:
    """Each gated step of a run (its last finished visit): the values its gates scored
    and each gate's score, min and verdict."""
    from runner.core.events import ConfidenceScored, StepFinished, last_visit

    events = store.events(run_id)
    outputs = {c.step_id: c.output for c in store.checkpoints(run_id)}
    steps = dict.fromkeys(e.step_id for e in events if isinstance(e, ConfidenceScored))
    found = []
    for step in steps:
        visit = last_visit(events, step or "")
        gates = [e for e in visit if isinstance(e, ConfidenceScored)]
        if gates and any(isinstance(e, StepFinished) for e in visit):
            found.append(_gated_step(step or "", gates, outputs))
    return found


def _gated_step(step: str, gates: list[Any], outputs: dict[str, Any]) -> dict[str, Any]:
    output = outputs.get(step)
    fields = dict.fromkeys(f for g in gates for f in g.fields or ())
    values = {f: output.get(f) for f in fields if isinstance(output, dict) and "." not in f}
    return {
        "step": step,
        "values": values,
        "gates": [
            {"gate": g.gate or g.method, "score": g.score, "min": g.min, "passed": g.passed}
            for g in gates
        ],
    }


def gated_text(steps: list[dict[str, Any]]) -> str:
    """`classify: billing (logprobs 0.93, similarity 0.51 < 0.6)`, steps joined by `; `."""
    parts = []
    for step in steps:
        values = ", ".join(str(v) for v in step["values"].values())
        scores = ", ".join(
            f"{g['gate']} {'none' if g['score'] is None else format(g['score'], '.2f')}"
            + ("" if g["passed"] else f" < {g['min']:g}")
            for g in step["gates"]
        )
        parts.append(f"{step['step']}: {values + ' ' if values else ''}({scores})")
    return "; ".join(parts)


def run_json(record: Any) -> dict[str, Any]:
    return {
        "run": record.id,
        "flow": record.flow_name,
        "status": record.status,
        "position": record.position,
        "failed_step": record.failed_step,
        "reason": record.reason,
        "steps_run": record.steps_run,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
    }


def when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Rows as aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out
        )
