"""Crash safety with real processes: `runner run` is SIGKILLed at chosen and at random
points, then `runner resume` finishes the run. Whatever the kill point:

- the run ends `completed`, or `escalated` (in doubt) exactly when the kill left the
  effect's ledger row `started` (the outcome of the call is unknown);
- no step has two checkpoints, and the checkpoints committed before the kill are kept;
- a step whose checkpoint was committed before the kill never runs again: only the
  step that was in flight at kill time may run a second time;
- the counting HTTP server sees each idempotency key at most once, and exactly once
  for every completed run.

The flow: three python steps that log `<input id> <step id>` when they finish (after a
short real pause, so kills land inside steps), a non-idempotent HTTP effect, and a
last python step that reads the effect's result.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from runner.store.records import Checkpoint
from runner.store.sql import SqlStore

pytestmark = pytest.mark.slow

STEPS = ("s1", "s2", "s3", "mail", "s5")
PYTHON_STEPS = ("s1", "s2", "s3", "s5")
EFFECT_STEP = "mail"
PAUSE_MS = 40  # inside every python step, before it logs and returns
RANDOM_RUNS = 30
RANDOM_SEED = int(os.environ.get("RUNNER_CRASH_SEED", "20240611"))
RANDOM_HOLD = 0.06  # seconds the server holds each response in the random scenarios
PROCESS_TIMEOUT = 60.0
POLL = 0.002

FLOW = """\
version: 1
name: crash
description: Steps that log when they finish, a non-idempotent mail effect, a last step.
input:
  type: object
  required: [id]
  properties: {id: {type: string}}
tools:
  work:
    python: tools.crashwork:work
    input: {type: object, required: [log, id, step, pause_ms]}
    output: {type: object, required: [step]}
    timeout_seconds: 20
    retry: 1
  send_mail:
    http:
      method: POST
      url: "{{ env.CRASH_SERVER }}/mail"
      json: {to: "{{ args.to }}"}
    effect: true
    idempotency_key: "mail-{{ input.id }}"
    output: {type: object, required: [message_id]}
    timeout_seconds: 30
    retry: 1
steps:
  - id: s1
    tool: work
    args: {log: "{{ env.CRASH_LOG }}", id: "{{ input.id }}", step: s1, pause_ms: PAUSE}
  - id: s2
    tool: work
    args: {log: "{{ env.CRASH_LOG }}", id: "{{ input.id }}", step: s2, pause_ms: PAUSE}
  - id: s3
    tool: work
    args: {log: "{{ env.CRASH_LOG }}", id: "{{ input.id }}", step: s3, pause_ms: PAUSE}
  - id: mail
    tool: send_mail
    args: {to: "{{ input.id }}"}
  - id: s5
    tool: work
    args:
      log: "{{ env.CRASH_LOG }}"
      id: "{{ input.id }}"
      step: s5
      pause_ms: PAUSE
      mail: "{{ steps.mail.output.message_id }}"
