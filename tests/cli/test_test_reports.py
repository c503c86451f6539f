"""The reports of `runner test` other than its text: JUnit XML, `--format json` and
`--format github`, on a small flow of three switch steps and test files written here.

The JUnit XML is validated against the Jenkins JUnit schema that the xunit plugin uses
(tests/fixtures/junit/junit-10.xsd, MIT licence, from jenkinsci/xunit-plugin), for a
passing run, a failing one, a test file that cannot be loaded, names and differences
with characters XML forbids, and a route coverage below `--min-coverage`: in each, what
the XML says agrees with the exit code.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from runner.cli.main import main
from runner.cli.test_reports import xml_safe

XSD = Path(__file__).resolve().parents[1] / "fixtures" / "junit" / "junit-10.xsd"
SCHEMA = etree.XMLSchema(etree.parse(str(XSD)))

FLOW = """\
version: 1
name: sort
input: {type: object, required: [amount], properties: {amount: {type: number}}}
steps:
  - id: size
    switch:
      - when: "input.amount > 100"
        next: big
      - when: "input.amount >= 0"
        next: small
  - id: big
    switch:
      - when: "true"
        next: done
  - id: small
    switch:
      - when: "true"
        next: done
on_error: dead_letter
"""
BIG = """\
  - name: a big amount goes the big way
    input: {amount: 500}
    expect: {status: completed, steps: [size, big]}
"""
SMALL = """\
  - name: a small amount goes the small way
    input: {amount: 5}
    expect: {status: completed, steps: [size, small]}
"""
WRONG = """\
  - name: a small amount goes the big way
    input: {amount: 5}
    expect: {status: completed, steps: [size, big]}
"""
# Routes: 3 steps, each with its two switch routes, a default and an error route; BIG
# and SMALL together take 4 of the 10.
SHORT = "route coverage 40.0% is below --min-coverage 90%"


def write(folder: Path, *cases: str) -> Path:
    """The flow and a test file with these cases in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sort.yaml").write_text(FLOW, encoding="utf-8")
    test_file = folder / "sort.test.yaml"
    test_file.write_text("version: 1\ncases:\n" + "".join(cases), encoding="utf-8")
    return test_file


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["test", *argv], out=out)
    return code, out.getvalue()


def junit(tmp_path: Path, *argv: str) -> tuple[int, Any]:
    """Run with `--junit`; the exit code and the root of the XML, which must be valid."""
    path = tmp_path / "junit.xml"
    code, _ = run(*argv, "--junit", str(path))
    document = etree.parse(str(path))
    assert SCHEMA.validate(document), SCHEMA.error_log
    return code, document.getroot()


def counts(element: Any) -> tuple[str, str, str]:
    return element.get("tests"), element.get("failures"), element.get("errors")


# -- junit ---------------------------------------------------------------------------------
def test_the_schema_refuses_what_runner_test_used_to_write() -> None:
    """Control: the schema is strict where it matters (a suite without `errors`, a time
    with four decimals), so a valid report means something."""
    for suite in (
        '<testsuite name="f" tests="1" failures="0"><testcase name="c"/></testsuite>',
        '<testsuite name="f" tests="1" failures="0" errors="0" time="0.0001"/>',
    ):
        document = etree.fromstring(f"<testsuites>{suite}</testsuites>").getroottree()
        assert not SCHEMA.validate(document)


def test_the_junit_of_a_passing_run(tmp_path: Path) -> None:
    test_file = write(tmp_path / "flows", BIG, SMALL)
    code, root = junit(tmp_path, str(test_file))
    assert code == 0
    assert root.tag == "testsuites"
    assert counts(root) == ("2", "0", "0")
    [suite] = root
    assert counts(suite) == ("2", "0", "0")
    assert (suite.get("name"), suite.get("file"), suite.get("skipped")) == (
        str(test_file),
        str(test_file),
        "0",
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", suite.get("timestamp"))
    assert suite.get("hostname")
    assert re.fullmatch(r"\d+\.\d{3}", suite.get("time"))
    assert [(c.get("name"), c.get("classname")) for c in suite] == [
        ("a big amount goes the big way", str(test_file)),
        ("a small amount goes the small way", str(test_file)),
    ]
    assert all(re.fullmatch(r"\d+\.\d{3}", c.get("time")) for c in suite)
    assert root.findall(".//failure") == root.findall(".//error") == []


def test_the_junit_of_a_failing_run(tmp_path: Path) -> None:
    code, root = junit(tmp_path, str(write(tmp_path / "flows", BIG, WRONG)))
    assert code == 1
    assert counts(root) == counts(root[0]) == ("2", "1", "0")
    [failure] = root.iter("failure")
    assert failure.getparent().get("name") == "a small amount goes the big way"
    assert failure.get("message") == "steps (- expected, + actual):"
    assert failure.text.splitlines()[1:] == ["      size", "    - big", "    + small"]


def test_a_test_file_that_cannot_be_loaded_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, BIG)
    ghost = tmp_path / "ghost.test.yaml"
    ghost.write_text("version: 1\ncases:\n" + BIG, encoding="utf-8")
    code, root = junit(tmp_path, str(tmp_path))
    assert code == 1
    assert counts(root) == ("2", "0", "1")
    broken, passing = root
    assert (broken.get("name"), counts(broken)) == (str(ghost), ("1", "0", "1"))
    assert counts(passing) == ("1", "0", "0")
    [error] = broken.iter("error")
    problem = f"{ghost}:1:1: (top level): no flow file {tmp_path / 'ghost.yaml'}"
    assert (error.get("message"), error.text) == (problem, problem)
    assert error.getparent().get("name") == "(the test file)"


