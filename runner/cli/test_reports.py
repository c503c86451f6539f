"""What `runner test` reports, per test file and in all: text for people, one JSON
document, GitHub Actions workflow commands, and JUnit XML for CI systems.

Every format says the same thing as the exit code: a failing case, a test file that
could not be loaded and route coverage below `--min-coverage` each count as a failure.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO
from xml.etree import ElementTree

from runner.cli.validate import github_escape
from runner.core.errors import Problem
from runner.core.text import plural

if TYPE_CHECKING:
    from collections.abc import Callable

    from runner.flowtest.cases import CaseResult

BROKEN = "(the test file)"  # the JUnit case of a test file that has problems
COVERAGE = "route coverage"  # the JUnit case of --min-coverage


@dataclass(frozen=True)
class CaseReport:
    """A case's result and where its `name` is written in the test file."""

    result: CaseResult
    line: int
    col: int


@dataclass
class FileReport:
    """One test file: its cases, or the problems that kept it from loading, and the
    routes of its flow that no case took."""

    path: str
    started: datetime
    seconds: float = 0.0
    flow: str | None = None
    cases: list[CaseReport] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    routes: int = 0
    missing: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(not c.result.passed for c in self.cases)

    @property
    def percent(self) -> float:
        return _percent(self.routes, len(self.missing))


