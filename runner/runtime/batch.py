"""Many runs of one flow: one per line of a JSON-lines file, several at a time.

A run's failure is that run's outcome, never the batch's: a refused input or a store
error is reported on its line and the other runs go on.
"""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.core.errors import RunnerError, UsageError, crash_report
from runner.lang.compiler import CompiledFlow


@dataclass(frozen=True)
class BatchItem:
    """The outcome of one input line."""

    line: int
    run_id: str | None
    status: str  # a run status, or "refused" for input the flow would not take
    at: str | None
    reason: str | None


def read_lines(path: str) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each non-blank line; UsageError names a bad line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read inputs {path}: {exc.strerror}") from exc
    for number, text in enumerate(lines, 1):
        if text.strip():
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}:{number}: not JSON: {exc.msg}") from exc


def run_batch(
    engine: Any,
    compiled: CompiledFlow,
    inputs: list[tuple[int, Any]],
    concurrency: int,
    done: Callable[[BatchItem], None],
) -> list[BatchItem]:
    """Run every input, `concurrency` at a time; `done` hears of each as it finishes."""

    def one(line: int, value: Any) -> BatchItem:
        try:
            result = engine.start(compiled, value)
        except RunnerError as exc:
            status = "refused" if type(exc).__name__ == "InputError" else "error"
            return BatchItem(line, None, status, None, str(exc).replace("\n", " "))
        except Exception as exc:  # a bug: this run is stuck, the others go on
            return BatchItem(
                line,
                None,
                "error",
                None,
                f"internal error ({type(exc).__name__}: {exc}); this is a bug "
                f"in runner. The traceback is in {crash_report()}",
            )
        at = None if result.status == "completed" else _stopped_at(engine, result.run_id)
        return BatchItem(line, result.run_id, result.status, at, result.reason)

    items: list[BatchItem] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(one, line, value) for line, value in inputs]
        for future in concurrent.futures.as_completed(futures):
            item = future.result()
            items.append(item)
            done(item)
    return sorted(items, key=lambda item: item.line)


def _stopped_at(engine: Any, run_id: str) -> str | None:
    record = engine.store.run(run_id)
    return str(record.failed_step or record.position)
