"""`runner validate` and `runner graph`: check flow files, and draw one."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from runner.core.errors import FlowError, Problem, UsageError
from runner.core.text import plural
from runner.core.vocabulary import ExitCode


def add_validate_commands(commands: Any) -> None:
    """Add `validate` and `graph` to the `runner` parser."""
    validate = commands.add_parser("validate", help="check flow files and report every problem")
    validate.add_argument("paths", nargs="+", metavar="PATH", help="flow files or directories")
    validate.add_argument("--format", choices=("text", "json", "github"), default="text")
    validate.add_argument(
        "--force-exclude",
        action="store_true",
        help="leave out files named one by one too when [tool.runner] exclude matches them",
    )
    validate.set_defaults(command=cmd_validate)

    graph = commands.add_parser("graph", help="draw a flow's steps and routes")
    graph.add_argument("flow", metavar="FLOW")
    graph.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    graph.set_defaults(command=cmd_graph)


def cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    from runner.cli.files import OTHER, TEST, expand, kind_of

    files = expand(args.paths, force_exclude=args.force_exclude)
    kinds = {path: kind_of(path, found=found) for path, found in files}
    if not any(kind != OTHER for kind in kinds.values()) and not args.force_exclude:
        raise UsageError("no flow files found in " + ", ".join(args.paths))
    results: dict[str, list[Problem]] = {}
    for path, kind in kinds.items():
        if kind != OTHER:
            results[str(path)] = _problems(path, tests=kind == TEST)
    tally = Tally(
        flows=sum(k not in (TEST, OTHER) for k in kinds.values()),
        tests=sum(k == TEST for k in kinds.values()),
        skipped=sum(k == OTHER for k in kinds.values()),
    )
    report = {"text": _report_text, "json": _report_json, "github": _report_github}
    report[args.format](results, out, tally)
    return ExitCode.FAILED if _errors(results) else ExitCode.OK


@dataclass(frozen=True)
class Tally:
    flows: int
    tests: int
    skipped: int  # YAML files that are neither flows nor flow tests

    def files(self) -> str:
        parts = [plural(self.flows, "flow")] if self.flows or not self.tests else []
        parts += [plural(self.tests, "test file")] if self.tests else []
        return " and ".join(parts)


def _problems(path: Path, *, tests: bool) -> list[Problem]:
    """A file's problems: errors, and a flow's warnings (which do not fail it)."""
    from runner.flowtest.cases import load_test_file
    from runner.lang.load import load_flow

    try:
        if tests:
            load_test_file(path)
            return []
        return list(load_flow(path).warnings)
    except FlowError as exc:
        return exc.problems


def _errors(results: dict[str, list[Problem]]) -> list[Problem]:
    return [p for found in results.values() for p in found if p.severity == "error"]


def _report_text(results: dict[str, list[Problem]], out: TextIO, tally: Tally) -> None:
    for found in results.values():
        for problem in found:
            print(problem, file=out)
    _summary(results, out, tally)


def _summary(results: dict[str, list[Problem]], out: TextIO, tally: Tally) -> None:
    errors = _errors(results)
    warnings = sum(len(found) for found in results.values()) - len(errors)
    failing = len({p.file for p in errors})
    notes = f"; {plural(warnings, 'warning')}" if warnings else ""
    notes += f"; {plural(tally.skipped, 'other YAML file')} left alone" if tally.skipped else ""
    if errors:
        print(f"{plural(len(errors), 'problem')} in {failing} of {tally.files()}{notes}", file=out)
    else:
        print(f"{tally.files()} valid{notes}", file=out)


def _report_json(results: dict[str, list[Problem]], out: TextIO, tally: Tally) -> None:
    files = [
        {
            "file": name,
            "valid": not any(p.severity == "error" for p in found),
            "problems": [
                {
                    "line": p.line,
                    "col": p.col,
                    "path": p.path,
                    "message": p.message,
                    "severity": p.severity,
                }
                for p in found
            ],
        }
        for name, found in results.items()
    ]
    errors = len(_errors(results))
    warnings = sum(len(found) for found in results.values()) - errors
    summary = {"valid": errors == 0, "problems": errors, "warnings": warnings}
    json.dump({**summary, "files": files}, out, indent=2)
    out.write("\n")


def github_escape(text: str, *, prop: bool = False) -> str:
    """Text for a GitHub Actions workflow command: its message (`prop` False) or a
    property value such as `file=` (`prop` True), escaped as the runner expects."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def _report_github(results: dict[str, list[Problem]], out: TextIO, tally: Tally) -> None:
    for found in results.values():
        for p in found:
            print(
                f"::{p.severity} file={github_escape(p.file, prop=True)},line={p.line},"
                f"col={p.col},"
                f"title=runner validate::{github_escape(p.path)}: {github_escape(p.message)}",
                file=out,
            )
    _summary(results, out, tally)


def cmd_graph(args: argparse.Namespace, out: TextIO) -> int:
    from runner.lang.diagram import FORMATS
    from runner.lang.load import load_flow

    compiled = load_flow(args.flow)  # a FlowError is reported by main()
    out.write(FORMATS[args.format](compiled))
    return ExitCode.OK
