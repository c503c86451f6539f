"""`runner test`: run flow test files offline and report cases, diffs and route coverage."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from xml.etree import ElementTree

from runner.core.errors import FlowError, UsageError
from runner.core.vocabulary import ExitCode


def add_test_command(commands: Any) -> None:
    test = commands.add_parser("test", help="run flow tests offline (*.test.yaml)")
    test.add_argument(
        "paths",
        nargs="*",
        default=["."],
        metavar="PATH",
        help="test files, flows (their .test.yaml) or directories",
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


BROKEN = "(the test file)"  # the case name of a test file that has problems


@dataclass
class _Tally:
    """What the test files came to: every case's result, and the routes covered."""

    results: list[Any] = field(default_factory=list)
    routes: int = 0
    missing: list[str] = field(default_factory=list)

    @property
    def cases(self) -> list[Any]:
        return [r for r in self.results if r.case != BROKEN]

    @property
    def broken(self) -> int:
        return len(self.results) - len(self.cases)

    @property
    def percent(self) -> float:
        return 100.0 * (self.routes - len(self.missing)) / self.routes if self.routes else 100.0


def cmd_test(args: argparse.Namespace, out: TextIO) -> int:
    files = find_test_files(args.paths)
    if not files:
        raise UsageError("no flow test files (*.test.yaml) found in " + ", ".join(args.paths))
    started = time.perf_counter()
    tally = _Tally()
    for path in files:
        _test_file(path, tally, out)
    failed = sum(1 for r in tally.cases if not r.passed)
    _summary(tally, failed, time.perf_counter() - started, out)
    if args.junit:
        write_junit(args.junit, tally.results)
    if tally.percent + 1e-9 < args.min_coverage:
        print(
            f"route coverage {tally.percent:.1f}% is below --min-coverage {args.min_coverage:g}%",
            file=sys.stderr,
        )
        return ExitCode.FAILED
    return ExitCode.FAILED if failed or tally.broken else ExitCode.OK


def _test_file(path: Path, tally: _Tally, out: TextIO) -> None:
    """Run one test file's cases, printing each, and add them to the tally."""
    from runner.flowtest.cases import CaseResult, coverage, load_test_file, run_case

    try:
        test = load_test_file(path)
    except FlowError as exc:
        for problem in exc.problems:
            print(problem, file=out)
        tally.results.append(CaseResult(str(path), BROKEN, [str(p) for p in exc.problems]))
        return
    print(str(path), file=out)
    exercised: set[tuple[str, str]] = set()
    for case in test.cases:
        result = run_case(test, case)
        tally.results.append(result)
        exercised |= result.routes
        print(f"  {'PASS' if result.passed else 'FAIL'} {case.name}", file=out)
        for difference in result.differences:
            print("       " + difference.replace("\n", "\n       "), file=out)
    routes, missing = coverage(test.compiled, exercised)
    tally.routes += routes
    tally.missing += missing
    for route in missing:
        print(f"  route not exercised: {test.compiled.flow.name}: {route}", file=out)


def _summary(tally: _Tally, failed: int, seconds: float, out: TextIO) -> None:
    covered = tally.routes - len(tally.missing)
    print(f"route coverage: {covered}/{tally.routes} ({tally.percent:.0f}%)", file=out)
    cases = len(tally.cases)
    summary = f"{cases} case{'s' * (cases != 1)}: {cases - failed} passed, {failed} failed"
    if tally.broken:
        summary += f"; {tally.broken} test file{'s' * (tally.broken != 1)} with problems"
    print(f"{summary} ({seconds:.1f} s)", file=out)


def cmd_record(args: argparse.Namespace, out: TextIO) -> int:
    from runner.cli.runs import _read_input
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
        _read_input(args.input),
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


def write_junit(path: str, results: list[Any]) -> None:
    """JUnit XML: a test suite per test file, a test case per case."""
    suites = ElementTree.Element("testsuites")
    by_file: dict[str, list[Any]] = {}
    for result in results:
        by_file.setdefault(result.file, []).append(result)
    for file, cases in by_file.items():
        suite = ElementTree.SubElement(
            suites,
            "testsuite",
            name=file,
            tests=str(len(cases)),
            failures=str(sum(not c.passed for c in cases)),
        )
        for case in cases:
            element = ElementTree.SubElement(
                suite, "testcase", classname=file, name=case.case, time=f"{case.seconds:.3f}"
            )
            if not case.passed:
                failure = ElementTree.SubElement(
                    element, "failure", message=case.differences[0].splitlines()[0]
                )
                failure.text = "\n".join(case.differences)
    ElementTree.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
