"""`runner validate` and `runner graph`: check flow files, and draw one."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, TextIO

from runner.core.errors import FlowError, Problem, UsageError
from runner.core.text import plural
from runner.core.vocabulary import ExitCode


def add_validate_commands(commands: Any) -> None:
    """Add `validate` and `graph` to the `runner` parser."""
    validate = commands.add_parser("validate", help="check flow files and report every problem")
    validate.add_argument("paths", nargs="+", metavar="PATH", help="flow files or directories")
    validate.add_argument("--format", choices=("text", "json", "github"), default="text")
    validate.set_defaults(command=cmd_validate)

    graph = commands.add_parser("graph", help="draw a flow's steps and routes")
    graph.add_argument("flow", metavar="FLOW")
    graph.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    graph.set_defaults(command=cmd_graph)


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
    return ExitCode.FAILED if any(results.values()) else ExitCode.OK


def _report_text(results: dict[str, list[Problem]], out: TextIO, seconds: float) -> None:
    for found in results.values():
        for problem in found:
            print(problem, file=out)
    _summary(results, out)


def _summary(results: dict[str, list[Problem]], out: TextIO) -> None:
    problems = [p for found in results.values() for p in found]
    failing = sum(1 for found in results.values() if found)
    if problems:
        print(
            f"{plural(len(problems), 'problem')} in {failing} of {plural(len(results), 'flow')}",
            file=out,
        )
    else:
        print(f"{plural(len(results), 'flow')} valid", file=out)


def _report_json(results: dict[str, list[Problem]], out: TextIO, seconds: float) -> None:
    files = [
        {
            "file": name,
            "valid": not found,
            "problems": [
                {"line": p.line, "col": p.col, "path": p.path, "message": p.message} for p in found
            ],
        }
        for name, found in results.items()
    ]
    total = sum(len(found) for found in results.values())
    json.dump({"valid": total == 0, "problems": total, "files": files}, out, indent=2)
    out.write("\n")


def _report_github(results: dict[str, list[Problem]], out: TextIO, seconds: float) -> None:
    def escape(text: str, *, prop: bool = False) -> str:
        text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        return text.replace(":", "%3A").replace(",", "%2C") if prop else text

    for found in results.values():
        for p in found:
            print(
                f"::error file={escape(p.file, prop=True)},line={p.line},col={p.col},"
                f"title=runner validate::{escape(p.path)}: {escape(p.message)}",
                file=out,
            )
    _summary(results, out)


def cmd_graph(args: argparse.Namespace, out: TextIO) -> int:
    from runner.lang.diagram import FORMATS
    from runner.lang.load import load_flow

    compiled = load_flow(args.flow)  # a FlowError is reported by main()
    out.write(FORMATS[args.format](compiled))
    return ExitCode.OK
