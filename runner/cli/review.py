"""Commands for the people on call: `runner review ...` and `runner dlq ...`."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from runner.cli.output import (
    add_store_options,
    events_json,
    open_store,
    outcome,
    table,
    timeline,
)
from runner.core.errors import UsageError
from runner.core.notices import notice
from runner.core.vocabulary import ExitCode, RunStatus

QUEUE_LIMIT = 1000  # runs a queue lists (a list sorted by urgency must see them all)


def add_review_commands(commands: Any) -> None:
    """Add `review` and `dlq` to the `runner` parser."""
    review = commands.add_parser("review", help="the human review queue (escalated runs)")
    actions = review.add_subparsers(title="actions", metavar="ACTION", required=True)
    _action(
        actions,
        "list",
        "escalated runs waiting for a person, overdue first",
        cmd_review_list,
        run=False,
    ).add_argument("--flow", metavar="NAME")
    _action(
        actions, "show", "why a run stopped, what it proposes, who decides by when", cmd_review_show
    )
    _add_approve(actions)
    _action(
        actions, "reject", "close the run; nothing more of it runs", cmd_review_reject, who=True
    ).add_argument("--reason", required=True, metavar="TEXT")
    _action(
        actions, "retry", "run again from a step", cmd_review_retry, who=True, note=True
    ).add_argument("--from", dest="from_step", metavar="STEP", required=True)
    _action(actions, "expire", "apply the flows' review expiry", cmd_review_expire, run=False)
    _add_dlq(commands)


def _add_approve(actions: Any) -> None:
    approve = _action(
        actions,
        "approve",
        "accept (or edit) and continue the run",
        cmd_review_approve,
        who=True,
        note=True,
    )
    edit = approve.add_mutually_exclusive_group()
    edit.add_argument("--edit", metavar="FILE", help="JSON file with the corrected output")
    edit.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="change one field of the output (repeatable)",
    )
    approve.add_argument(
        "--hash", metavar="HASH", help="refuse if the proposal no longer has this hash (from show)"
    )
    approve.add_argument(
        "--override",
        metavar="REASON",
        help="approve an edit that breaks a policy anyway, saying why",
    )


def _add_dlq(commands: Any) -> None:
    dlq = commands.add_parser("dlq", help="the dead-letter queue (failed runs)")
    actions = dlq.add_subparsers(title="actions", metavar="ACTION", required=True)
    _action(actions, "list", "failed runs", cmd_dlq_list, run=False).add_argument(
        "--flow", metavar="NAME"
    )
    _action(actions, "show", "a failed run: input, error, attempts", cmd_review_show)
    retry = _action(
        actions, "retry", "resume at the failed step (or --from STEP)", cmd_dlq_retry, who=True
    )
    retry.add_argument("--from", dest="from_step", metavar="STEP")
    retry.add_argument(
        "--flow", metavar="FILE", help="go on with this (fixed) version of the run's flow"
    )
    _action(
        actions,
        "drop",
        "archive a failed run, keeping its audit trail",
        cmd_dlq_drop,
        who=True,
        note=True,
    )


def _action(
    actions: Any,
    name: str,
    help_text: str,
    command: Any,
    *,
    run: bool = True,
    who: bool = False,
    note: bool = False,
) -> argparse.ArgumentParser:
    """One action: its run argument, who decides, a note, and --db/--format."""
    parser: argparse.ArgumentParser = actions.add_parser(name, help=help_text)
    if run:
        parser.add_argument("run_id", metavar="RUN")
    if who:
        parser.add_argument(
            "--as",
            dest="who",
            metavar="NAME",
            help="who decides (default: git user.name, else the OS user)",
        )
    if note:
        parser.add_argument("--note", metavar="TEXT")
    add_store_options(parser)
    parser.set_defaults(command=command)
    return parser


def _desk(args: argparse.Namespace, *, sweep: bool = True) -> Any:
    from runner.review.desk import Desk
    from runner.runtime.engine import Engine

    return Desk(Engine(open_store(args, expire=sweep)))


def _queue(args: argparse.Namespace, out: TextIO, status: str) -> int:
    from runner.cli import review_show
    from runner.review.proposals import proposal_json

    items = _desk(args).queue(status=status, flow=args.flow, limit=QUEUE_LIMIT)
    at = datetime.now(UTC)
    if status == RunStatus.ESCALATED:
        items = review_show.waiting_order(items, at)
    if args.format == "json":
        json.dump([proposal_json(p) for p in items], out, indent=2, default=str)
        out.write("\n")
        return ExitCode.OK
    if not items:
        print("nothing waiting" if status == RunStatus.ESCALATED else "no failed runs", file=out)
        return ExitCode.OK
    table(review_show.queue_rows(items, status, at), out)
    return ExitCode.OK


def cmd_review_list(args: argparse.Namespace, out: TextIO) -> int:
    return _queue(args, out, RunStatus.ESCALATED)


def cmd_dlq_list(args: argparse.Namespace, out: TextIO) -> int:
    return _queue(args, out, RunStatus.FAILED)


def cmd_review_show(args: argparse.Namespace, out: TextIO) -> int:
    from runner.cli import review_show
    from runner.review.proposals import proposal_json

    desk = _desk(args)
    p = desk.proposal(args.run_id)
    events = desk.store.events(p.run.id)
    if args.format == "json":
        data = proposal_json(p)
        data["decisions"] = [  # what an override covers is in the decision's event
            {k: v for k, v in d.__dict__.items() if k != "overrides"}
            for d in desk.store.decisions(p.run.id)
        ]
        data["events"] = events_json(events)
        json.dump(data, out, indent=2, default=str)
        out.write("\n")
        return ExitCode.OK
    review_show.print_proposal(p, events, out)
    print("audit trail:", file=out)
    timeline(events, out)
    return ExitCode.OK


def cmd_review_approve(args: argparse.Namespace, out: TextIO) -> int:
    from runner.review.desk import reviewer

    content, edited = None, False
    if args.edit:
        try:
            content = json.loads(Path(args.edit).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"--edit {args.edit}: {exc}") from exc
        edited = True
    who = reviewer(args.who)
    result = _desk(args).approve(
        args.run_id,
        who,
        content=content,
        edited=edited,
        sets=tuple(args.sets),
        note=args.note,
        expect_hash=args.hash,
        override=args.override,
    )
    notice(f"approved by {who}", prefix=False)
    return outcome(result, 0.0, args.format, out)


def cmd_review_reject(args: argparse.Namespace, out: TextIO) -> int:
    from runner.review.desk import reviewer

    who = reviewer(args.who)
    result = _desk(args).reject(args.run_id, who, args.reason)
    if result.status == RunStatus.REJECTED:
        print(f"run {result.run_id} rejected by {who}: {args.reason}", file=out)
        return ExitCode.OK
    notice(f"rejected by {who}: {args.reason}", prefix=False)
    return outcome(result, 0.0, args.format, out)


def cmd_review_retry(args: argparse.Namespace, out: TextIO) -> int:
    from runner.review.desk import reviewer

    result = _desk(args).retry(args.run_id, reviewer(args.who), args.from_step, args.note)
    return outcome(result, 0.0, args.format, out)


def cmd_review_expire(args: argparse.Namespace, out: TextIO) -> int:
    moved = _desk(args, sweep=False).expire(unscheduled=True)
    if args.format == "json":
        json.dump([{"run": r, "route": route} for r, route in moved], out, indent=2)
        out.write("\n")
    else:
        for run_id, route in moved:
            print(f"run {run_id} expired -> {route}", file=out)
        print(f"{len(moved)} expired", file=out)
    return ExitCode.OK


def cmd_dlq_retry(args: argparse.Namespace, out: TextIO) -> int:
    from runner.lang.load import load_flow
    from runner.review.desk import reviewer

    flow = load_flow(args.flow) if args.flow else None
    result = _desk(args).retry(
        args.run_id, reviewer(args.who), args.from_step, statuses=("failed",), flow=flow
    )
    return outcome(result, 0.0, args.format, out)


def cmd_dlq_drop(args: argparse.Namespace, out: TextIO) -> int:
    from runner.review.desk import reviewer

    who = reviewer(args.who)
    _desk(args).drop(args.run_id, who, args.note)
    print(f"run {args.run_id} archived by {who}", file=out)
    return ExitCode.OK
