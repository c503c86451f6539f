"""What a scrape of the service's figures costs: `collect` (runner/service/figures.py)
on a store of many runs.

    python bench/figures.py [--runs 100000] [--steps 5] [--repeats 5] [--db URL]

Fills a new store (a SQLite file in a temporary folder, or the empty database `--db`
names) with RUNS runs of STEPS checkpoints each, inserted directly (executemany), over
4 flows: most runs completed, some escalated at their last step (low_confidence) or in
the dead-letter queue (error), a few queued; step durations log-uniform between 10 ms
and 100 s. Then times `collect` REPEATS times and prints the median, min and max.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runner.service.figures import collect
from runner.store.sql import SqlStore
from runner.store.tables import checkpoints, flow_versions, runs

FLOWS = ("triage", "refunds", "replies", "intake")
CHUNK = 20_000
START = datetime(2026, 1, 1, tzinfo=UTC)


def fill(store: SqlStore, count: int, steps: int, rng: random.Random) -> None:
    """RUNS runs and their checkpoints, inserted in chunks, one transaction each."""
    with store.engine.begin() as conn:
        conn.execute(
            flow_versions.insert(),
            [
                {
                    "digest": f"d-{f}",
                    "name": f,
                    "path": f"{f}.yaml",
                    "text": "",
                    "created_at": START,
                }
                for f in FLOWS
            ],
        )
    for first in range(0, count, CHUNK):
        numbers = range(first, min(first + CHUNK, count))
        run_rows = [_run(n, steps, rng) for n in numbers]
        step_rows = [row for run in run_rows for row in _checkpoints(run, steps, rng)]
        with store.engine.begin() as conn:
            conn.execute(runs.insert(), run_rows)
            conn.execute(checkpoints.insert(), step_rows)


def _run(n: int, steps: int, rng: random.Random) -> dict[str, Any]:
    flow = FLOWS[n % len(FLOWS)]
    status = rng.choices(("completed", "escalated", "failed", "queued"), weights=(90, 6, 3, 1))[0]
    created = START + timedelta(seconds=n)
    return {
        "id": f"run-{n:08d}",
        "flow_name": flow,
        "flow_digest": f"d-{flow}",
        "status": status,
        "position": {"escalated": "human_review", "failed": "dead_letter"}.get(status, "done"),
        "failed_step": f"s{steps}" if status in ("escalated", "failed") else None,
        "input": {},
        "steps_run": steps,
        "llm_calls": 2,
        "tokens": rng.randrange(100, 2000),
        "cost_usd": rng.random() / 100,
        "created_at": created,
        "updated_at": created,
    }


def _checkpoints(run: dict[str, Any], steps: int, rng: random.Random) -> Iterator[dict[str, Any]]:
    ending = {"escalated": ("low_confidence", "human_review"), "failed": ("error", "dead_letter")}
    at = run["created_at"]
    for seq in range(1, steps + 1):
        seconds = 10 ** rng.uniform(-2, 2)
        outcome, route = "ok", f"s{seq + 1}" if seq < steps else "done"
        if seq == steps and run["status"] in ending:
            outcome, route = ending[run["status"]]
        yield {
            "run_id": run["id"],
            "seq": seq,
            "step_id": f"s{seq}",
            "outcome": outcome,
            "route": route,
            "output": None,
            "attempts": 1,
            "started_at": at,
            "finished_at": at + timedelta(seconds=seconds),
        }
        at += timedelta(seconds=seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--db", metavar="URL", help="an empty database (default: a new SQLite file)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = SqlStore(args.db or f"sqlite:///{folder}/figures.db", durable=False)
        started = time.perf_counter()
        fill(store, args.runs, args.steps, random.Random(1))
        filled = time.perf_counter() - started
        print(
            f"{store.engine.dialect.name}: {args.runs:,} runs, {args.runs * args.steps:,} "
            f"checkpoints, filled in {filled:.1f} s"
        )
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            figures = collect(store)
            seconds.append(time.perf_counter() - started)
        store.close()
    print(
        f"collect: median {statistics.median(seconds) * 1000:.0f} ms, "
        f"min {min(seconds) * 1000:.0f} ms, max {max(seconds) * 1000:.0f} ms "
        f"({args.repeats} times; {len(figures.steps)} steps, {len(figures.escalations)} "
        f"escalation rows, queue {figures.queue_depth})"
    )


if __name__ == "__main__":
    main()
