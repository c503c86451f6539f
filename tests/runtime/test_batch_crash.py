"""A batch (`runner run --inputs`) SIGKILLed part-way, then run again with the same
command, finishes every line and sends no effect twice: the runs that finished are
reported, the runs left running are resumed (an effect caught mid-call is held in doubt,
never re-sent), and the lines that never started are started. A real `runner` process
against a real HTTP server on 127.0.0.1 that counts idempotency keys.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from scripted_server import Reply, ScriptedServer

from runner.store.sql import SqlStore

pytestmark = pytest.mark.slow

FLOW = """\
version: 1
name: shipping
input: {type: object, required: [n]}
tools:
  pack:
    python: batch_tools:pack
  ship:
    http: {method: POST, url: "{{ env.BASE }}/ship", json: {n: "{{ args.n }}"}}
    effect: true
    retry: 1
steps:
  - id: pack
    tool: pack
    args: {n: "{{ input.n }}"}
  - id: ship
    tool: ship
    args: {n: "{{ input.n }}"}
  - id: pack_again
    tool: pack
    args: {n: "{{ input.n }}"}
on_error: dead_letter
"""
TOOLS = "import time\n\n\ndef pack(n):\n    time.sleep(0.03)\n    return {'n': n}\n"
LINES = 12
TIMEOUT = 120.0
LINE = re.compile(r"^line (\d+): (\S+) (\w+)")
SUMMARY = re.compile(r"(\d+) already finished, (\d+) resumed, (\d+) started")


@pytest.mark.parametrize("kill_after", [1, 5, 9])
def test_a_killed_batch_run_again_finishes_and_sends_nothing_twice(
    tmp_path: Path, http_server: ScriptedServer, kill_after: int
) -> None:
    http_server.script("/ship", *[Reply(201, {"shipped": True}, delay=0.05)] * (3 * LINES))
    (tmp_path / "batch_tools.py").write_text(TOOLS, encoding="utf-8")
    flow = tmp_path / "shipping.yaml"
    flow.write_text(FLOW, encoding="utf-8")
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(f'{{"n": {n}}}\n' for n in range(1, LINES + 1)), encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    command = [sys.executable, "-m", "runner", "run", str(flow), "--inputs", str(inputs)]
    command += ["--concurrency", "3", "--db", url]
    env = {**os.environ, "BASE": http_server.url, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("RUNNER_DB", None)

    killed = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL)
    try:
        http_server.wait_for_requests(kill_after, path="/ship", timeout=TIMEOUT)
    finally:
        killed.send_signal(signal.SIGKILL)
        assert killed.wait(TIMEOUT) == -signal.SIGKILL
    sent_before = len(http_server.requests_to("/ship"))
    again = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )

    assert again.returncode in (0, 4), again.stdout + again.stderr
    runs = {int(m[1]): (m[2], m[3]) for m in map(LINE.match, again.stdout.splitlines()) if m}
    assert sorted(runs) == list(range(1, LINES + 1)), again.stdout
    summary = SUMMARY.search(again.stdout)
    assert summary, again.stdout
    finished, resumed, started = map(int, summary.groups())
    assert finished + resumed + started == LINES
    assert finished + resumed >= 1 and started >= (1 if kill_after == 1 else 0)
    shipped = http_server.requests_to("/ship")
    keys = collections.Counter(r.header("Idempotency-Key") for r in shipped)
    assert [key for key, count in keys.items() if count > 1] == [], "keys sent twice"
    lines_shipped = collections.Counter(r.json()["n"] for r in shipped)
    assert [n for n, count in lines_shipped.items() if count > 1] == [], "lines shipped twice"
    assert sum(keys.values()) >= sent_before
    store = SqlStore(url)
    try:
        for line, (run_id, status) in runs.items():
            record = store.run(run_id)
            assert record.status == status
            if status == "completed":
                assert keys[f"{run_id}:ship"] == 1, f"line {line}: its effect was not sent once"
            else:  # killed during the call: in doubt, held for a person, never re-sent
                assert status == "escalated", again.stdout
                assert "may have happened" in (record.reason or ""), record.reason
    finally:
        store.close()