def test_characters_xml_forbids_are_written_visibly(tmp_path: Path) -> None:
    """A bell, an escape and U+FFFE in a case's name and in a difference: the file
    parses, and each shows as its Python escape."""
    odd = (
        '  - name: "bell \\a, escape \\e, not a character \\uFFFE"\n'
        "    input: {amount: 5}\n"
        '    expect: {status: completed, stopped_at: "step \\a\\x01"}\n'
    )
    code, root = junit(tmp_path, str(write(tmp_path / "flows", odd)))
    assert code == 1
    [case] = root.iter("testcase")
    assert case.get("name") == "bell \\x07, escape \\x1b, not a character \\ufffe"
    [failure] = case
    assert failure.get("message") == "stopped_at: expected step \\x07\\x01, got nothing"


def test_xml_safe() -> None:
    kept = "tab\t, newline\n, return\r, é, \u20ac, \U0001f600, \ud7ff, \ue000, \ufffd"
    assert xml_safe(kept) == kept
    assert xml_safe("\x00\x08\x0b\x0c\x1f") == "\\x00\\x08\\x0b\\x0c\\x1f"
    assert xml_safe("\ud800 \udfff \ufffe \uffff") == "\\ud800 \\udfff \\ufffe \\uffff"


@pytest.mark.parametrize(
    ("minimum", "code", "message"), [("90", 1, SHORT), ("40", 0, None)], ids=["short", "met"]
)
def test_min_coverage_is_a_case_in_the_junit(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    minimum: str,
    code: int,
    message: str | None,
) -> None:
    test_file = write(tmp_path / "flows", BIG, SMALL)
    found, root = junit(tmp_path, str(test_file), "--min-coverage", minimum)
    assert found == code
    assert capsys.readouterr().err == (f"{message}\n" if message else "")
    failed = str(code)
    assert counts(root) == ("3", failed, "0")
    cases, coverage = root
    assert counts(cases) == ("2", "0", "0")
    assert (coverage.get("name"), counts(coverage)) == ("route coverage", ("1", failed, "0"))
    [case] = coverage
    assert case.get("name") == "route coverage"
    failures = case.findall("failure")
    assert [f.get("message") for f in failures] == ([message] if message else [])
    if failures:
        assert "sort: size -error-> dead_letter" in failures[0].text.splitlines()


# -- json ----------------------------------------------------------------------------------
def test_json_reports_every_file_and_case(tmp_path: Path) -> None:
    test_file = write(tmp_path / "flows", BIG, WRONG)
    ghost = tmp_path / "flows" / "ghost.test.yaml"
    ghost.write_text("version: 1\ncases:\n" + BIG, encoding="utf-8")
    code, output = run(str(tmp_path / "flows"), "--format", "json", "--min-coverage", "90")
    assert code == 1
    report = json.loads(output)
    assert report["passed"] is False
    totals = report["totals"]
    assert {k: totals[k] for k in ("files", "broken_files", "cases", "passed", "failed")} == {
        "files": 2,
        "broken_files": 1,
        "cases": 2,
        "passed": 1,
        "failed": 1,
    }
    assert totals["coverage"] == {
        "routes": 10,
        "covered": 4,
        "percent": 40.0,
        "minimum": 90.0,
        "met": False,
    }
    broken, tested = report["files"]
    assert broken["file"] == str(ghost) and broken["cases"] == []
    assert broken["problems"] == [
        {
            "line": 1,
            "col": 1,
            "path": "(top level)",
            "message": f"no flow file {ghost.with_name('ghost.yaml')}",
        }
    ]
    assert (tested["file"], tested["flow"], tested["problems"]) == (str(test_file), "sort", [])
    passing, failing = tested["cases"]
    assert (passing["name"], passing["line"], passing["passed"]) == (
        "a big amount goes the big way",
        3,
        True,
    )
    assert (passing["differences"], failing["line"], failing["passed"]) == ([], 6, False)
    assert failing["differences"] == [
        "steps (- expected, + actual):\n      size\n    - big\n    + small"
    ]
    assert isinstance(failing["seconds"], float)
    coverage = tested["coverage"]
    assert (coverage["routes"], coverage["covered"], coverage["percent"]) == (10, 4, 40.0)
    assert coverage["not_covered"] == [
        "size -default-> big",
        "size -error-> dead_letter",
        "big -default-> small",
        "big -error-> dead_letter",
        "small -default-> done",
        "small -error-> dead_letter",
    ]