on_error: dead_letter
""".replace("PAUSE", str(PAUSE_MS))

TOOLS = '''\
"""Crash-test tool: pause, then append `<id> <step>` to the log, in one write."""

import os
import time


def work(log, id, step, pause_ms, mail=None):
    time.sleep(pause_ms / 1000)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{id} {step}\\n".encode())
    finally:
        os.close(fd)
    return {"step": step, "mail": mail}
'''


# -- the counting server -----------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    key: str | None  # the Idempotency-Key header
    to: str | None  # the scenario's input id, from the JSON body


class CountingServer:
    """Records every request's Idempotency-Key; holds a response while a key's hold is
    set (until released), or for `default_hold` seconds."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.default_hold = 0.0
        self._holds: dict[str, threading.Event] = {}
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._httpd.handle_error = lambda request, address: None  # a killed client
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        host, port = self._httpd.server_address[:2]
        self.url = f"http://{host}:{port}"

    def hold(self, key: str) -> threading.Event:
        """Hold the response to `key` until the returned event is set."""
        with self._cond:
            return self._holds.setdefault(key, threading.Event())

    def seen(self, to: str) -> list[Request]:
        with self._cond:
            return [r for r in self.requests if r.to == to]

    def wait_for(self, to: str, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(
                lambda: any(r.to == to for r in self.requests), timeout=timeout
            )

    def _record(self, request: Request) -> threading.Event | None:
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()
            return self._holds.get(request.key or "")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    to = json.loads(body).get("to")
                except ValueError:
                    to = None
                key = self.headers.get("Idempotency-Key")
                held = server._record(Request(key, to))
                if held is not None:
                    held.wait(PROCESS_TIMEOUT)
                elif server.default_hold:
                    server._closing.wait(server.default_hold)
                payload = json.dumps({"message_id": f"msg-{key}"}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client was killed while we held the response
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._closing.set()
        with self._cond:
            for event in self._holds.values():
                event.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def server() -> Iterator[CountingServer]:
    srv = CountingServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        # Over the whole module: no key was ever sent twice, none was sent without one.
        keys = [r.key for r in srv.requests]
        assert None not in keys, f"a request came without an Idempotency-Key: {srv.requests}"
        twice = sorted({k for k in keys if keys.count(k) > 1})
        assert not twice, f"keys sent more than once: {twice}"


@pytest.fixture(scope="module")
def flow_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crashflow")
    (root / "tools").mkdir()
    (root / "tools" / "__init__.py").write_text("")
    (root / "tools" / "crashwork.py").write_text(TOOLS)
    path = root / "flow.yaml"
    path.write_text(FLOW)
    return path


# -- one scenario: a run, its processes and its files ---------------------------------------
@dataclass
class Probe:
    """What the database shows right now (read with plain sqlite3, no locks taken)."""

    run: bool = False
    checkpoints: int = 0
    effect: str | None = None


@dataclass
class AtKill:
    """The committed state right after the kill, before any resume."""

    status: str | None = None
    position: str | None = None
    checkpoints: list[Checkpoint] = field(default_factory=list)
    effect: str | None = None
    log: list[tuple[str, str]] = field(default_factory=list)


class Scenario:
    """One input, its own SQLite file and tool log; every process it starts is killed
    in `close` if it is still alive."""

    def __init__(self, root: Path, flow: Path, server: CountingServer, name: str) -> None:
        self.name = name
        self.id = f"{name}-{uuid.uuid4().hex[:8]}"
        self.key = f"mail-{self.id}"
        self.dir = root / self.id
        self.dir.mkdir(parents=True)
        self.flow = flow
        self.server = server
        self.db = self.dir / "runner.db"
        self.url = f"sqlite:///{self.db}"
        self.log = self.dir / "tools.log"
        self.input = self.dir / "input.json"
        self.input.write_text(json.dumps({"id": self.id}))
        self.env = {
            **os.environ,
            "CRASH_LOG": str(self.log),
            "CRASH_SERVER": server.url,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
        self.env.pop("RUNNER_DB", None)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.labels: dict[int, str] = {}
        self.history: list[str] = []  # what each process did, for failure reports
        self.run_id: str | None = None
        self.at_kill = AtKill()
        self.killed_run = False
        self.resumes: list[tuple[int, str, str]] = []  # (exit code, stdout, stderr)

    # processes
    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        out = open(self.dir / f"p{n}.out", "wb")  # noqa: SIM115 - closed below
        err = open(self.dir / f"p{n}.err", "wb")  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "runner", *args, "--db", self.url],
                cwd=self.dir,
                env=self.env,
                stdout=out,
                stderr=err,
            )
        finally:
            out.close()
            err.close()
        self.labels[proc.pid] = " ".join(args)
        self.procs.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> tuple[str, str]:
        n = self.procs.index(proc)
        return (
            (self.dir / f"p{n}.out").read_text(errors="replace"),
            (self.dir / f"p{n}.err").read_text(errors="replace"),
        )

    def finish(self, proc: subprocess.Popen[bytes], timeout: float = PROCESS_TIMEOUT) -> int:
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(
                f"{self.name}: `runner {self.labels[proc.pid]}` did not finish "
                f"within {timeout}s\n{self.report()}"
            ) from None
        out, err = self.output(proc)
        self.history.append(
            f"runner {self.labels[proc.pid]} -> exit {code}\n"
            f"  stdout: {out.strip()}\n  stderr: {err.strip()}"
        )
        return code

    def start_run(self) -> subprocess.Popen[bytes]:
        return self.spawn("run", str(self.flow), "--input", str(self.input))

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL and reap (a zombie still holds its pid, and so its lease)."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        code = proc.wait(PROCESS_TIMEOUT)
        self.killed_run = code == -signal.SIGKILL
        self.history.append(
            f"runner {self.labels[proc.pid]} -> "
            f"{'SIGKILL' if self.killed_run else f'exit {code} before the kill'}"
        )
        if not self.killed_run:
            assert code == 0, f"{self.name}: the run exited {code} unkilled\n{self.report()}"

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "runner", *args, "--db", self.url],
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT,
            check=False,
        )

    # what the database and the log show
    def run_ids(self) -> list[str]:
        if not self.db.exists():  # killed before the store was made: no run yet
            return []
        done = self.cli("runs", "--format", "json", "--limit", "1000")
        assert done.returncode == 0, f"runner runs failed: {done.stderr}"
        return [r["run"] for r in json.loads(done.stdout)]

    def probe(self) -> Probe:
        if not self.db.exists():
            return Probe()
        con = sqlite3.connect(self.db, timeout=10, isolation_level=None)
        try:
            runs = con.execute("SELECT count(*) FROM runs").fetchone()[0]
            cps = con.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
            row = con.execute("SELECT status FROM effects WHERE key = ?", (self.key,)).fetchone()
        except sqlite3.OperationalError:  # the schema is not there yet
            return Probe()
        finally:
            con.close()
        return Probe(runs > 0, cps, row[0] if row else None)

    def log_lines(self) -> list[tuple[str, str]]:
        if not self.log.exists():
            return []
        lines = [tuple(line.split(" ")) for line in self.log.read_text().splitlines()]
        assert all(len(line) == 2 and line[0] == self.id for line in lines), (
            f"{self.name}: unexpected log lines {lines}"
        )
        return lines  # type: ignore[return-value]

    def wait_until(
        self,
        proc: subprocess.Popen[bytes],
        what: str,
        condition: Callable[[], bool],
        timeout: float = 30.0,
    ) -> None:
        """Poll `condition` until it holds; fail if the deadline passes or `proc` ends."""
        deadline = time.monotonic() + timeout
        while not condition():
            if proc.poll() is not None:
                self.finish(proc)
                raise AssertionError(f"{self.name}: the run ended before {what}\n{self.report()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {what} within {timeout}s\n{self.report()}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(POLL)

    def snapshot(self) -> None:
        """Record the committed state right after the kill."""
        ids = self.run_ids()
        assert len(ids) <= 1, f"{self.name}: more than one run: {ids}"
        if not ids:
            self.at_kill = AtKill(log=self.log_lines())
            return
        self.run_id = ids[0]
        store = SqlStore(self.url)
        try:
            record = store.run(self.run_id)
            effect = store.effect(self.key)
            self.at_kill = AtKill(
                record.status,
                record.position,
                store.checkpoints(self.run_id),
                effect.status if effect else None,
                self.log_lines(),
            )
        finally:
            store.close()

    def complete(self) -> None:
        """After the kill: start again if no run was created, else resume until the run
        is no longer running."""
        self.snapshot()
        if self.run_id is None:
            assert not self.at_kill.log, (
                f"{self.name}: steps ran but no run was recorded\n{self.report()}"
            )
            code = self.finish(self.start_run())
            ids = self.run_ids()
            assert len(ids) == 1, f"{self.name}: after starting again: runs {ids}"
            self.run_id = ids[0]
            self.resumes.append((code, *self.output(self.procs[-1])))
            return
        for _ in range(3):
            if self.status() != "running":
                return
            proc = self.spawn("resume", self.run_id)
            code = self.finish(proc)
            self.resumes.append((code, *self.output(proc)))
        assert self.status() != "running", (
            f"{self.name}: still running after 3 resumes\n{self.report()}"
        )

    def status(self) -> str:
        assert self.run_id is not None
        store = SqlStore(self.url)
        try:
            return store.run(self.run_id).status
        finally:
            store.close()

    def report(self) -> str:
        lines = [
            f"scenario {self.name} (input id {self.id}, db {self.db})",
            f"at kill: status={self.at_kill.status} position={self.at_kill.position} "
            f"effect={self.at_kill.effect} "
            f"checkpoints={[c.step_id for c in self.at_kill.checkpoints]} "
            f"log={[s for _, s in self.at_kill.log]}",
            f"log now: {[s for _, s in self.log_lines()]}",
            f"server saw: {self.server.seen(self.id)}",
            "processes:",
            *(f"  {h}" for h in self.history),
        ]
        if self.run_id is not None:
            show = self.cli("show", self.run_id)
            lines += ["runner show:", show.stdout.rstrip(), show.stderr.rstrip()]
        return "\n".join(lines)

    # the invariants
    def check(self) -> str:
        """Assert every invariant; return the final status."""
        assert self.run_id is not None
        store = SqlStore(self.url)
        try:
            record = store.run(self.run_id)
            cps = store.checkpoints(self.run_id)
            effect = store.effect(self.key)
            runs = store.list_runs(limit=10)
        finally:
            store.close()
        problems: list[str] = []
        in_doubt = self.at_kill.effect == "started"
        expected = "escalated" if in_doubt else "completed"
        if record.status != expected:
            problems.append(
                f"status {record.status}, expected {expected} (the ledger row "
                f"was {self.at_kill.effect!r} at the kill)"
            )
        if len(runs) != 1:
            problems.append(f"{len(runs)} runs in the store, expected 1")
        steps = [c.step_id for c in cps]
        twice = sorted({s for s in steps if steps.count(s) > 1})
        if twice:
            problems.append(f"steps with two checkpoints: {twice}")
        want = list(STEPS) if expected == "completed" else list(STEPS[:4])
        if steps != want:
            problems.append(f"checkpoints {steps}, expected {want}")
        if [c.seq for c in cps] != list(range(1, len(cps) + 1)):
            problems.append(f"checkpoint seqs {[c.seq for c in cps]}")
        for c in cps:
            ok = c.outcome == "ok" or (
                expected == "escalated"
                and c.step_id == EFFECT_STEP
                and c.outcome == "in_doubt"
                and c.route == "human_review"
            )
            if not ok:
                problems.append(f"checkpoint {c.step_id}: outcome {c.outcome} -> {c.route}")
        if expected == "escalated" and "may have happened" not in (record.reason or ""):
            problems.append(f"escalated without an in-doubt reason: {record.reason!r}")
        before = [(c.seq, c.step_id, c.output) for c in self.at_kill.checkpoints]
        if [(c.seq, c.step_id, c.output) for c in cps[: len(before)]] != before:
            problems.append("the checkpoints committed before the kill changed")
        if record.lease_owner is not None:
            problems.append(f"the lease is still held by {record.lease_owner}")

        # Completed steps never run again; only the step in flight may run twice.
        log = self.log_lines()
        old = self.at_kill.log
        if log[: len(old)] != old:
            problems.append("the tool log was rewritten")
        new = [s for _, s in log[len(old) :]]
        committed = {c.step_id for c in self.at_kill.checkpoints}
        again = sorted({s for s in new if s in committed})
        if again:
            problems.append(f"committed steps ran again after the kill: {again}")
        rerun = {s for s in new if s in {t for _, t in old}}
        if rerun - {self.at_kill.position}:
            problems.append(
                f"steps {sorted(rerun)} ran again; only the step in flight "
                f"({self.at_kill.position}) may"
            )
        if any(new.count(s) > 1 for s in new):
            problems.append(f"a step ran twice after the kill: {new}")
        ran = {s for _, s in log}
        if expected == "completed" and not set(PYTHON_STEPS) <= ran:
            problems.append(f"python steps missing from the log: {set(PYTHON_STEPS) - ran}")
        if expected == "escalated" and "s5" in ran:
            problems.append("s5 ran although the effect is in doubt")

        # The effect: once per key at most, exactly once for a completed run.
        seen = self.server.seen(self.id)
        if any(r.key != self.key for r in seen):
            problems.append(f"requests with a wrong Idempotency-Key: {seen}")
        if len(seen) > 1:
            problems.append(f"the effect was sent {len(seen)} times")
        if expected == "completed" and len(seen) != 1:
            problems.append(f"completed, but the effect was sent {len(seen)} times")
        effect_status = effect.status if effect else None
        want_effect = "done" if expected == "completed" else "started"
        if effect_status != want_effect:
            problems.append(f"ledger row {effect_status!r}, expected {want_effect!r}")

        codes = {"completed": 0, "escalated": 4}
        if self.resumes and self.resumes[-1][0] != codes.get(record.status, -1):
            problems.append(
                f"the last process exited {self.resumes[-1][0]} for a run {record.status}"
            )
        if problems:
            raise AssertionError(f"{self.name}: " + "; ".join(problems) + "\n" + self.report())
        return record.status


@pytest.fixture
def scenarios(
    tmp_path: Path, flow_file: Path, server: CountingServer
) -> Iterator[Callable[[str], Scenario]]:
    made: list[Scenario] = []

    def make(name: str) -> Scenario:
        made.append(Scenario(tmp_path, flow_file, server, name))
        return made[-1]

    try:
        yield make
    finally:
        for scenario in made:
            scenario.close()


# -- kills at chosen points ------------------------------------------------------------------
def _kill_after_checkpoints(sc: Scenario, checkpoints: int) -> None:
    """Start `runner run` and kill it once `checkpoints` steps are committed (0: as soon
    as the run exists), so the kill lands inside the next step."""
    proc = sc.start_run()
    if checkpoints == 0:
        sc.wait_until(proc, "run row", lambda: sc.probe().run)
    else:
        sc.wait_until(
            proc, f"{checkpoints} checkpoints", lambda: sc.probe().checkpoints >= checkpoints
        )
    sc.kill(proc)


@pytest.mark.parametrize("checkpoints", [0, 1, 2, 3, 4])
def test_kill_after_checkpoints(scenarios: Callable[[str], Scenario], checkpoints: int) -> None:
    """Killed as soon as `checkpoints` steps are committed (inside the next step)."""
    sc = scenarios(f"cp{checkpoints}")
    _kill_after_checkpoints(sc, checkpoints)
    sc.complete()
    assert sc.killed_run, f"the run finished before the kill\n{sc.report()}"
    assert len(sc.at_kill.checkpoints) == checkpoints, sc.report()
    assert sc.check() == "completed"


@pytest.mark.parametrize("step", PYTHON_STEPS)
def test_kill_when_step_logged(scenarios: Callable[[str], Scenario], step: str) -> None:
    """Killed the moment the step's tool finished: usually before its checkpoint, so the
    step is the one in flight and may run again; nothing before it may."""
    sc = scenarios(f"log-{step}")
    proc = sc.start_run()
    sc.wait_until(proc, f"log line for {step}", lambda: (sc.id, step) in sc.log_lines())
    sc.kill(proc)
    sc.complete()
    assert sc.killed_run, f"the run finished before the kill\n{sc.report()}"
    assert sc.check() == "completed"


def test_kill_during_effect_call(
    scenarios: Callable[[str], Scenario], server: CountingServer
) -> None:
    """The server has the request and holds the response: the outcome is unknown, so the
    run goes to human review and the request is never sent again."""
    sc = scenarios("effect-call")
    release = server.hold(sc.key)
    try:
        proc = sc.start_run()
        sc.wait_until(
            proc, "the effect request at the server", lambda: server.wait_for(sc.id, POLL)
        )
        sc.kill(proc)
    finally:
        release.set()
    sc.complete()
    assert sc.at_kill.effect == "started", sc.report()
    assert sc.check() == "escalated"
    assert len(server.seen(sc.id)) == 1


def test_kill_after_ledger_started(
    scenarios: Callable[[str], Scenario], server: CountingServer
) -> None:
    """Killed as soon as the `started` row is committed (the request may or may not
    have left): in doubt as well."""
    sc = scenarios("ledger-started")
    release = server.hold(sc.key)
    try:
        proc = sc.start_run()
        sc.wait_until(proc, "a started ledger row", lambda: sc.probe().effect == "started")
        sc.kill(proc)
    finally:
        release.set()
    sc.complete()
    assert sc.check() == "escalated"
    assert len(server.seen(sc.id)) <= 1


# -- kills at random points ------------------------------------------------------------------
def test_kill_at_random_points(
    scenarios: Callable[[str], Scenario], server: CountingServer
) -> None:
    """RANDOM_RUNS runs, each killed after a random delay: mostly counted from the moment
    the run row exists (so the kill lands in the steps), some from the process start
    (so some kills land before the run exists)."""
    rng = random.Random(RANDOM_SEED)
    server.default_hold = RANDOM_HOLD
    failures: list[str] = []
    landed: dict[str, int] = {}
    try:
        # Two unkilled runs (the first warms the caches); the faster one sets the scale.
        flow_seconds = min(_baseline(scenarios(f"baseline{i}")) for i in range(2))
        for n in range(RANDOM_RUNS):
            sc = scenarios(f"random{n}")
            early = rng.random() < 0.2
            delay = rng.uniform(0.0, 0.6) if early else rng.uniform(0.0, flow_seconds)
            try:
                proc = sc.start_run()
                if not early:
                    sc.wait_until(proc, "run row", lambda sc=sc: sc.probe().run)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(delay)  # returns early only if the run ended by itself
                sc.kill(proc)
                sc.complete()
                where = (
                    "no run yet"
                    if not sc.at_kill.status
                    else f"{sc.at_kill.status} at {sc.at_kill.position}"
                    + (" (effect started)" if sc.at_kill.effect == "started" else "")
                )
                landed[where] = landed.get(where, 0) + 1
                sc.check()
            except AssertionError as exc:
                failures.append(
                    f"--- random run {n} (delay {delay:.3f}s"
                    f"{' from process start' if early else ''}):\n{exc}"
                )
            finally:
                sc.close()
    finally:
        server.default_hold = 0.0
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(landed.items()))
    print(f"random kills (seed {RANDOM_SEED}, flow {flow_seconds:.3f}s) landed: {summary}")
    assert not failures, (
        f"{len(failures)} of {RANDOM_RUNS} random kills broke an "
        f"invariant (seed {RANDOM_SEED}; kills landed {summary})\n" + "\n".join(failures)
    )
    interrupted = sum(v for k, v in landed.items() if k.startswith("running"))
    assert interrupted >= RANDOM_RUNS // 4, f"too few kills interrupted a run: {summary}"


