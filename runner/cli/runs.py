"""Commands that run flows and read the run store: run, resume, runs, show."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from runner.cli.output import (
    add_store_options,
    events_json,
    gated,
    gated_text,
    open_store,
    outcome,
    run_json,
    table,
    timeline,
    when,
)
from runner.core.errors import RunnerError, UsageError
from runner.core.text import short
from runner.core.vocabulary import ExitCode, RunStatus


def add_run_commands(commands: Any) -> None:
    """Add run, resume, runs and show to the `runner` parser."""
    run = commands.add_parser("run", help="run a flow on one input")
    add_flow_inputs(run)
    run.add_argument(
        "--concurrency",
        type=int,
        default=4,
        metavar="N",
        help="with --inputs: runs at a time (default 4)",
    )
    run.add_argument(
        "--max-input-bytes",
        type=int,
        metavar="N",
        help="refuse larger input (default 1 MiB, or RUNNER_MAX_INPUT_BYTES)",
    )
    add_store_options(run)
    run.set_defaults(command=cmd_run)
    _add_reading_commands(commands)


def add_flow_inputs(parser: argparse.ArgumentParser) -> None:
    """FLOW and its input: `--input FILE` (or -) for one run, `--inputs FILE.jsonl` for
    one run per line (`runner run` and `runner submit`)."""
    parser.add_argument("flow", metavar="FLOW")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input", metavar="FILE", help="JSON file with the run input, or - for standard input"
    )
    source.add_argument("--inputs", metavar="FILE", help="JSON-lines file: one run per line")


def _add_reading_commands(commands: Any) -> None:
    """resume, runs and show: the commands that take a run already in the store."""
    resume = commands.add_parser("resume", help="continue an interrupted or failed run")
    resume.add_argument("run_id", metavar="RUN", nargs="?")
    resume.add_argument(
        "--all-interrupted",
        action="store_true",
        help="continue every interrupted run (one whose process stopped), oldest first",
    )
    resume.add_argument(
        "--from",
        dest="from_step",
        metavar="STEP",
        help="start again at this step instead of where the run stopped",
    )
    resume.add_argument(
        "--flow",
        metavar="FILE",
        help="go on with this (fixed) version of the run's flow instead of the one it pinned",
    )
    add_store_options(resume)
    resume.set_defaults(command=cmd_resume)

    runs = commands.add_parser("runs", help="list runs, newest first")
    runs.add_argument(
        "--status",
        choices=[str(status) for status in RunStatus],
    )
    runs.add_argument("--flow", metavar="NAME")
    runs.add_argument("--limit", type=int, default=50)
    add_store_options(runs)
    runs.set_defaults(command=cmd_runs)

    show = commands.add_parser("show", help="a run's timeline: steps, attempts, routes")
    show.add_argument("run_id", metavar="RUN")
    add_store_options(show)
    show.set_defaults(command=cmd_show)


def read_input(source: str) -> Any:
    """The input's JSON value; InputError for input no store keeps as it is."""
    from runner.runtime.inputs import parse_input

    try:
        data = _stdin_bytes() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read input {source}: {exc.strerror}") from exc
    try:
        return parse_input(data)
    except json.JSONDecodeError as exc:
        raise UsageError(f"input {source} is not JSON: {exc}") from exc


def _stdin_bytes() -> bytes:
    """Standard input as it came: its bytes, decoded by parse_input, not by the locale."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is not None:
        return bytes(buffer.read())
    return sys.stdin.read().encode("utf-8", "surrogatepass")  # a text stream (tests)


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    from runner.lang.load import load_flow
    from runner.runtime.engine import DEFAULT_MAX_INPUT_BYTES, Engine

    compiled = load_flow(args.flow)  # a FlowError is reported by main()
    limit = args.max_input_bytes or int(
        os.environ.get("RUNNER_MAX_INPUT_BYTES", DEFAULT_MAX_INPUT_BYTES)
    )
    started = time.perf_counter()
    engine = Engine(open_store(args, create=True), max_input_bytes=limit)
    if args.inputs:
        return _batch(engine, compiled, args, out)
    result = engine.start(compiled, read_input(args.input))
    return outcome(result, time.perf_counter() - started, args.format, out)


def _batch(engine: Any, compiled: Any, args: argparse.Namespace, out: TextIO) -> int:
    from runner.runtime.batch import read_lines, run_batch

    lines = read_lines(args.inputs)
    started = time.perf_counter()
    progress = _Progress(len(lines)) if sys.stderr.isatty() and args.format == "text" else None

    gates: dict[int, list[dict[str, Any]]] = {}

    def done(item: Any) -> None:
        gates[item.line] = gated(engine.store, item.run_id) if item.run_id else []
        if args.format == "text":
            print(_batch_line(item, gates[item.line]), file=out, flush=True)
        if progress:
            progress.advance()

    items = run_batch(engine, compiled, args.inputs, lines, args.concurrency, done)
    if progress:
        progress.stop()
    counts: dict[str, int] = {}
    for item in items:
        counts[item.status] = counts.get(item.status, 0) + 1
    if args.format == "json":
        json.dump(
            [{**item.__dict__, "gated": gates.get(item.line, [])} for item in items], out, indent=2
        )
        out.write("\n")
    else:
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        seconds = time.perf_counter() - started
        print(f"{len(items)} runs: {summary}; {_origins(items)} ({seconds:.1f} s)", file=out)
    if any(s in counts for s in ("failed", "refused", "error", "rejected")):
        return ExitCode.FAILED
    return ExitCode.ESCALATED if "escalated" in counts else ExitCode.OK


_ORIGIN_NOTES = {"resumed": " (resumed)", "finished": " (already finished)"}


def _batch_line(item: Any, gates: list[dict[str, Any]]) -> str:
    """`line 3: RUN escalated (resumed) at STEP: reason · classify: billing (logprobs
    0.41 < 0.7)`."""
    note = _ORIGIN_NOTES.get(item.origin or "", "")
    where = f" at {item.at}" if item.at else ""
    why = f": {short(item.reason, 100)}" if item.reason else ""
    scored = f" · {gated_text(gates)}" if gates else ""
    return f"line {item.line}: {item.run_id or '-'} {item.status}{note}{where}{why}{scored}"


def _origins(items: list[Any]) -> str:
    """How the batch's runs came about: `2 already finished, 1 resumed, 3 started`."""
    finished, resumed, started = (
        sum(item.origin == origin for item in items)
        for origin in ("finished", "resumed", "started")
    )
    return f"{finished} already finished, {resumed} resumed, {started} started"


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
    from runner.lang.load import load_flow
    from runner.runtime.engine import Engine

    if args.all_interrupted and (args.run_id or args.from_step):
        raise UsageError("--all-interrupted continues every interrupted run: give no RUN or --from")
    if not args.all_interrupted and not args.run_id:
        raise UsageError("give the RUN to resume, or --all-interrupted")
    if args.all_interrupted:
        return _resume_interrupted(Engine(open_store(args)), args.format, out)
    started = time.perf_counter()
    flow = load_flow(args.flow) if args.flow else None
    result = Engine(open_store(args)).resume(args.run_id, from_step=args.from_step, flow=flow)
    return outcome(result, time.perf_counter() - started, args.format, out)


