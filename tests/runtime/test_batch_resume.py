"""`runner run --inputs` can be run again: each line's run has an identity of its own
(the flow, the inputs file, the line's number and its text), so a second run of the same
batch reports the runs that finished, resumes those left running, and starts only the
lines that never started. Effects keep their default idempotency key (`<run id>:<step
id>`) across the two, so nothing is sent twice. Against a real HTTP server on 127.0.0.1.

tests/runtime/test_batch_crash.py kills a real batch process and runs it again.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from scripted_server import Reply, ScriptedServer

from runner.cli.main import main
from runner.lang.load import load_flow
from runner.runtime.batch import batch_run_id
from runner.runtime.versions import flow_version
from runner.store.sql import SqlStore

FLOW = """\
version: 1
name: orders
input: {type: object, required: [n]}
tools:
  place:
    http: {method: POST, url: "{{ env.BASE }}/orders", json: {n: "{{ args.n }}"}}
    effect: true
    retry: 1
steps:
  - id: place
    tool: place
    args: {n: "{{ input.n }}"}
on_error: dead_letter
"""
LINES = b'{"n": 1}\n{"n": 2}\n{"n": 3}\n'
LINE = re.compile(r"^line (\d+): (\S+) (\w+)(.*)$")


def order(request: object) -> dict[str, object]:
    return {"order": request.json()["n"]}  # type: ignore[attr-defined]


@pytest.fixture
def batch(
    tmp_path: Path, http_server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path, str]:
    monkeypatch.setenv("BASE", http_server.url)
    http_server.script("/orders", *[Reply(201, order)] * 20)
    flow = tmp_path / "orders.yaml"
    flow.write_text(FLOW, encoding="utf-8")
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_bytes(LINES)
    return flow, inputs, f"sqlite:///{tmp_path / 'runs.db'}"


def run_batch(flow: Path, inputs: Path, url: str) -> tuple[int, list[tuple[str, ...]], str]:
    """Exit code, (line, run, status, note) per line, and the summary line."""
    out = io.StringIO()
    code = main(["run", str(flow), "--inputs", str(inputs), "--db", url], out=out)
    *lines, summary = out.getvalue().splitlines()
    parsed = []
    for line in lines:
        match = LINE.match(line)
        assert match, out.getvalue()
        parsed.append(match.groups())
    return code, sorted(parsed), re.sub(r" \(\d+\.\d s\)$", "", summary)


def test_running_a_batch_again_reports_finished_runs_and_sends_nothing_again(
    batch: tuple[Path, Path, str], http_server: ScriptedServer
) -> None:
    flow, inputs, url = batch

    first = run_batch(flow, inputs, url)
    second = run_batch(flow, inputs, url)

    assert first[0] == second[0] == 0
    ids = [run for _, run, _, _ in first[1]]
    assert [(n, s, note) for n, _, s, note in first[1]] == [
        ("1", "completed", ""),
        ("2", "completed", ""),
        ("3", "completed", ""),
    ]
    assert first[2] == "3 runs: 3 completed; 0 already finished, 0 resumed, 3 started"
    assert second[1] == [(n, run, "completed", " (already finished)") for n, run, _, _ in first[1]]
    assert second[2] == "3 runs: 3 completed; 3 already finished, 0 resumed, 0 started"
    requests = http_server.requests_to("/orders")
    assert sorted(r.header("Idempotency-Key") for r in requests) == sorted(
        f"{run}:place" for run in ids
    )


def test_a_run_left_running_by_a_killed_batch_is_resumed(
    batch: tuple[Path, Path, str], http_server: ScriptedServer
) -> None:
    flow, inputs, url = batch
    compiled = load_flow(flow)
    left = batch_run_id("orders", inputs, 2, b'{"n": 2}')
    store = SqlStore(url)
    store.create_run(left, flow_version(compiled), {"n": 2}, compiled.first, dead_owner())
    store.close()

    code, lines, summary = run_batch(flow, inputs, url)

    assert code == 0
    assert [(n, s, note) for n, _, s, note in lines] == [
        ("1", "completed", ""),
        ("2", "completed", " (resumed)"),
        ("3", "completed", ""),
    ]
    assert lines[1][1] == left
    assert summary == "3 runs: 3 completed; 0 already finished, 1 resumed, 2 started"
    [request] = [r for r in http_server.requests_to("/orders") if r.json() == {"n": 2}]
    assert request.header("Idempotency-Key") == f"{left}:place"


def test_another_inputs_file_starts_runs_of_its_own(
    batch: tuple[Path, Path, str], http_server: ScriptedServer, tmp_path: Path
) -> None:
    flow, inputs, url = batch
    copy = tmp_path / "copy.jsonl"
    shutil.copy(inputs, copy)

    first = run_batch(flow, inputs, url)
    other = run_batch(flow, copy, url)

    assert other[2] == "3 runs: 3 completed; 0 already finished, 0 resumed, 3 started"
    assert {run for _, run, _, _ in first[1]}.isdisjoint(run for _, run, _, _ in other[1])
    assert len(http_server.requests_to("/orders")) == 6


def test_a_line_s_identity_is_its_flow_file_number_and_text(tmp_path: Path) -> None:
    path = tmp_path / "inputs.jsonl"
    same = batch_run_id("orders", path, 2, b'{"n": 2}')

    assert same == batch_run_id("orders", tmp_path / "." / "inputs.jsonl", 2, b'{"n": 2}')
    others = {
        batch_run_id("invoices", path, 2, b'{"n": 2}'),
        batch_run_id("orders", tmp_path / "other.jsonl", 2, b'{"n": 2}'),
        batch_run_id("orders", path, 3, b'{"n": 2}'),
        batch_run_id("orders", path, 2, b'{"n": 3}'),
    }
    assert same not in others and len(others) == 4
    assert re.fullmatch(r"inputs-2-[0-9a-f]{12}", same), same


def dead_owner() -> str:
    """A lease holder that is a process on this host that has exited."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return f"{socket.gethostname()}:{gone.pid}:deadbeef"


def test_json_output_says_how_each_line_s_run_came_about(
    batch: tuple[Path, Path, str],
) -> None:
    flow, inputs, url = batch
    run_batch(flow, inputs, url)
    out = io.StringIO()

    code = main(
        ["run", str(flow), "--inputs", str(inputs), "--db", url, "--format", "json"], out=out
    )

    assert code == 0
    items = json.loads(out.getvalue())
    assert [(i["line"], i["status"], i["origin"]) for i in items] == [
        (1, "completed", "finished"),
        (2, "completed", "finished"),
        (3, "completed", "finished"),
    ]