def _baseline(sc: Scenario) -> float:
    """Run once without a kill; return the seconds from the run row to the last
    checkpoint."""
    proc = sc.start_run()
    sc.wait_until(proc, "run row", lambda: sc.probe().run)
    began = time.monotonic()
    sc.wait_until(proc, "the last checkpoint", lambda: sc.probe().checkpoints == len(STEPS))
    seconds = time.monotonic() - began
    code = sc.finish(proc)
    assert code == 0, sc.report()
    sc.run_id = sc.run_ids()[0]
    assert sc.check() == "completed"
    return seconds


# -- two resumes at once -----------------------------------------------------------------------
_BUSY = re.compile(
    r"being run by|claimed by another process|nothing to resume|"
    r"is completed|cannot resume"
)


@pytest.mark.parametrize("checkpoints", [0, 1, 3])
def test_two_resumes_at_once(scenarios: Callable[[str], Scenario], checkpoints: int) -> None:
    """Exactly one of two simultaneous resumes drives the run; the other refuses."""
    sc = scenarios(f"twice-cp{checkpoints}")
    _kill_after_checkpoints(sc, checkpoints)
    assert sc.killed_run, f"the run finished before the kill\n{sc.report()}"
    sc.snapshot()
    assert sc.run_id is not None and sc.at_kill.status == "running", sc.report()
    pair = [sc.spawn("resume", sc.run_id), sc.spawn("resume", sc.run_id)]
    codes = [sc.finish(p) for p in pair]
    outputs = [sc.output(p) for p in pair]
    winners = [i for i, code in enumerate(codes) if code == 0]
    assert len(winners) == 1, f"exit codes {codes}, expected one 0\n{sc.report()}"
    loser = 1 - winners[0]
    assert codes[loser] != 0 and _BUSY.search(outputs[loser][1]), (
        f"the other resume: exit {codes[loser]}, stderr {outputs[loser][1]!r}\n{sc.report()}"
    )
    sc.resumes.append((codes[winners[0]], *outputs[winners[0]]))
    store = SqlStore(sc.url)
    try:
        resumed = [e for e in store.events(sc.run_id) if e.kind == "run_resumed"]
    finally:
        store.close()
    assert len(resumed) == 1, f"{len(resumed)} run_resumed events\n{sc.report()}"
    assert sc.check() == "completed"