def _resume_interrupted(engine: Any, form: str, out: TextIO) -> int:
    """Continue each interrupted run, oldest first: a line (or a JSON object) per run
    with where it ended. One that cannot be continued does not stop the others."""
    from runner.store.leases import interrupted

    found = [r for r in engine.store.list_runs(status="running", limit=10**6) if interrupted(r)]
    ended: list[dict[str, Any]] = []
    for record in reversed(found):
        ended.append(_resume_one(engine, record.id))
        if form == "text":
            print(_ended_line(ended[-1]), file=out, flush=True)
    if form == "json":
        json.dump(ended, out, indent=2)
        out.write("\n")
    elif not ended:
        print("no interrupted runs", file=out)
    statuses = {e["status"] for e in ended}
    if statuses & {"failed", "rejected", "error"}:
        return ExitCode.FAILED
    return ExitCode.ESCALATED if "escalated" in statuses else ExitCode.OK


def _resume_one(engine: Any, run_id: str) -> dict[str, Any]:
    """Continue one interrupted run: where it ended, or why it could not go on."""
    try:
        result = engine.resume(run_id)
    except RunnerError as exc:  # taken by another process meanwhile, its flow gone...
        return {"run": run_id, "status": "error", "at": None, "reason": str(exc)}
    stopped = engine.store.run(run_id).failed_step
    return {"run": run_id, "status": result.status, "at": stopped, "reason": result.reason}


def _ended_line(ended: dict[str, Any]) -> str:
    """`run RUN escalated at STEP: reason`."""
    where = f" at {ended['at']}" if ended["at"] else ""
    why = f": {short(ended['reason'], 100)}" if ended["reason"] else ""
    return f"run {ended['run']} {ended['status']}{where}{why}"


def cmd_runs(args: argparse.Namespace, out: TextIO) -> int:
    from runner.store.leases import interrupted

    store = open_store(args)
    records = store.list_runs(status=args.status, flow=args.flow, limit=args.limit)
    if args.format == "json":
        listed = [
            {**run_json(r), "interrupted": interrupted(r), "gated": gated(store, r.id)}
            for r in records
        ]
        json.dump(listed, out, indent=2)
        out.write("\n")
        return ExitCode.OK
    if not records:
        print("no runs", file=out)
        return ExitCode.OK
    stopped = sum(interrupted(r) for r in records)
    rows = [("RUN", "FLOW", "STATUS", "AT", "STEPS", "UPDATED", "REASON")]
    rows += [
        (
            r.id,
            r.flow_name,
            "interrupted" if interrupted(r) else r.status,  # shown so; stored as running
            r.failed_step or r.position,
            str(r.steps_run),
            when(r.updated_at),
            short(r.reason or "", 60),
        )
        for r in records
    ]
    table(rows, out)
    if stopped:
        print(
            f"{stopped} interrupted (no process runs {'it' if stopped == 1 else 'them'}): "
            "continue with `runner resume RUN`, or `runner resume --all-interrupted`",
            file=out,
        )
    return ExitCode.OK


def cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    store = open_store(args)
    record = store.run(args.run_id)
    events = store.events(record.id)
    if args.format == "json":
        data = run_json(record)
        data["input"] = record.input
        data["error"] = record.error
        data["checkpoints"] = [
            {
                "seq": c.seq,
                "step": c.step_id,
                "outcome": c.outcome,
                "route": c.route,
                "attempts": c.attempts,
                "output": c.output,
            }
            for c in store.checkpoints(record.id)
        ]
        data["events"] = events_json(events)
        json.dump(data, out, indent=2, default=str)
        out.write("\n")
        return ExitCode.OK
    version = store.flow_version(record.flow_digest)
    print(f"run      {record.id}", file=out)
    print(
        f"flow     {record.flow_name} ({version.path}, version {version.digest[:12]}"
        f"{', commit ' + version.git_commit[:12] if version.git_commit else ''})",
        file=out,
    )
    print(f"status   {record.status} at {record.failed_step or record.position}", file=out)
    if record.reason:
        print(f"reason   {record.reason}", file=out)
    print("", file=out)
    timeline(events, out)
    return ExitCode.OK
