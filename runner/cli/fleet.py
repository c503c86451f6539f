"""Commands of runner as a service: `submit` queues runs, `worker` claims and runs them."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from runner.cli.output import add_store_options, open_store
from runner.cli.runs import add_flow_inputs, read_input
from runner.core.errors import InputError, StoreError, UsageError
from runner.core.notices import notice
from runner.core.vocabulary import ExitCode


def add_fleet_commands(commands: Any) -> None:
    """Add submit and worker to the `runner` parser."""
    submit = commands.add_parser("submit", help="queue runs of a flow for `runner worker`")
    add_flow_inputs(submit)
    submit.add_argument(
        "--key",
        metavar="K",
        help="idempotency key: the same key never makes two runs (with --inputs, line N "
        "gets K:N; without a key, a line's run is the same for the same file and line)",
    )
    add_store_options(submit)
    submit.set_defaults(command=cmd_submit)
    _add_worker_command(commands)


def _add_worker_command(commands: Any) -> None:
    worker = commands.add_parser("worker", help="claim queued and interrupted runs and run them")
    worker.add_argument("--flows", metavar="DIR", help="only flows of this folder (default: all)")
    worker.add_argument(
        "--flow",
        action="append",
        default=[],
        metavar="NAME",
        help="only runs of this flow (repeatable)",
    )
    worker.add_argument(
        "--concurrency", type=int, default=8, metavar="N", help="runs at a time (default 8)"
    )
    worker.add_argument(
        "--poll",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="look for work at least this often (default 1)",
    )
    worker.add_argument(
        "--grace",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, how long runs may take to reach a step boundary",
    )
    worker.add_argument(
        "--park-after",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a retry wait longer than this puts the run back in the queue until it is "
        "due, instead of holding a thread (default 30)",
    )
    add_store_options(worker)
    worker.set_defaults(command=cmd_worker)


@dataclass(frozen=True)
class _Submission:
    """A run to queue: its line of --inputs (None for --input), input, key and id, or
    why its line is refused before anything is queued."""

    line: int | None
    value: Any
    key: str | None = None
    run_id: str | None = None
    refused: str | None = None


def cmd_submit(args: argparse.Namespace, out: TextIO) -> int:
    from runner.lang.load import load_flow
    from runner.runtime.versions import flow_version
    from runner.service.intake import submit

    compiled = load_flow(args.flow)
    flow = (compiled, flow_version(compiled))
    store = open_store(args, create=True, expire=False)
    done = []
    for one in _submissions(args, compiled.flow.name):
        try:
            if one.refused:
                raise InputError(one.refused)
            made = submit(store, flow, one.value, key=one.key, run_id=one.run_id)
            item = _submitted(made, one.line)
        except InputError as exc:  # this line is refused; the others go on
            if one.line is None:
                raise
            reason = " ".join(str(exc).split())
            item = {"run": None, "line": one.line, "status": "refused", "reason": reason}
        done.append(item)
        if args.format == "text":
            print(_submitted_line(item), file=out)
    if args.format == "json":
        json.dump(done, out, indent=2)
        out.write("\n")
    refused = any(d["status"] == "refused" or d.get("conflict") for d in done)
    return ExitCode.FAILED if refused else ExitCode.OK


def _submissions(args: argparse.Namespace, flow: str) -> list[_Submission]:
    """The runs to queue. Without a key, a line's run id is the one `runner run
    --inputs` gives it: the same file and line never queue twice."""
    from runner.runtime.batch import batch_run_id, read_lines

    if args.input:
        return [_Submission(None, read_input(args.input), args.key)]
    return [
        _Submission(
            line.number,
            line.value,
            f"{args.key}:{line.number}" if args.key else None,
            batch_run_id(flow, args.inputs, line.number, line.text),
            line.refused,
        )
        for line in read_lines(args.inputs)
    ]


def _submitted(made: Any, line: int | None) -> dict[str, Any]:
    return {
        "run": made.run.id,
        "line": line,
        "status": made.run.status,
        "created": made.created,
        "conflict": made.conflict,
    }


def _submitted_line(item: dict[str, Any]) -> str:
    where = f"line {item['line']}: " if item["line"] else ""
    if item["status"] == "refused":
        return f"{where}refused: {item['reason']}"
    if item["created"]:
        return f"{where}queued {item['run']}"
    clash = " with another input: nothing queued" if item["conflict"] else ""
    return f"{where}{item['run']} was already submitted ({item['status']}){clash}"


def cmd_worker(args: argparse.Namespace, out: TextIO) -> int:
    from runner.runtime.engine import Engine
    from runner.service.worker import Worker, WorkerOptions

    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    names = tuple(args.flow) + _folder_flows(args.flows)
    options = WorkerOptions(
        args.concurrency, names, args.poll, args.grace, park_after_seconds=args.park_after
    )
    stop = threading.Event()
    workers: list[Any] = []

    def asked(*_: Any) -> None:
        stop.set()
        for worker in workers:
            worker.wakeup.wake()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, asked)
    store = _reachable_store(args, stop)
    if store is not None:
        workers.append(Worker(Engine(store), options))
        notice(f"worker started: {args.concurrency} at a time, flows: {', '.join(names) or 'all'}")
        tally = workers[0].run(stop)
        done = ", ".join(f"{n} {s}" for s, n in sorted(tally.by_status.items())) or "no runs"
        released = f"; {tally.released} released mid-step" if tally.released else ""
        print(f"worker stopped: {done}{released}", file=out)
    return ExitCode.OK


def _reachable_store(args: argparse.Namespace, stop: threading.Event) -> Any:
    """The store, once it can be reached: a worker started while the database server
    is away (restarting, not up yet) waits for it, as its claim loop does later. None
    when stopped meanwhile. A store that cannot be used at all is an error at once."""
    wait = 0.5
    while not stop.is_set():
        try:
            return open_store(args, create=True, expire=False, connections=_pool(args.concurrency))
        except StoreError as exc:
            if not exc.transient:
                raise
            notice(f"waiting for the run store: {exc}", level="warning")
        stop.wait(wait)
        wait = min(wait * 2, 10.0)
    return None


def _pool(concurrency: int) -> int:
    """A worker's database connections: its runs take turns for them (a transaction
    lasts milliseconds), so a few serve many runs; two more for the claim loop and the
    heartbeat. (The LISTEN connection comes on top.)"""
    return min(concurrency, 16) + 2


def _folder_flows(folder: str | None) -> tuple[str, ...]:
    """The names of the flows in `--flows DIR` (a worker runs only those)."""
    if folder is None:
        return ()
    from runner.service.library import FlowLibrary

    names = tuple(FlowLibrary(Path(folder)).names())
    if not names:
        raise UsageError(f"--flows {folder}: no flow there compiles")
    return names
