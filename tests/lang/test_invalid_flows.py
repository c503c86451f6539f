"""Broken flows and the exact report `runner validate` gives for each.

Every `*.yaml` in tests/flows/invalid is a broken flow; beside it, `<name>.expected` is
the exact stdout of `runner validate <name>.yaml` run from that folder. To regenerate the
expected files after a deliberate change of wording, run

    RUNNER_UPDATE_EXPECTED=1 .venv/bin/python -m pytest tests/lang/test_invalid_flows.py

and review the git diff. Hostile inputs too large or too odd to commit (alias bombs,
deep nesting, huge or binary files) are generated here and checked for a quick, located,
one-line answer.
"""

from __future__ import annotations

import io
import itertools
import os
import random
import re
import time
from pathlib import Path

import pytest

from runner.cli.main import main

INVALID = Path(__file__).resolve().parents[1] / "flows" / "invalid"
FIXTURES = sorted(INVALID.glob("*.yaml"))
UPDATE = os.environ.get("RUNNER_UPDATE_EXPECTED") == "1"
MAX_FIXTURE_BYTES = 20 * 1024
MAX_BINARY_BYTES = 2 * 1024
MAX_SECONDS = 5.0  # the goal is 2 s; the margin absorbs a noisy machine


def validate(name: str) -> tuple[int, str]:
    """Run `runner validate NAME` in-process from the current directory."""
    out = io.StringIO()
    code = main(["validate", name], out=out)
    return code, out.getvalue()


# -- the committed corpus -------------------------------------------------------------------


def test_the_corpus_is_found() -> None:
    assert len(FIXTURES) >= 60, f"expected at least 60 broken flows in {INVALID}"


@pytest.mark.parametrize("flow", FIXTURES, ids=lambda path: path.stem)
def test_invalid_flow_report(
    flow: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(INVALID)
    code, output = validate(flow.name)
    assert capsys.readouterr().err == ""
    assert code == 1, output
    expected = flow.with_suffix(".expected")
    if UPDATE:
        expected.write_bytes(output.encode("utf-8"))
        return
    assert expected.is_file(), f"no {expected.name}: run with RUNNER_UPDATE_EXPECTED=1"
    assert output == expected.read_bytes().decode("utf-8")


def test_every_expected_file_has_its_flow() -> None:
    orphans = [p.name for p in INVALID.glob("*.expected") if not p.with_suffix(".yaml").is_file()]
    assert orphans == []


@pytest.mark.parametrize("flow", FIXTURES, ids=lambda path: path.stem)
def test_fixture_is_small_and_says_what_is_wrong(flow: Path) -> None:
    raw = flow.read_bytes()
    assert len(raw) < MAX_FIXTURE_BYTES
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        assert len(raw) < MAX_BINARY_BYTES
    assert raw.startswith(b"# "), "start the file with a comment that says what is wrong"


# -- hostile inputs, generated --------------------------------------------------------------


def alias_bomb() -> bytes:
    """Nine levels of ten aliases each: 10**10 values once expanded."""
    names = "abcdefghij"
    lines = ["a: &a [" + ", ".join(["x"] * 10) + "]"]
    for previous, name in itertools.pairwise(names):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 10) + "]")
    return ("\n".join(lines) + "\n").encode()


# id -> (file content, a fragment the one problem's message must contain)
HOSTILE: dict[str, tuple[bytes, str]] = {
    "alias_bomb": (alias_bomb(), "more than 100,000 values"),
    "100000_open_brackets": (b"[" * 100_000, "nest"),
    "10000_level_block_nesting": (b"- " * 10_000 + b"x\n", "nested deeper than 64 levels"),
    "2mb_over_size_cap": (
        b"description: " + b"x" * (2 * 1024 * 1024) + b"\n",
        "limited to 1,048,576 bytes",
    ),
    "64kb_random_bytes": (random.Random(20240601).randbytes(64 * 1024), "not UTF-8"),
    "nul_byte": (b"version: 1\nname: demo\x00\n", "character 0x00"),
    "100000_documents": (b"---\na: 1\n" * 100_000, "one YAML document"),
    "520000_values_without_aliases": (b"[" + b"1," * 520_000 + b"1]\n", "more than 100,000 values"),
}
PROBLEM_LINE = r"{name}:(?P<line>\d+):(?P<col>\d+): \S[^\n]*?: \S[^\n]*"


@pytest.mark.parametrize("case", list(HOSTILE), ids=str)
def test_hostile_input_gets_one_located_problem_quickly(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    content, fragment = HOSTILE[case]
    name = f"{case}.yaml"
    (tmp_path / name).write_bytes(content)
    monkeypatch.chdir(tmp_path)

    started = time.monotonic()
    code, output = validate(name)
    elapsed = time.monotonic() - started

    err = capsys.readouterr().err
    assert "Traceback" not in output + err
    assert err == ""
    assert code == 1, output
    lines = output.splitlines()
    assert len(lines) == 2, output
    problem, summary = lines
    located = re.fullmatch(PROBLEM_LINE.format(name=re.escape(name)), problem)
    assert located, problem
    assert int(located["line"]) >= 1 and int(located["col"]) >= 1
    assert fragment in problem
    assert summary == "1 problem in 1 of 1 flow"
    assert elapsed < MAX_SECONDS, f"{case} took {elapsed:.2f} s"
