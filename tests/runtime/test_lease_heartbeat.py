"""A step longer than the lease keeps its run: while it runs, a heartbeat renews the
lease, so `runner resume` from elsewhere is refused instead of running the step a
second time, or declaring an effect that is still being sent "in doubt".

The lease is shortened to LEASE seconds (RUNNER_LEASE_SECONDS) and the long step waits
for a gate file, so each test holds it well past the lease taken at the last commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runner.core.errors import StoreError
from runner.lang.load import load_flow
from runner.runtime.engine import Engine, RunResult
from runner.store.sql import SqlStore

LEASE = 1.5  # seconds: a step is held past it
FAST_LEASE = 0.6  # the same, in one process (no process start-up to wait for)
DEADLINE = 60.0
RUNNER = (sys.executable, "-m", "runner")

FLOW = """\
version: 1
name: long
input: {type: object, required: [id]}
tools:
  work:
    python: tools.gated:work
    input: {type: object, required: [log, step]}
    timeout_seconds: 120
    retry: 1
  send:
    python: tools.gated:work
    input: {type: object, required: [log, step]}
    effect: true
    idempotency_key: "send-{{ input.id }}"
    timeout_seconds: 120
    retry: 1
steps:
  - id: first
    tool: work
    args: {log: "{{ env.GATED_LOG }}", step: first}
  - id: long
    tool: work
    args: {log: "{{ env.GATED_LOG }}", step: long, gate: "{{ env.GATED_GATE }}"}
  - id: mail
    tool: send
    args: {log: "{{ env.GATED_LOG }}", step: mail, gate: "{{ env.GATED_MAIL_GATE }}"}
on_error: dead_letter
"""

TOOL = '''\
"""Logs `start <step>`, waits for its gate file (if it has one), logs `end <step>`."""

import os
import time


def note(log, line):
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)


def work(log, step, gate="", idempotency_key=None):
    note(log, f"start {step}")
    deadline = time.monotonic() + 100
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    note(log, f"end {step}")
    return {"step": step}
'''


class Desk:
    """The flow, its tool, a log, the gates and a SQLite store in one folder."""

    def __init__(self, root: Path) -> None:
        (root / "tools").mkdir()
        (root / "tools" / "__init__.py").write_text("")
        (root / "tools" / "gated.py").write_text(TOOL)
        self.flow = root / "long.yaml"
        self.flow.write_text(FLOW)
        self.root = root
        self.log = root / "tools.log"
        self.gates = {"long": root / "gate-long", "mail": root / "gate-mail"}
        self.db = root / "runs.db"
        self.url = f"sqlite:///{self.db}"
        self.env = {
            **os.environ,
            "GATED_LOG": str(self.log),
            "GATED_GATE": str(self.gates["long"]),
            "GATED_MAIL_GATE": str(self.gates["mail"]),
            "RUNNER_LEASE_SECONDS": str(LEASE),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
        self.env.pop("RUNNER_DB", None)

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def lease(self) -> tuple[str, str | None, datetime | None]:
        """The run's id, lease holder and expiry, read with plain sqlite3."""
        con = sqlite3.connect(self.db, timeout=10)
        try:
            run_id, owner, expires = con.execute(
                "SELECT id, lease_owner, lease_expires FROM runs"
            ).fetchone()
        finally:
            con.close()
        when = datetime.fromisoformat(expires).replace(tzinfo=UTC) if expires else None
        return run_id, owner, when


