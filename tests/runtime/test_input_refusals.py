"""Input no store can keep as it is is refused before step one, with a message (exit 1),
never an internal error (exit 3): text that is not UTF-8, lone surrogates, NUL
characters, NaN and Infinity, nesting deeper than 64 levels, integers longer than 4,300
digits, and values that are not JSON at all. The same rules hold for `--input`,
standard input, each line of `--inputs`, and values handed to `Engine.start`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from runner.cli.main import main
from runner.core.errors import InputError
from runner.lang.load import load_flow
from runner.runtime.engine import Engine
from runner.store.sql import SqlStore

FLOW = """\
version: 1
name: echo
tools:
  echo:
    python: echo_tools:echo
steps:
  - id: echo
    tool: echo
    args: {value: "{{ input }}"}
on_error: dead_letter
"""
TOOLS = "def echo(value):\n    return value\n"
LEAD = "runner: input cannot be stored as it is:\n"


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    (tmp_path / "echo_tools.py").write_text(TOOLS, encoding="utf-8")
    path = tmp_path / "echo.yaml"
    path.write_text(FLOW, encoding="utf-8")
    return path


def nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


REFUSED = [
    pytest.param(
        b'{"text": "a\\ud800b"}',
        LEAD + "  input.text: a lone surrogate (\\ud800) is not Unicode text\n",
        id="lone-surrogate",
    ),
    pytest.param(
        b'{"text": "caf\xe9"}',
        "runner: input is not UTF-8 text: byte 0xe9 at offset 13\n",
        id="not-utf-8",
    ),
    pytest.param(
        nested(65), LEAD + "  input: nested deeper than 64 levels\n", id="nested-65-levels"
    ),
    pytest.param(
        nested(100_000), LEAD + "  input: nested deeper than 64 levels\n", id="nested-100000"
    ),
    pytest.param(
        b'{"n": ' + b"7" * 4301 + b"}",
        LEAD + "  input: an integer longer than 4,300 digits\n",
        id="integer-4301-digits",
    ),
    pytest.param(b'{"x": NaN}', LEAD + "  input.x: NaN is not a finite JSON number\n", id="nan"),
    pytest.param(
        b'{"x": [1, -Infinity]}',
        LEAD + "  input.x[1]: -Infinity is not a finite JSON number\n",
        id="minus-infinity",
    ),
    pytest.param(
        b'{"x": 1e999}', LEAD + "  input.x: Infinity is not a finite JSON number\n", id="1e999"
    ),
    pytest.param(
        b'{"x": "a\\u0000b"}',
        LEAD + "  input.x: a NUL character (\\u0000) cannot be stored\n",
        id="nul",
    ),
    pytest.param(
        b'{"a\\u0000": {"b\\udfff": 1}}',
        LEAD
        + '  input: key "a\\u0000": a NUL character (\\u0000) cannot be stored\n'
        + '  input."a\\u0000": key "b\\udfff": a lone surrogate (\\udfff) is not Unicode text\n',
        id="keys",
    ),
    pytest.param(
        b'{"x": NaN, "y": ["\\u0000", Infinity]}',
        LEAD
        + "  input.x: NaN is not a finite JSON number\n"
        + "  input.y[0]: a NUL character (\\u0000) cannot be stored\n"
        + "  input.y[1]: Infinity is not a finite JSON number\n",
        id="every-problem",
    ),
]


@pytest.mark.parametrize(("data", "message"), REFUSED)
def test_unstorable_input_is_refused_before_step_one(
    flow: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes, message: str
) -> None:
    source = tmp_path / "input.json"
    source.write_bytes(data)
    url = f"sqlite:///{tmp_path / 'runs.db'}"

    code = main(["run", str(flow), "--input", str(source), "--db", url], out=io.StringIO())

    assert (code, capsys.readouterr().err) == (1, message)
    store = SqlStore(url)
    assert store.list_runs() == []
    store.close()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(nested(64), id="nested-64-levels"),
        pytest.param(b'{"n": ' + b"7" * 4300 + b"}", id="integer-4300-digits"),
        pytest.param(b'{"n": -' + b"7" * 4300 + b"}", id="negative-4300-digits"),
        pytest.param('{"t": "\\ud83d\\ude00 \u00e9 \u2028 \\u0001"}'.encode(), id="text"),
        pytest.param(b'{"x": 1.7976931348623157e308, "y": -0.0, "z": 5e-324}', id="floats"),
    ],
)
def test_storable_input_at_the_limits_runs_and_reads_back_equal(
    flow: Path, tmp_path: Path, data: bytes
) -> None:
    source = tmp_path / "input.json"
    source.write_bytes(data)
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    out = io.StringIO()

    code = main(["run", str(flow), "--input", str(source), "--db", url], out=out)

    assert code == 0, out.getvalue()
    store = SqlStore(url)
    [run] = store.list_runs()
    expected = json.loads(data)
    assert json.dumps(run.input) == json.dumps(expected)
    [checkpoint] = store.checkpoints(run.id)
    assert json.dumps(checkpoint.output) == json.dumps(expected)
    store.close()


def test_standard_input_that_is_not_utf_8_is_refused(
    flow: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b'{"a": "\xff"}')))
    url = f"sqlite:///{tmp_path / 'runs.db'}"

    code = main(["run", str(flow), "--input", "-", "--db", url], out=io.StringIO())

    assert (code, capsys.readouterr().err) == (
        1,
        "runner: input is not UTF-8 text: byte 0xff at offset 7\n",
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        pytest.param({"x": float("nan")}, "input.x: NaN is not a finite JSON number", id="nan"),
        pytest.param(
            {"x": 10**5000}, "input.x: an integer longer than 4,300 digits", id="long-integer"
        ),
        pytest.param({"x": {1, 2}}, "input.x: a set is not a JSON value", id="set"),
        pytest.param({1: "a"}, "input: key 1: a key must be text", id="integer-key"),
    ],
)
def test_engine_refuses_values_no_store_can_keep(flow: Path, value: Any, problem: str) -> None:
    store = SqlStore.memory()
    with pytest.raises(InputError) as refused:
        Engine(store).start(load_flow(flow), value)
    assert str(refused.value) == f"input cannot be stored as it is:\n  {problem}"
    assert store.list_runs() == []
    store.close()


def test_batch_refuses_unstorable_lines_and_runs_the_others(flow: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_bytes(b'{"n": 1}\n{"n": NaN}\n{"t": "\xff"}\r\n{"t": "a\\ud800"}\n{"n": 4}\n')
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    out = io.StringIO()

    code = main(["run", str(flow), "--inputs", str(inputs), "--db", url], out=out)

    lines = sorted(line for line in out.getvalue().splitlines() if line.startswith("line "))
    assert code == 1
    refusals = [line.split(" ", 3)[3] for line in lines if " refused" in line]
    assert refusals == [
        "refused: input cannot be stored as it is: input.n: NaN is not a finite JSON number",
        "refused: input is not UTF-8 text: byte 0xff at offset 7",
        "refused: input cannot be stored as it is: "
        "input.t: a lone surrogate (\\ud800) is not Unicode text",
    ]
    assert [line.split(":")[0] for line in lines if " completed" in line] == ["line 1", "line 5"]
    store = SqlStore(url)
    assert sorted(json.dumps(r.input) for r in store.list_runs()) == ['{"n": 1}', '{"n": 4}']
    store.close()