@dataclass
class Tally:
    """What all the test files came to, and the route coverage they must reach."""

    minimum: float = 0.0
    files: list[FileReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def cases(self) -> list[CaseReport]:
        return [c for f in self.files for c in f.cases]

    @property
    def failed(self) -> int:
        return sum(f.failed for f in self.files)

    @property
    def broken(self) -> int:
        return sum(bool(f.problems) for f in self.files)

    @property
    def routes(self) -> int:
        return sum(f.routes for f in self.files)

    @property
    def missing(self) -> int:
        return sum(len(f.missing) for f in self.files)

    @property
    def percent(self) -> float:
        return _percent(self.routes, self.missing)

    @property
    def below_minimum(self) -> bool:
        return self.percent + 1e-9 < self.minimum

    @property
    def coverage_message(self) -> str:
        return f"route coverage {self.percent:.1f}% is below --min-coverage {self.minimum:g}%"

    @property
    def passed(self) -> bool:
        return not (self.failed or self.broken or self.below_minimum)


def _percent(routes: int, missing: int) -> float:
    return 100.0 * (routes - missing) / routes if routes else 100.0


# -- text ----------------------------------------------------------------------------------
def text_file(report: FileReport, out: TextIO) -> None:
    """A test file's problems, or its cases with their differences and the routes that
    no case took."""
    for problem in report.problems:
        print(problem, file=out)
    if report.problems:
        return
    print(report.path, file=out)
    for case in report.cases:
        result = case.result
        print(f"  {'PASS' if result.passed else 'FAIL'} {result.case}", file=out)
        for difference in result.differences:
            print("       " + difference.replace("\n", "\n       "), file=out)
    for route in report.missing:
        print(f"  route not exercised: {report.flow}: {route}", file=out)


def summary(tally: Tally, out: TextIO) -> None:
    """The route coverage line and the count of cases."""
    covered = tally.routes - tally.missing
    print(f"route coverage: {covered}/{tally.routes} ({tally.percent:.0f}%)", file=out)
    cases, failed = len(tally.cases), tally.failed
    line = f"{plural(cases, 'case')}: {cases - failed} passed, {failed} failed"
    if tally.broken:
        line += f"; {plural(tally.broken, 'test file')} with problems"
    print(f"{line} ({tally.seconds:.1f} s)", file=out)


# -- json ----------------------------------------------------------------------------------
def report_json(tally: Tally, out: TextIO) -> None:
    """One JSON document: every file and case, and the totals."""
    covered = tally.routes - tally.missing
    totals = {
        "files": len(tally.files),
        "broken_files": tally.broken,
        "cases": len(tally.cases),
        "passed": len(tally.cases) - tally.failed,
        "failed": tally.failed,
        "seconds": round(tally.seconds, 3),
        "coverage": {
            "routes": tally.routes,
            "covered": covered,
            "percent": tally.percent,
            "minimum": tally.minimum,
            "met": not tally.below_minimum,
        },
    }
    document = {"passed": tally.passed, "totals": totals, "files": _json_files(tally)}
    json.dump(document, out, indent=2, ensure_ascii=False)
    out.write("\n")


def _json_files(tally: Tally) -> list[dict[str, Any]]:
    return [
        {
            "file": f.path,
            "flow": f.flow,
            "problems": [
                {"line": p.line, "col": p.col, "path": p.path, "message": p.message}
                for p in f.problems
            ],
            "cases": [
                {
                    "name": c.result.case,
                    "line": c.line,
                    "passed": c.result.passed,
                    "differences": c.result.differences,
                    "seconds": round(c.result.seconds, 3),
                }
                for c in f.cases
            ],
            "coverage": {
                "routes": f.routes,
                "covered": f.routes - len(f.missing),
                "percent": f.percent,
                "not_covered": f.missing,
            },
        }
        for f in tally.files
    ]


# -- github --------------------------------------------------------------------------------
def report_github(tally: Tally, out: TextIO) -> None:
    """An `::error` workflow command per problem, failing case and coverage shortfall,
    then the summary as text."""
    for f in tally.files:
        for p in f.problems:
            _command(out, p.file, p.line, p.col, "runner test", f"{p.path}: {p.message}")
        for c in f.cases:
            if not c.result.passed:
                message = "\n".join(c.result.differences)
                _command(out, f.path, c.line, c.col, c.result.case, message)
    if tally.below_minimum:
        print(f"::error title={COVERAGE}::{github_escape(tally.coverage_message)}", file=out)
    summary(tally, out)


def _command(out: TextIO, file: str, line: int, col: int, title: str, message: str) -> None:
    where = f"file={github_escape(file, prop=True)},line={line},col={col}"
    print(
        f"::error {where},title={github_escape(title, prop=True)}::{github_escape(message)}",
        file=out,
    )


REPORTS: dict[str, Callable[[Tally, TextIO], None]] = {
    "text": summary,  # the files were printed as they were run
    "json": report_json,
    "github": report_github,
}


# -- junit ---------------------------------------------------------------------------------
# Characters XML 1.0 does not allow (most C0 controls, surrogates, U+FFFE and U+FFFF).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """`text` with every character XML 1.0 forbids written as its Python escape
    (a bell becomes the four characters `\\x07`)."""
    return _NOT_XML.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _add(parent: ElementTree.Element, tag: str, text: str | None = None, **attrs: str) -> Any:
    element = ElementTree.SubElement(parent, tag, {k: xml_safe(v) for k, v in attrs.items()})
    if text is not None:
        element.text = xml_safe(text)
    return element


def write_junit(path: str, tally: Tally) -> None:
    """JUnit XML (valid under the Jenkins JUnit schema): a test suite per test file, a
    test case per case, an error case for a test file with problems, and a route
    coverage suite when `--min-coverage` was given."""
    checked = tally.minimum > 0
    suites = ElementTree.Element(
        "testsuites",
        name="runner test",
        tests=str(len(tally.cases) + tally.broken + checked),
        failures=str(tally.failed + tally.below_minimum),
        errors=str(tally.broken),
        time=f"{tally.seconds:.3f}",
    )
    hostname = socket.gethostname()
    for report in tally.files:
        _junit_file(suites, report, hostname)
    if checked:
        _junit_coverage(suites, tally, hostname)
    ElementTree.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


@dataclass(frozen=True)
class _Suite:
    """What a `<testsuite>` element says of itself."""

    name: str
    started: datetime
    seconds: float
    tests: int
    failures: int
    errors: int

    def add_to(self, parent: ElementTree.Element, hostname: str) -> Any:
        return _add(
            parent,
            "testsuite",
            name=self.name,
            tests=str(self.tests),
            failures=str(self.failures),
            errors=str(self.errors),
            skipped="0",
            time=f"{self.seconds:.3f}",
            timestamp=self.started.replace(microsecond=0, tzinfo=None).isoformat(),
            hostname=hostname,
        )


def _junit_file(parent: ElementTree.Element, report: FileReport, hostname: str) -> None:
    broken = int(bool(report.problems))
    suite = _Suite(
        report.path,
        report.started,
        report.seconds,
        len(report.cases) + broken,
        report.failed,
        broken,
    ).add_to(parent, hostname)
    suite.set("file", xml_safe(report.path))
    if broken:
        case = _add(suite, "testcase", name=BROKEN, classname=report.path, time="0.000")
        problems = [str(p) for p in report.problems]
        _add(case, "error", "\n".join(problems), message=problems[0], type="test file problems")
    for each in report.cases:
        result = each.result
        case = _add(
            suite, "testcase", name=result.case, classname=report.path, time=f"{result.seconds:.3f}"
        )
        if not result.passed:
            text = "\n".join(result.differences)
            _add(case, "failure", text, message=_first_line(text), type="difference")


def _junit_coverage(parent: ElementTree.Element, tally: Tally, hostname: str) -> None:
    below = tally.below_minimum
    started = min((f.started for f in tally.files), default=datetime.now())
    suite = _Suite(COVERAGE, started, 0.0, 1, int(below), 0).add_to(parent, hostname)
    case = _add(suite, "testcase", name=COVERAGE, classname="runner test", time="0.000")
    if below:
        routes = [f"{f.flow}: {route}" for f in tally.files for route in f.missing]
        text = "\n".join([tally.coverage_message, "routes not exercised:", *routes])
        _add(case, "failure", text, message=tally.coverage_message, type="coverage")


def _first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), text)
