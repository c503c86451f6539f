"""The `runner` command line.

Exit codes: 0 ok; 1 invalid flow or failed run; 2 usage; 3 internal error (a bug);
4 run escalated to human review. Heavy libraries are imported by the commands that
need them, so `runner validate` and `runner --help` start fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from runner.core.errors import FlowError, Problem, RunnerError, UsageError, crash_report

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL, EXIT_ESCALATED = 0, 1, 2, 3, 4

Command = Callable[[argparse.Namespace, TextIO], int]


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    out = out or sys.stdout
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 for --help
        return int(exc.code or 0)
    try:
        command: Command = args.command
        return command(args, out)
    except UsageError as exc:
        print(f"runner: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FlowError as exc:  # an author's file: every problem, located, no traceback
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_FAILED
    except RunnerError as exc:
        print(f"runner: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # the reader went away (`runner runs | head`): not our bug
        sys.stderr.close()
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("runner: interrupted", file=sys.stderr)
        return 130
    except Exception:
        return _internal_error()


def _internal_error() -> int:
    kind = sys.exc_info()[0]
    name = kind.__name__ if kind else "error"
    print(f"runner: internal error ({name}); this is a bug in runner. "
          f"The traceback is in {crash_report()}", file=sys.stderr)
    return EXIT_INTERNAL


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runner", description="Run AI agent workflows declared in YAML, durably.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    validate = commands.add_parser("validate", help="check flow files and report every problem")
    validate.add_argument("paths", nargs="+", metavar="PATH", help="flow files or directories")
    validate.add_argument("--format", choices=("text", "json", "github"), default="text")
    validate.set_defaults(command=cmd_validate)

    graph = commands.add_parser("graph", help="draw a flow's steps and routes")
    graph.add_argument("flow", metavar="FLOW")
    graph.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    graph.set_defaults(command=cmd_graph)

    from runner.cli.review import add_review_commands
    from runner.cli.runs import add_run_commands
    from runner.cli.test import add_test_command

    add_run_commands(commands)
    add_review_commands(commands)
    add_test_command(commands)
    return parser


def cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    from runner.lang.load import expand_paths, load_flow

    started = time.perf_counter()
    files = expand_paths(args.paths)
    if not files:
        raise UsageError("no flow files found in " + ", ".join(args.paths))
    results: dict[str, list[Problem]] = {}
    for path in files:
        try:
            load_flow(path)
            results[str(path)] = []
        except FlowError as exc:
            results[str(path)] = exc.problems
    report = {"text": _report_text, "json": _report_json, "github": _report_github}
    report[args.format](results, out, time.perf_counter() - started)
    return EXIT_FAILED if any(results.values()) else EXIT_OK


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _report_text(results: dict[str, list[Problem]], out: TextIO, seconds: float) -> None:
    for found in results.values():
        for problem in found:
            print(problem, file=out)
    _summary(results, out)


def _summary(results: dict[str, list[Problem]], out: TextIO) -> None:
    problems = [p for found in results.values() for p in found]
    failing = sum(1 for found in results.values() if found)
    if problems:
        print(f"{_plural(len(problems), 'problem')} in {failing} of "
              f"{_plural(len(results), 'flow')}", file=out)
    else:
        print(f"{_plural(len(results), 'flow')} valid", file=out)


def _report_json(results: dict[str, list[Problem]], out: TextIO, seconds: float) -> None:
    files = [{"file": name, "valid": not found,
              "problems": [{"line": p.line, "col": p.col, "path": p.path, "message": p.message}
                           for p in found]}
             for name, found in results.items()]
    total = sum(len(found) for found in results.values())
    json.dump({"valid": total == 0, "problems": total, "files": files}, out, indent=2)
    out.write("\n")


def _report_github(results: dict[str, list[Problem]], out: TextIO, seconds: float) -> None:
    def escape(text: str, *, prop: bool = False) -> str:
        text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        return text.replace(":", "%3A").replace(",", "%2C") if prop else text

    for found in results.values():
        for p in found:
            print(f"::error file={escape(p.file, prop=True)},line={p.line},col={p.col},"
                  f"title=runner validate::{escape(p.path)}: {escape(p.message)}", file=out)
    _summary(results, out)


def cmd_graph(args: argparse.Namespace, out: TextIO) -> int:
    from runner.lang.load import load_flow
    from runner.lang.diagram import FORMATS

    compiled = load_flow(args.flow)  # a FlowError is reported by main()
    out.write(FORMATS[args.format](compiled))
    return EXIT_OK


def entry() -> None:
    """Console-script entry point."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    sys.exit(main())
