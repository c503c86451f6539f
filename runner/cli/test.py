"""`runner test`: run flow test files offline and report cases, diffs and route coverage
(the reports themselves are in `runner.cli.test_reports`)."""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from runner.core.errors import FlowError, UsageError
from runner.core.notices import notice
from runner.core.vocabulary import ExitCode

if TYPE_CHECKING:
    from runner.cli.test_reports import FileReport


def add_test_command(commands: Any) -> None:
    test = commands.add_parser("test", help="run flow tests offline (*.test.yaml)")
    test.add_argument(
        "paths",
        nargs="*",
        default=["."],
        metavar="PATH",
        help="test files, flows (their .test.yaml) or directories",
    )
    test.add_argument(
        "--format",
        choices=("text", "json", "github"),
        default="text",
        help="text for people, one JSON document, or GitHub Actions workflow commands",
    )
    test.add_argument("--junit", metavar="FILE", help="also write JUnit XML here")
    test.add_argument(
        "--min-coverage",
        type=float,
        default=0.0,
        metavar="P",
        help="fail when less than P percent of the routes were exercised",
    )
    test.set_defaults(command=cmd_test)
    _add_record_command(commands)


def _add_record_command(commands: Any) -> None:
    record = commands.add_parser(
        "record", help="run a flow once for real and write it as a test case"
    )
    record.add_argument("flow", metavar="FLOW")
    record.add_argument(
        "--input",
        metavar="FILE",
        required=True,
        help="JSON file with the run input, or - for standard input",
    )
    record.add_argument("--name", default="recorded run", help="the new case's name")
    record.add_argument(
        "--append",
        action="store_true",
        help="add the case to the flow's .test.yaml instead of printing it",
    )
    record.add_argument(
        "--db", metavar="URL", help="where the recorded run is kept (default: in memory)"
    )
    record.set_defaults(command=cmd_record)


def find_test_files(paths: list[str]) -> list[Path]:
    """Test files named, beside named flows, or under named directories."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found += sorted(
                p
                for p in path.rglob("*.test.y*ml")
                if not any(part.startswith(".") for part in p.parts)
            )
        elif ".test." in path.name:
            found.append(path)
        elif path.exists():
            beside = path.with_name(path.stem + ".test" + path.suffix)
            if not beside.exists():
                raise UsageError(f"{path} has no test file ({beside.name})")
            found.append(beside)
        else:
            raise UsageError(f"no such file or directory: {given}")
    return list(dict.fromkeys(found))


def cmd_test(args: argparse.Namespace, out: TextIO) -> int:
    from runner.cli.test_reports import REPORTS, Tally, text_file, write_junit

    files = find_test_files(args.paths)
    if not files:
        raise UsageError("no flow test files (*.test.yaml) found in " + ", ".join(args.paths))
    started = time.perf_counter()
    tally = Tally(minimum=args.min_coverage)
    for path in files:
        report = _test_file(path)
        tally.files.append(report)
        if args.format == "text":
            text_file(report, out)  # as each file is done: a long run shows progress
    tally.seconds = time.perf_counter() - started
    REPORTS[args.format](tally, out)
    if args.junit:
        write_junit(args.junit, tally)
    if tally.below_minimum:
        notice(tally.coverage_message, level="error", prefix=False)
    return ExitCode.OK if tally.passed else ExitCode.FAILED


def _test_file(path: Path) -> FileReport:
    """Run one test file's cases; the problems of a file that cannot be loaded."""
    from runner.cli.test_reports import CaseReport, FileReport
    from runner.flowtest.cases import coverage, load_test_file, run_case
    from runner.lang.source import load_file

    report = FileReport(str(path), datetime.now())
    started = time.perf_counter()
    try:
        test = load_test_file(path)
    except FlowError as exc:
        report.problems = exc.problems
        return report
    document = load_file(path)  # loaded above without a problem: only to locate cases
    report.flow = test.compiled.flow.name
    exercised: set[tuple[str, str]] = set()
    for case in test.cases:
        result = run_case(test, case)
        where = document.locate(("cases", case.index, "name"))
        report.cases.append(CaseReport(result, where.line, where.col))
        exercised |= result.routes
    report.routes, report.missing = coverage(test.compiled, exercised)
    report.seconds = time.perf_counter() - started
    return report


def cmd_record(args: argparse.Namespace, out: TextIO) -> int:
    from runner.cli.runs import read_input
    from runner.flowtest.record import append_case, case_yaml, record_case
    from runner.lang.load import load_flow
    from runner.runtime.engine import Engine
    from runner.runtime.local_models import LocalModels
    from runner.runtime.models import LiteLLMClient
    from runner.store import open_store

    compiled = load_flow(args.flow)  # a FlowError is reported by main()
    store = open_store(args.db or "sqlite://")
    case = record_case(
        compiled,
        read_input(args.input),
        args.name,
        LiteLLMClient(LocalModels()),
        lambda **kwargs: Engine(store, **kwargs),
    )
    if args.append:
        flow = Path(args.flow)
        target = flow.with_name(flow.stem + ".test" + flow.suffix)
        from runner.runtime.redact import read_names

        append_case(target, case, read_names(compiled, "env") | read_names(compiled, "secret"))
        print(f"added case {args.name!r} to {target}", file=out)
    else:
        out.write(case_yaml(case))
    return ExitCode.OK