def wait_for(what: str, condition: Callable[[], bool], alive: Callable[[], bool]) -> None:
    """Poll `condition` until it holds; fail once the deadline passes or `alive` fails."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert alive(), f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {DEADLINE}s"
        time.sleep(0.02)


def lapsed(expiry: datetime | None) -> Callable[[], bool]:
    """Whether the lease written with `expiry` would have run out by now (plus a margin
    for clocks read in two processes)."""
    assert expiry is not None
    return lambda: datetime.now(UTC).timestamp() > expiry.timestamp() + LEASE / 3


@pytest.fixture
def desk(tmp_path: Path) -> Desk:
    return Desk(tmp_path)


# -- in one process: two stores, as two processes would hold them -------------------------
@pytest.fixture
def env(desk: Desk, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("GATED_LOG", "GATED_GATE", "GATED_MAIL_GATE"):
        monkeypatch.setenv(name, desk.env[name])
    yield


def test_a_step_longer_than_the_lease_keeps_it(desk: Desk, env: None) -> None:
    """The step waits past three leases; a second store cannot claim the run meanwhile,
    and the step runs once."""
    holder, other = SqlStore(desk.url, lease_seconds=FAST_LEASE), SqlStore(desk.url)
    done: list[RunResult | StoreError] = []

    def start() -> None:
        try:
            done.append(Engine(holder).start(load_flow(str(desk.flow)), {"id": "a"}))
        except StoreError as exc:  # the lease was lost: the commit was fenced
            done.append(exc)

    worker = threading.Thread(target=start)
    worker.start()
    try:
        wait_for("the long step", lambda: "start long" in desk.lines(), worker.is_alive)
        run_id, _, expiry = desk.lease()
        assert expiry is not None
        three_leases = expiry.timestamp() + 2 * FAST_LEASE
        wait_for("three leases", lambda: time.time() > three_leases, worker.is_alive)
        with pytest.raises(StoreError, match=f"run {run_id} is being run by "):
            other.claim(run_id, "someone-else")
    finally:
        for gate in desk.gates.values():
            gate.touch()
        worker.join(DEADLINE)
        holder.close()
        other.close()
    assert [getattr(r, "status", r) for r in done] == ["completed"]
    assert desk.lines().count("start long") == 1


# -- real processes ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("step", ["long", "mail"])
def test_resume_is_refused_while_a_long_step_runs(desk: Desk, step: str) -> None:
    """`runner run` holds `step` (a plain step, or an effect being sent) past the lease
    it took at its last commit; `runner resume` from another process is refused, the
    run stays `running` in `runner runs`, and once the step ends the run completes with
    every step run once and nothing in doubt."""
    if step == "mail":
        desk.gates["long"].touch()
    (desk.root / "in.json").write_text(json.dumps({"id": "x1"}))
    run = subprocess.Popen(
        [
            *RUNNER,
            "run",
            str(desk.flow),
            "--input",
            "in.json",
            "--db",
            desk.url,
            "--format",
            "json",
        ],
        cwd=desk.root,
        env=desk.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        alive = lambda: run.poll() is None  # noqa: E731
        wait_for(f"the {step} step", lambda: f"start {step}" in desk.lines(), alive)
        run_id, holder, expiry = desk.lease()
        wait_for("the lease taken at the last commit to lapse", lapsed(expiry), alive)
        resume = _cli(desk, "resume", run_id)
        assert (resume.returncode, resume.stdout) == (1, ""), resume.stderr
        assert resume.stderr == f"runner: run {run_id} is being run by {holder}\n"
        listed = _cli(desk, "runs")
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.splitlines()[1].split()[2:4] == ["running", step]
        for gate in desk.gates.values():
            gate.touch()
        out, err = run.communicate(timeout=DEADLINE)
    finally:
        for gate in desk.gates.values():
            gate.touch()
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, err
    assert json.loads(out)["status"] == "completed"
    assert [line for line in desk.lines() if line.startswith("start")] == [
        "start first",
        "start long",
        "start mail",
    ]


def _cli(desk: Desk, *args: str) -> subprocess.CompletedProcess[str]:
    with contextlib.suppress(subprocess.TimeoutExpired):
        return subprocess.run(
            [*RUNNER, *args, "--db", desk.url],
            cwd=desk.root,
            env=desk.env,
            capture_output=True,
            text=True,
            timeout=DEADLINE / 2,
            check=False,
        )
    raise AssertionError(f"`runner {' '.join(args)}` did not finish in {DEADLINE / 2}s")
