"""Run inputs from a fuzzer, through `runner run --input FILE`, on SQLite and PostgreSQL.

The inputs are JSON values with the parts that break stores: text with lone surrogates
and NUL characters (escaped, or raw and so not UTF-8), NaN and Infinity, integers around
Python's 4,300-digit limit, nesting around 64 levels and far past Python's recursion
limit, and now and then a byte that makes the file something other than UTF-8 or JSON.

Whatever comes in, `runner run` must not exit 3 (a bug) or hang: it runs the flow (exit
0) and the store gives back exactly what was read, as the run's input and as the
output of a step that echoes it; or it refuses the input before any run (exit 1, or 2
for a file that is not JSON at all) and stores nothing.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from runner.cli.main import main
from runner.store import open_store

FLOW = """\
version: 1
name: echo
tools:
  echo:
    python: fuzz_tools:echo
steps:
  - id: echo
    tool: echo
    args: {value: "{{ input }}"}
on_error: dead_letter
"""
TOOLS = "def echo(value):\n    return value\n"
HANG = 60.0  # seconds one run may take before it counts as hung


@dataclass(frozen=True)
class Digits:
    """An integer written out as `count` digits (json.dumps cannot write one this long)."""

    count: int


TEXT = st.text(st.characters(exclude_categories=()), max_size=12)  # surrogates, NUL too
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and Infinity included
    | TEXT
    | st.builds(Digits, st.integers(4290, 4310))
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=16,
)


def dump(value: Any, ascii_only: bool) -> str:
    """JSON text of a fuzzed value: NaN and Infinity as Python writes them, surrogates
    escaped or raw."""
    if isinstance(value, Digits):
        return "7" * value.count
    if isinstance(value, list):
        return "[" + ", ".join(dump(v, ascii_only) for v in value) + "]"
    if isinstance(value, dict):
        items = (
            f"{json.dumps(k, ensure_ascii=ascii_only)}: {dump(v, ascii_only)}"
            for k, v in value.items()
        )
        return "{" + ", ".join(items) + "}"
    return json.dumps(value, ensure_ascii=ascii_only)


@st.composite
def input_files(draw: st.DrawFn) -> bytes:
    value = draw(VALUES)
    text = dump(value, draw(st.booleans()))
    depth = draw(st.sampled_from([0, 0, 0, 63, 64, 65, 3000]))
    text = "[" * depth + text + "]" * depth
    data = text.encode("utf-8", "surrogatepass")  # a raw surrogate is not UTF-8
    if data and draw(st.integers(0, 9)) == 0:  # now and then, one byte broken
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([draw(st.sampled_from([0xFF, 0xC3, 0x00, 0x22]))]) + data[at + 1 :]
    return data


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'runs.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


def run(argv: list[str]) -> tuple[int, str, str]:
    """`runner` in-process on a thread of its own, so that a hang fails the test."""
    out, err = io.StringIO(), io.StringIO()
    result: list[int] = []

    def target() -> None:
        with contextlib.redirect_stderr(err):
            result.append(main(argv, out=out))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(HANG)
    assert not thread.is_alive(), f"runner {' '.join(argv)} hung for {HANG:g} s"
    return result[0], out.getvalue(), err.getvalue()


@settings(
    max_examples=75,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=input_files())
def test_fuzzed_input_is_run_and_read_back_equal_or_refused(
    url: str, tmp_path: Path, data: bytes
) -> None:
    flow = tmp_path / "echo.yaml"
    if not flow.exists():
        (tmp_path / "fuzz_tools.py").write_text(TOOLS, encoding="utf-8")
        flow.write_text(FLOW, encoding="utf-8")
    source = tmp_path / "input.json"
    source.write_bytes(data)
    note(f"input: {data[:300]!r}")
    store = open_store(url)
    try:
        before = len(store.list_runs(limit=100_000))
        code, out, err = run(["run", str(flow), "--input", str(source), "--db", url])
        note(f"exit {code}\n{out}{err}")
        runs = store.list_runs(limit=100_000)
        if code == 0:
            value = json.loads(data)
            expected = json.dumps(value)
            run_id = out.split()[1]
            assert json.dumps(store.run(run_id).input) == expected
            [checkpoint] = store.checkpoints(run_id)
            assert json.dumps(checkpoint.output) == expected
        else:
            assert (code, err.split(":")[0]) in {(1, "runner"), (2, "runner")}, err
            assert "internal error" not in err
            first = err.splitlines()[0]
            assert first.startswith(
                (
                    "runner: input cannot be stored as it is:",
                    "runner: input is not UTF-8 text:",
                    f"runner: input {source} is not JSON:",
                )
            ), err
            assert len(runs) == before
    finally:
        store.close()


# SQLite gives a column declared JSON NUMERIC affinity: JSON text that is one number
# would be turned into an SQLite number (1.0 read back as 1, 12345678901234567890123 as
# 1.2345678901234568e+22). The store writes JSON to SQLite as blobs, which keep it as is.
@pytest.mark.parametrize("text", ["1.0", "12345678901234567890123", "-0.0"])
def test_sqlite_keeps_a_number_that_is_the_whole_input(tmp_path: Path, text: str) -> None:
    (tmp_path / "fuzz_tools.py").write_text(TOOLS, encoding="utf-8")
    flow = tmp_path / "echo.yaml"
    flow.write_text(FLOW, encoding="utf-8")
    source = tmp_path / "input.json"
    source.write_text(text, encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'runs.db'}"

    code, out, _ = run(["run", str(flow), "--input", str(source), "--db", url])

    assert code == 0
    store = open_store(url)
    try:
        assert json.dumps(store.run(out.split()[1]).input) == json.dumps(json.loads(text))
    finally:
        store.close()