@pytest.mark.parametrize(
    ("cases", "argv", "code"),
    [
        ((BIG, SMALL), (), 0),
        ((BIG, WRONG), (), 1),
        ((BIG, SMALL), ("--min-coverage", "90"), 1),
        ((BIG, SMALL), ("--min-coverage", "40"), 0),
    ],
    ids=["pass", "fail", "coverage-short", "coverage-met"],
)
def test_json_keeps_the_exit_codes(
    tmp_path: Path, cases: tuple[str, ...], argv: tuple[str, ...], code: int
) -> None:
    found, output = run(str(write(tmp_path, *cases)), "--format", "json", *argv)
    assert found == code
    assert json.loads(output)["passed"] is (code == 0)


# -- github --------------------------------------------------------------------------------
COMMAND = re.compile(r"::error file=([^,]*),line=(\d+),col=(\d+),title=([^,:]*)::(.*)")


def unescape(text: str) -> str:
    for escaped, plain in (("%0D", "\r"), ("%0A", "\n"), ("%3A", ":"), ("%2C", ","), ("%25", "%")):
        text = text.replace(escaped, plain)
    return text


def test_github_annotates_each_failing_case_at_its_name(tmp_path: Path) -> None:
    """`%`, CR and LF are escaped everywhere, `:` and `,` in the properties too: each
    command stays on one line and reads back to what was meant."""
    odd = (
        '  - name: "100%: a, b\\r\\nc"\n'
        "    input: {amount: 5}\n"
        '    expect: {status: completed, stopped_at: "50%\\r\\nx: y, z", steps: [size, big]}\n'
    )
    test_file = write(tmp_path / "odd, dir: 100%", BIG, odd, SMALL)
    code, output = run(str(test_file), "--format", "github")
    assert code == 1
    *commands, coverage, summary = output.split("\n")[:-1]
    assert coverage == "route coverage: 4/10 (40%)"
    assert re.fullmatch(r"3 cases: 2 passed, 1 failed \(\d+\.\d s\)", summary)
    [command] = commands
    found = COMMAND.fullmatch(command)
    assert found, command
    file, line, col, title, message = found.groups()
    assert "%2C dir%3A 100%25" in file and "\r" not in command
    assert (unescape(file), line, col) == (str(test_file), "6", "11")
    assert test_file.read_text().splitlines()[5].startswith('  - name: "100%')
    assert title == "100%25%3A a%2C b%0D%0Ac"
    assert unescape(title) == "100%: a, b\r\nc"
    assert message.startswith("stopped_at: expected 50%25%0D%0Ax: y, z, got nothing%0A")
    assert unescape(message) == (
        "stopped_at: expected 50%\r\nx: y, z, got nothing\n"
        "steps (- expected, + actual):\n      size\n    - big\n    + small"
    )


def test_github_annotates_problems_and_a_coverage_shortfall(tmp_path: Path) -> None:
    write(tmp_path, BIG, SMALL)
    ghost = tmp_path / "ghost.test.yaml"
    ghost.write_text("version: 1\ncases:\n" + BIG, encoding="utf-8")
    code, output = run(str(tmp_path), "--format", "github", "--min-coverage", "90")
    assert code == 1
    lines = output.splitlines()
    assert lines[:2] == [
        f"::error file={ghost},line=1,col=1,title=runner test::(top level): no flow file "
        f"{tmp_path / 'ghost.yaml'}",
        "::error title=route coverage::" + SHORT.replace("%", "%25"),
    ]
    assert lines[2] == "route coverage: 4/10 (40%)"
    assert re.fullmatch(
        r"2 cases: 2 passed, 0 failed; 1 test file with problems \(\d+\.\d s\)", lines[3]
    )


def test_github_of_a_passing_run_is_the_summary(tmp_path: Path) -> None:
    code, output = run(str(write(tmp_path, BIG, SMALL)), "--format", "github")
    assert code == 0
    assert [line for line in output.splitlines() if line.startswith("::")] == []
    assert output.splitlines()[0] == "route coverage: 4/10 (40%)"
