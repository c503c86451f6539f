"""Many runs of one flow: one per line of a JSON-lines file, several at a time.

A run's failure is that run's outcome, never the batch's: a refused input or a store
error is reported on its line and the other runs go on.

A batch can be run again, after a crash or a kill: each line's run has an id of its own,
made from the flow's name, the inputs file, the line's number and its text. Running the
same batch again reports the runs that finished (they are not run again), resumes the
runs left running, and starts the lines that never started. Effects keep their default
idempotency key (`<run id>:<step id>`) across the two, so nothing is sent twice.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.core.errors import InputError, RunnerError, StoreError, UsageError, crash_report
from runner.core.vocabulary import RunStatus
from runner.lang.compiler import CompiledFlow
from runner.runtime.inputs import parse_input
from runner.store.records import RunRecord

STARTED, RESUMED, FINISHED = "started", "resumed", "finished"  # how a line's run came about


@dataclass(frozen=True)
class BatchLine:
    """A line of an inputs file: its number, its bytes, and its value, or why its input
    is refused before any run."""

    number: int
    text: bytes
    value: Any = None
    refused: str | None = None


@dataclass(frozen=True)
class BatchItem:
    """The outcome of one input line."""

    line: int
    run_id: str | None
    status: str  # a run status, or "refused" for input the flow would not take
    at: str | None
    reason: str | None
    origin: str | None = None  # started, resumed, or finished by an earlier batch


def read_lines(path: str) -> list[BatchLine]:
    """Each non-blank line; UsageError names a line that is not JSON."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read inputs {path}: {exc.strerror}") from exc
    lines = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        text = raw.removesuffix(b"\r")
        if text.strip():
            lines.append(_line(path, number, text))
    return lines


def _line(path: str, number: int, text: bytes) -> BatchLine:
    try:
        return BatchLine(number, text, parse_input(text))
    except InputError as exc:
        return BatchLine(number, text, refused=_one_line(str(exc)))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{number}: not JSON: {exc.msg}") from exc


def batch_run_id(flow: str, inputs: str | Path, line: int, text: bytes) -> str:
    """The id of the run of one line of a batch: the same for the same flow, inputs
    file (by its absolute path), line number and line text; readable as `<file>-<line>-`
    followed by a hash."""
    where = Path(inputs).resolve()
    digest = hashlib.sha256(json.dumps([flow, str(where), line]).encode() + b"\n" + text)
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", where.stem)[:24] or "line"
    return f"{stem}-{line}-{digest.hexdigest()[:12]}"


def run_batch(
    engine: Any,
    compiled: CompiledFlow,
    inputs: str,
    lines: list[BatchLine],
    concurrency: int,
    done: Callable[[BatchItem], None],
) -> list[BatchItem]:
    """Run every line, `concurrency` at a time; `done` hears of each as it finishes."""

    def one(line: BatchLine) -> BatchItem:
        run_id = batch_run_id(compiled.flow.name, inputs, line.number, line.text)
        try:
            return _run_line(engine, compiled, line, run_id)
        except RunnerError as exc:
            status = "refused" if isinstance(exc, InputError) else "error"
            return BatchItem(line.number, None, status, None, _one_line(str(exc)))
        except Exception as exc:  # a bug: this run is stuck, the others go on
            return BatchItem(
                line.number,
                None,
                "error",
                None,
                f"internal error ({type(exc).__name__}: {exc}); this is a bug "
                f"in runner. The traceback is in {crash_report()}",
            )

    items: list[BatchItem] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(one, line) for line in lines]
        for future in concurrent.futures.as_completed(futures):
            item = future.result()
            items.append(item)
            done(item)
    return sorted(items, key=lambda item: item.line)


def _run_line(engine: Any, compiled: CompiledFlow, line: BatchLine, run_id: str) -> BatchItem:
    """Start the line's run, resume it if a batch before left it running, or report it
    as it is if it finished."""
    record = _existing(engine.store, run_id)
    if record is None and line.refused is not None:
        return BatchItem(line.number, None, "refused", None, line.refused)
    if record is None:
        result, origin = engine.start(compiled, line.value, run_id=run_id), STARTED
    elif record.status == RunStatus.RUNNING:
        result, origin = engine.resume(run_id), RESUMED
    else:
        return BatchItem(
            line.number, run_id, record.status, _stopped_at(record), record.reason, FINISHED
        )
    at = None if result.status == RunStatus.COMPLETED else _stopped_at(engine.store.run(run_id))
    return BatchItem(line.number, run_id, result.status, at, result.reason, origin)


def _existing(store: Any, run_id: str) -> RunRecord | None:
    try:
        record: RunRecord = store.run(run_id)
    except StoreError:  # no such run
        return None
    return record if record.id == run_id else None  # not another run's id prefix


def _stopped_at(record: RunRecord) -> str | None:
    if record.status == RunStatus.COMPLETED:
        return None
    return str(record.failed_step or record.position)


def _one_line(message: str) -> str:
    return re.sub(r"\n\s*", " ", message)
