"""The `runner` command line.

Exit codes: 0 ok; 1 invalid flow or failed run; 2 usage; 3 internal error (a bug);
4 run escalated to human review. Heavy libraries are imported by the commands that
need them, so `runner validate` and `runner --help` start fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from runner.core.errors import FlowError, RunnerError, UsageError, crash_report
from runner.core.notices import FORMATS, notice, use_format
from runner.core.vocabulary import ExitCode

Command = Callable[[argparse.Namespace, TextIO], int]


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    out = out or sys.stdout
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 for --help
        return int(exc.code or 0)
    if args.log_format:
        use_format(args.log_format)
    try:
        command: Command = args.command
        return command(args, out)
    except UsageError as exc:
        notice(str(exc), level="error", kind="usage")
        return ExitCode.USAGE
    except FlowError as exc:  # an author's file: every problem, located, no traceback
        for problem in exc.problems:
            notice(str(problem), level=problem.severity, prefix=False, file=problem.file)
        return ExitCode.FAILED
    except RunnerError as exc:
        notice(str(exc), level="error")
        return ExitCode.FAILED
    except BrokenPipeError:  # the reader went away (`runner runs | head`): not our bug
        sys.stderr.close()
        return ExitCode.FAILED
    except KeyboardInterrupt as stop:
        notice(_interrupted(stop, args), level="warning")
        return ExitCode.INTERRUPTED
    except Exception:
        return _internal_error(args)


def _interrupted(stop: KeyboardInterrupt, args: argparse.Namespace) -> str:
    """What Ctrl-C stopped and how to go on: a run (runtime.engine.RunInterrupted) stays
    at its last checkpoint, for `runner resume`."""
    run_id, position = getattr(stop, "run_id", None), getattr(stop, "position", None)
    if run_id is None:
        return "interrupted"
    from runner.store.engines import safe_url

    db = getattr(args, "db", None)
    again = f"runner resume {run_id}" + (f" --db {safe_url(db)}" if isinstance(db, str) else "")
    return f"interrupted run {run_id} at step {position}; continue it with: {again}"


def _internal_error(args: argparse.Namespace) -> int:
    """Say it is a bug and where the traceback went: beside the store the command
    uses, without the secrets of the flow it names (runner.core.crashes)."""
    kind = sys.exc_info()[0]
    name = kind.__name__ if kind else "error"
    db, flow = getattr(args, "db", None), getattr(args, "flow", None)
    report = crash_report(
        db if isinstance(db, str) else None, flow if isinstance(flow, str) else None
    )
    notice(
        f"internal error ({name}); this is a bug in runner. The traceback is in {report}",
        level="error",
        report=str(report),
    )
    return ExitCode.INTERNAL


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runner", description="Run AI agent workflows declared in YAML, durably."
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=None,
        help="how notices on stderr are written: text, or json lines for a log collector "
        "(default: RUNNER_LOG_FORMAT, else text)",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    from runner.cli.db import add_db_commands
    from runner.cli.evaluate import add_eval_command
    from runner.cli.fleet import add_fleet_commands
    from runner.cli.project import add_project_commands
    from runner.cli.review import add_review_commands
    from runner.cli.runs import add_run_commands
    from runner.cli.serve import add_serve_commands
    from runner.cli.stats import add_stats_command
    from runner.cli.test import add_test_command
    from runner.cli.validate import add_validate_commands

    add_validate_commands(commands)
    add_run_commands(commands)
    add_review_commands(commands)
    add_test_command(commands)
    add_eval_command(commands)
    add_project_commands(commands)
    add_db_commands(commands)
    add_stats_command(commands)
    add_fleet_commands(commands)
    add_serve_commands(commands)
    return parser


class _Version(argparse.Action):
    """--version: the installed release, looked up only when asked (reading the
    installed packages' metadata costs every other command tens of milliseconds)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        print(f"runner {version()}")
        parser.exit()


DISTRIBUTION = "runner-flows"  # the name runner is installed under (`pip install`)


def version() -> str:
    """The installed release (`pip show runner-flows`), or "unknown" from a bare tree."""
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def entry() -> None:
    """Console-script entry point."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    sys.exit(main())
