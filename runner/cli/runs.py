"""Commands that run flows and read the run store: run, resume, runs, show."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from runner.core.errors import UsageError

EXIT_OK, EXIT_FAILED, EXIT_ESCALATED = 0, 1, 4
_STATUS_EXIT = {"completed": EXIT_OK, "failed": EXIT_FAILED, "escalated": EXIT_ESCALATED,
                "rejected": EXIT_FAILED, "running": EXIT_FAILED, "archived": EXIT_FAILED}


def add_run_commands(commands: Any) -> None:
    """Add run, resume, runs and show to the `runner` parser."""
    run = commands.add_parser("run", help="run a flow on one input")
    run.add_argument("flow", metavar="FLOW")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="FILE",
                        help="JSON file with the run input, or - for standard input")
    source.add_argument("--inputs", metavar="FILE",
                        help="JSON-lines file: one run per line")
    run.add_argument("--concurrency", type=int, default=4, metavar="N",
                     help="with --inputs: runs at a time (default 4)")
    run.add_argument("--max-input-bytes", type=int, metavar="N",
                     help="refuse larger input (default 1 MiB, or RUNNER_MAX_INPUT_BYTES)")
    _common(run)
    run.set_defaults(command=cmd_run)

    resume = commands.add_parser("resume", help="continue an interrupted or failed run")
    resume.add_argument("run_id", metavar="RUN")
    resume.add_argument("--from", dest="from_step", metavar="STEP",
                        help="start again at this step instead of where the run stopped")
    _common(resume)
    resume.set_defaults(command=cmd_resume)

    runs = commands.add_parser("runs", help="list runs, newest first")
    runs.add_argument("--status", choices=("queued", "running", "completed", "escalated",
                                           "failed", "rejected", "archived"))
    runs.add_argument("--flow", metavar="NAME")
    runs.add_argument("--limit", type=int, default=50)
    _common(runs)
    runs.set_defaults(command=cmd_runs)

    show = commands.add_parser("show", help="a run's timeline: steps, attempts, routes")
    show.add_argument("run_id", metavar="RUN")
    _common(show)
    show.set_defaults(command=cmd_show)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="URL",
                        help="database URL (default RUNNER_DB, else sqlite .runner/runner.db)")
    parser.add_argument("--format", choices=("text", "json"), default="text")


def _store(args: argparse.Namespace) -> Any:
    from runner.store.sql import SqlStore, store_url

    return SqlStore(store_url(args.db))


def _read_input(source: str) -> Any:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read input {source}: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"input {source} is not JSON: {exc}") from exc


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    from runner.runtime.engine import DEFAULT_MAX_INPUT_BYTES, Engine
    from runner.lang.load import load_flow

    compiled = load_flow(args.flow)  # a FlowError is reported by main()
    limit = args.max_input_bytes or int(os.environ.get("RUNNER_MAX_INPUT_BYTES",
                                                       DEFAULT_MAX_INPUT_BYTES))
    started = time.perf_counter()
    engine = Engine(_store(args), max_input_bytes=limit)
    if args.inputs:
        return _batch(engine, compiled, args, out)
    result = engine.start(compiled, _read_input(args.input))
    return _outcome(result, time.perf_counter() - started, args.format, out)


def _batch(engine: Any, compiled: Any, args: argparse.Namespace, out: TextIO) -> int:
    from runner.runtime.batch import read_lines, run_batch

    inputs = list(read_lines(args.inputs))
    started = time.perf_counter()
    progress = _Progress(len(inputs)) if sys.stderr.isatty() and args.format == "text" \
        else None

    def done(item: Any) -> None:
        if args.format == "text":
            where = f" at {item.at}" if item.at else ""
            why = f": {_short(item.reason, 100)}" if item.reason else ""
            print(f"line {item.line}: {item.run_id or '-'} {item.status}{where}{why}",
                  file=out, flush=True)
        if progress:
            progress.advance()

    items = run_batch(engine, compiled, inputs, args.concurrency, done)
    if progress:
        progress.stop()
    counts: dict[str, int] = {}
    for item in items:
        counts[item.status] = counts.get(item.status, 0) + 1
    if args.format == "json":
        json.dump([item.__dict__ for item in items], out, indent=2)
        out.write("\n")
    else:
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        print(f"{len(items)} runs: {summary} ({time.perf_counter() - started:.1f} s)",
              file=out)
    if any(s in counts for s in ("failed", "refused", "error", "rejected")):
        return EXIT_FAILED
    return EXIT_ESCALATED if "escalated" in counts else EXIT_OK


class _Progress:
    """A progress bar on the terminal (rich), for batches."""

    def __init__(self, total: int) -> None:
        from rich.progress import Progress

        self.progress = Progress(transient=True)
        self.task = self.progress.add_task("runs", total=total)
        self.progress.start()

    def advance(self) -> None:
        self.progress.advance(self.task)

    def stop(self) -> None:
        self.progress.stop()


def cmd_resume(args: argparse.Namespace, out: TextIO) -> int:
    from runner.runtime.engine import Engine

    started = time.perf_counter()
    result = Engine(_store(args)).resume(args.run_id, from_step=args.from_step)
    return _outcome(result, time.perf_counter() - started, args.format, out)


def _outcome(result: Any, seconds: float, form: str, out: TextIO) -> int:
    if form == "json":
        json.dump({"run": result.run_id, "status": result.status, "position": result.position,
                   "reason": result.reason, "error": result.error}, out, indent=2)
        out.write("\n")
        return _STATUS_EXIT.get(result.status, EXIT_FAILED)
    print(f"run {result.run_id} {result.status} ({seconds:.2f} s)", file=out)
    if result.status == "escalated":
        print(f"  waiting for human review: {result.reason}", file=out)
    elif result.status == "failed":
        print(f"  in the dead-letter queue: {result.reason}", file=out)
        print(f"  after fixing the cause: runner resume {result.run_id}", file=out)
    return _STATUS_EXIT.get(result.status, EXIT_FAILED)


def cmd_runs(args: argparse.Namespace, out: TextIO) -> int:
    records = _store(args).list_runs(status=args.status, flow=args.flow, limit=args.limit)
    if args.format == "json":
        json.dump([_run_json(r) for r in records], out, indent=2)
        out.write("\n")
        return EXIT_OK
    if not records:
        print("no runs", file=out)
        return EXIT_OK
    rows = [("RUN", "FLOW", "STATUS", "AT", "STEPS", "UPDATED", "REASON")]
    rows += [(r.id, r.flow_name, r.status, r.failed_step or r.position, str(r.steps_run),
              _when(r.updated_at), _short(r.reason or "", 60)) for r in records]
    _table(rows, out)
    return EXIT_OK


def cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    store = _store(args)
    record = store.run(args.run_id)
    events = store.events(record.id)
    if args.format == "json":
        data = _run_json(record)
        data["input"] = record.input
        data["error"] = record.error
        data["checkpoints"] = [{"seq": c.seq, "step": c.step_id, "outcome": c.outcome,
                                "route": c.route, "attempts": c.attempts, "output": c.output}
                               for c in store.checkpoints(record.id)]
        data["events"] = [{"at": e.at.isoformat(), "kind": e.kind, "step": e.step_id,
                           "data": e.data} for e in events]
        json.dump(data, out, indent=2, default=str)
        out.write("\n")
        return EXIT_OK
    version = store.flow_version(record.flow_digest)
    print(f"run      {record.id}", file=out)
    print(f"flow     {record.flow_name} ({version.path}, version {version.digest[:12]}"
          f"{', commit ' + version.git_commit[:12] if version.git_commit else ''})", file=out)
    print(f"status   {record.status} at {record.failed_step or record.position}", file=out)
    if record.reason:
        print(f"reason   {record.reason}", file=out)
    print("", file=out)
    _timeline(events, out)
    return EXIT_OK


def _timeline(events: list[Any], out: TextIO) -> None:
    """Events as lines: time since the first, step, what happened."""
    start = events[0].at if events else None
    for event in events:
        offset = (event.at - start).total_seconds() if start else 0.0
        print(f"  +{offset:8.3f}s  {event.step_id or '-':<16} {_describe(event)}", file=out)


def _describe(event: Any) -> str:
    data = event.data
    if event.kind == "step":
        text = f"{data['outcome']} -> {data['route']}  ({data['attempts']} attempt" \
               f"{'s' * (data['attempts'] != 1)}, {data['ms']:.1f} ms)"
        if data.get("error"):
            text += f"\n{'':30}error: {_short(data['error']['message'], 200)}"
        return text
    if event.kind == "attempt_failed":
        wait = f", retry in {data['wait']:.2f}s" if data.get("wait") is not None else ""
        return f"attempt {data['attempt']} failed: {data['kind']}: " \
               f"{_short(data['message'], 120)}{wait}"
    if event.kind == "effect":
        return f"effect {data['key']}: {data['status']}"
    if event.kind == "policy":
        return f"policy {data['policy']} fired ({data['rule']}): {data['message']}"
    if event.kind == "run_started":
        return f"run started (flow {data['flow']}, version {data['digest'][:12]})"
    if event.kind == "run_resumed":
        return f"run resumed at {data['from']}"
    if event.kind == "decision":
        note = f" ({data['note']})" if data.get("note") else ""
        return f"{data['decision']} by {data['by']}{note} -> {data['position']}"
    if event.kind == "alert":
        return f"alert through {data['tool']}: {data['status']}" + (
            f" ({_short(data['error'], 120)})" if data.get("error") else "")
    if event.kind == "llm_call":
        return f"model {data['model']}: {data['prompt_tokens']}+{data['completion_tokens']} " \
               f"tokens, {data['latency_ms']:.0f} ms" + (
                   f", repair {data['repair']}" if data.get("repair") else "")
    if event.kind == "confidence":
        score = "none" if data["score"] is None else f"{data['score']:.3f}"
        verdict = "passed" if data["passed"] else "failed"
        return f"confidence {score} ({data['method']}) vs {data['min']:g}: {verdict}"
    return f"{event.kind} {json.dumps(data, default=str)}"


def _run_json(record: Any) -> dict[str, Any]:
    return {"run": record.id, "flow": record.flow_name, "status": record.status,
            "position": record.position, "failed_step": record.failed_step,
            "reason": record.reason, "steps_run": record.steps_run,
            "created_at": record.created_at.isoformat(),
            "updated_at": record.updated_at.isoformat()}


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(),
              file=out)
