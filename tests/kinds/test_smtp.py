"""The smtp tool end to end: `runner` as real processes against a real SMTP server on
127.0.0.1 (aiosmtpd), which records every message it accepts.

- Confirmation emails survive SIGKILL: each ticket's `runner run` is killed at a random
  point (seeded) or while the server holds the conversation, then resumed until it stops
  running; a run left "in doubt" is resolved the way a person would (approve if the
  server has its Message-ID, else retry the send). The server ends with exactly one email
  per ticket.
- An escalated draft approved with an edit sends the edited text; a rejected one sends
  nothing.
- `notify` alerts through an smtp tool when a run dead-letters; an alert that cannot be
  sent is an `alert` event with status failed, and the run keeps its state and error.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from runner.kinds.tools.smtp import message_id
from runner.store.sql import SqlStore

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("RUNNER_SMTP_SEED", "7321"))
TICKETS = 10
PARALLEL = 3
PROCESS_TIMEOUT = 30.0
SENDER = "Help Desk <help@example.com>"
REPO = Path(__file__).resolve().parents[2]


# -- the SMTP server -------------------------------------------------------------------------
@dataclass(frozen=True)
class Mail:
    """One message the server accepted."""

    message_id: str
    to: str
    subject: str
    body: str
    rcpt: tuple[str, ...]


def ticket_of(address: str) -> str:
    """Recipients are `<ticket>@customers.example`."""
    return address.strip("<> ").partition("@")[0]


class MailServer:
    """aiosmtpd on its own event loop thread. A message is recorded as soon as its DATA
    arrives (it is delivered), before the reply; a one-shot hold keeps the conversation
    waiting at RCPT (nothing delivered yet) or after DATA (delivered, not acknowledged)
    until released, and a per-recipient delay slows every DATA reply."""

    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self.rcpts: list[str] = []
        self.delays: dict[str, float] = {}
        self._holds: dict[tuple[str, str], threading.Event] = {}
        self._holding: set[tuple[str, str]] = set()
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        handler = _Handler(self)
        server = asyncio.run_coroutine_threadsafe(
            self._loop.create_server(lambda: SMTP(handler, hostname="mx.test"), "127.0.0.1", 0),
            self._loop,
        )
        self._server = server.result(10)
        self.port = self._server.sockets[0].getsockname()[1]

    # the test's side
    def hold(self, phase: str, ticket: str) -> threading.Event:
        with self._cond:
            return self._holds.setdefault((phase, ticket), threading.Event())

    def wait_holding(
        self,
        phase: str,
        ticket: str,
        proc: subprocess.Popen[bytes],
        timeout: float = PROCESS_TIMEOUT,
    ) -> bool:
        """Until the server holds `ticket` at `phase` (True), or `proc` ended (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (phase, ticket) not in self._holding:
                if proc.poll() is not None:
                    return False
                if time.monotonic() > deadline:
                    raise AssertionError(f"{ticket} never reached {phase}")
                self._cond.wait(0.01)
            return True

    def for_ticket(self, ticket: str) -> list[Mail]:
        with self._cond:
            return [m for m in self.mails if any(ticket_of(r) == ticket for r in m.rcpt)]

    def to(self, address: str) -> list[Mail]:
        with self._cond:
            return [m for m in self.mails if address in m.rcpt]

    def has(self, mid: str) -> bool:
        with self._cond:
            return any(m.message_id == mid for m in self.mails)

    def stop(self) -> None:
        with self._cond:
            for event in self._holds.values():
                event.set()

        async def close() -> None:
            self._server.close()
            await self._server.wait_closed()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # the server's side
    def _record(self, mail: Mail) -> None:
        with self._cond:
            self.mails.append(mail)
            self._cond.notify_all()

    def _take_hold(self, phase: str, ticket: str) -> threading.Event | None:
        with self._cond:
            event = self._holds.pop((phase, ticket), None)
            if event is not None:
                self._holding.add((phase, ticket))
                self._cond.notify_all()
            return event


class _Handler:
    def __init__(self, server: MailServer) -> None:
        self.server = server

    async def _hold(self, phase: str, ticket: str) -> None:
        event = self.server._take_hold(phase, ticket)
        if event is not None:
            await asyncio.to_thread(event.wait, PROCESS_TIMEOUT)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        with self.server._cond:
            self.server.rcpts.append(address)
        await self._hold("rcpt", ticket_of(address))
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        body = message.get_body()
        self.server._record(
            Mail(
                message_id=str(message["Message-ID"]),
                to=str(message["To"]),
                subject=str(message["Subject"]),
                body=body.get_content().replace("\r\n", "\n") if body else "",
                rcpt=tuple(envelope.rcpt_tos),
            )
        )
        ticket = ticket_of(envelope.rcpt_tos[0])
        await self._hold("data", ticket)
        delay = self.server.delays.get(ticket, 0.0)
        if delay:
            await asyncio.sleep(delay)  # a slow server, not the test waiting
        return "250 Message accepted for delivery"


@pytest.fixture
def mail_server() -> Iterator[MailServer]:
    server = MailServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 that is bound and never listened on: connections are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


# -- flows and processes ---------------------------------------------------------------------
TOOLS = '''\
"""Mail fixture tools: compose a confirmation; a ticket starting "boom" cannot be composed;
PAUSE_MS of work first, so that kills land inside the step too."""

import time


def compose(ticket, pause_ms=0):
    time.sleep(pause_ms / 1000)
    if ticket.startswith("boom"):
        raise RuntimeError(f"no template for {ticket}")
    return {"subject": f"[{ticket}] We got your request",
            "body": f"Hello, ticket {ticket} is confirmed. We will refund you soon."}
'''

CONFIRM = """\
version: 1
name: confirm
description: Compose a confirmation and email it, exactly once.
input:
  type: object
  required: [ticket, email]
  properties: {ticket: {type: string}, email: {type: string}}
tools:
  compose:
    python: tools.mail_fixture:compose
    input: {type: object, required: [ticket]}
    output: {type: object, required: [subject, body]}
    retry: 1
  send_email:
    smtp:
      host: 127.0.0.1
      port: PORT
      tls: none
      from: "Help Desk <help@example.com>"
      to: "{{ args.to }}"
      subject: "{{ args.subject }}"
      body: "{{ args.body }}"
    input: {type: object, required: [to, subject, body]}
    output: {type: object, required: [message_id]}
    effect: true
    idempotency_key: "confirm-{{ input.ticket }}"
    timeout_seconds: 20
    retry: 1
EXTRA_TOOLSSTEPS
on_error: dead_letter
"""

SEND_STEPS = """\
steps:
  - id: compose
    tool: compose
    args: {ticket: "{{ input.ticket }}", pause_ms: 60}
  - id: send
    tool: send_email
    args: {to: "{{ input.email }}", subject: "{{ steps.compose.output.subject }}",
           body: "{{ steps.compose.output.body }}"}
"""

CHECKED_STEPS = """\
policies:
  no_refund: {deny: "(?i)refund", message: only billing staff promise refunds}
steps:
  - id: compose
    tool: compose
    args: {ticket: "{{ input.ticket }}"}
  - id: check
    policies: [no_refund]
    text: "{{ steps.compose.output.body }}"
  - id: send
    tool: send_email
    args: {to: "{{ input.email }}", subject: "{{ steps.compose.output.subject }}",
           body: "{{ steps.compose.output.body }}"}
"""

ALERT_TOOL = """\
  alert:
    smtp:
      host: 127.0.0.1
      port: ALERT_PORT
      tls: none
      from: "runner <runner@example.com>"
      to: oncall@example.com
      subject: "{{ args.subject }}"
      body: "{{ args.body }}"
    timeout_seconds: 5
    retry: {max_attempts: 2, interval_seconds: 0, jitter: false}
"""

ALERTED_STEPS = (
    """\
notify:
  tool: alert
  args:
    subject: "run {{ run.id }} of {{ run.flow }} {{ run.status }} at {{ run.step }}"
    body: "{{ run.reason }} (ticket {{ input.ticket }})"
  on: [failed]
"""
    + SEND_STEPS
)


class Desk:
    """A flow in tmp_path, a SQLite store, and `runner` started as real processes."""

    def __init__(self, root: Path, port: int, steps: str, alert_port: int | None = None) -> None:
        self.root = root
        (root / "tools").mkdir(exist_ok=True)
        (root / "tools" / "mail_fixture.py").write_text(TOOLS)
        extra = "" if alert_port is None else ALERT_TOOL.replace("ALERT_PORT", str(alert_port))
        text = CONFIRM.replace("EXTRA_TOOLS", extra).replace("STEPS\n", steps)
        self.flow = root / "flow.yaml"
        self.flow.write_text(text.replace("PORT", str(port)))
        self.url = f"sqlite:///{root / 'runs.db'}"
        self.env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.procs: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runner", *args, "--db", self.url],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        with self._lock:
            self.procs.append(proc)
        return proc

    def runner(self, *args: str) -> tuple[int, str, str]:
        proc = self.spawn(*args)
        out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
        return proc.returncode, out.decode(), err.decode()

    def input_file(self, ticket: str) -> str:
        path = self.root / f"{ticket}.json"
        path.write_text(json.dumps({"ticket": ticket, "email": f"{ticket}@customers.example"}))
        return str(path)

    def store(self) -> SqlStore:
        return SqlStore(self.url)

    def run_of(self, ticket: str) -> str | None:
        found = [
            r.id for r in self.store().list_runs(limit=1000) if r.input.get("ticket") == ticket
        ]
        assert len(found) <= 1, f"{ticket} has several runs: {found}"
        return found[0] if found else None

    def probe(self, ticket: str) -> tuple[bool, int]:
        """(the ticket's run exists, how often it was resumed), read with plain sqlite3."""
        path = self.url.removeprefix("sqlite:///")
        if not Path(path).exists():
            return False, 0
        with contextlib.closing(
            sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        ) as db:
            try:
                row = db.execute(
                    "SELECT id FROM runs WHERE json_extract(input, '$.ticket') = ?", (ticket,)
                ).fetchone()
            except sqlite3.OperationalError:  # no tables yet
                return False, 0
            if row is None:
                return False, 0
            resumed = db.execute(
                "SELECT count(*) FROM events WHERE run_id = ? AND kind = 'run_resumed'", (row[0],)
            ).fetchone()[0]
        return True, int(resumed)

    def close(self) -> None:
        with self._lock:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.kill()
                proc.communicate(timeout=PROCESS_TIMEOUT)


@pytest.fixture
def desks() -> Iterator[list[Desk]]:
    made: list[Desk] = []
    try:
        yield made
    finally:
        for desk in made:
            desk.close()


def kill_at(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    """SIGKILL `proc` `seconds` after now unless it ended first; True if it was killed."""
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=PROCESS_TIMEOUT)
        return True


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen[bytes]) -> bool:
    """Poll `condition` until it holds (True) or `proc` ended first (False)."""
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never held")
        try:
            proc.wait(timeout=0.005)
            return False
        except subprocess.TimeoutExpired:
            pass
    return True


def key_of(ticket: str) -> str:
    return f"confirm-{ticket}"


# -- exactly once, through kills -------------------------------------------------------------
@dataclass
class Story:
    """What happened to one ticket."""

    ticket: str
    mode: str
    kills: list[str] = field(default_factory=list)  # run state seen right after each kill
    decision: str | None = None
    runs: int = 0  # `runner run` processes started
    resumes: int = 0


def state(desk: Desk, ticket: str) -> str:
    run = desk.run_of(ticket)
    if run is None:
        return "no run"
    effect = desk.store().effect(key_of(ticket))
    record = desk.store().run(run)
    return f"{record.status} at {record.position}, ledger {effect.status if effect else '-'}"


def live_through_kills(desk: Desk, server: MailServer, story: Story, rng: random.Random) -> None:
    ticket = story.ticket
    source = desk.input_file(ticket)
    # 1. `runner run`, killed: held at RCPT, held after DATA, or at a random moment.
    if story.mode in ("rcpt", "data"):
        held = server.hold(story.mode, ticket)
        proc = desk.spawn("run", str(desk.flow), "--input", source)
        story.runs += 1
        try:
            assert server.wait_holding(story.mode, ticket, proc), proc.communicate()
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=PROCESS_TIMEOUT)
        finally:
            held.set()
        story.kills.append(state(desk, ticket))
    else:
        # Kill at a random moment: counted from the start of the process, or (more
        # often, as starting takes most of the time) from when its run first exists.
        server.delays[ticket] = rng.uniform(0.0, 0.3)
        proc = desk.spawn("run", str(desk.flow), "--input", source)
        story.runs += 1
        if rng.random() < 0.25:
            killed = kill_at(proc, rng.uniform(0.0, 1.5))
        else:
            killed = wait_until(lambda: desk.probe(ticket)[0], proc) and kill_at(
                proc, rng.uniform(0.0, 0.5)
            )
        if killed:
            story.kills.append(state(desk, ticket))
    # 2. Until the run stops running: start it if the kill came before it existed,
    #    else resume it; the first resume may be killed too, soon after it took the run.
    for attempt in range(8):
        run = desk.run_of(ticket)
        if run is not None and desk.store().run(run).status != "running":
            break
        resumed = desk.probe(ticket)[1]
        if run is None:
            proc = desk.spawn("run", str(desk.flow), "--input", source)
            story.runs += 1
        else:
            proc = desk.spawn("resume", run)
            story.resumes += 1

        def took_it(fresh: bool = run is None, before: int = resumed) -> bool:
            exists, resumes = desk.probe(ticket)
            return exists if fresh else resumes > before

        if (
            attempt == 0
            and rng.random() < 0.5
            and wait_until(took_it, proc)
            and kill_at(proc, rng.uniform(0.0, 0.4))
        ):
            story.kills.append(state(desk, ticket))
        else:
            out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
            assert proc.returncode in (0, 4), (ticket, out, err)
    else:
        raise AssertionError(f"{ticket} still running: {state(desk, ticket)}")
    # 3. In doubt: a person looks in the mail server's log, then decides.
    run = desk.run_of(ticket)
    assert run is not None
    record = desk.store().run(run)
    if record.status == "escalated":
        assert record.failed_step == "send", record
        assert record.reason is not None
        assert record.reason.startswith(f"effect {key_of(ticket)} may have happened"), record
        if server.has(message_id(key_of(ticket), SENDER)):
            story.decision = "approve"
            # The person found it in the server's log and says what the send returned.
            found = message_id(key_of(ticket), SENDER)
            code, out, err = desk.runner(
                "review",
                "approve",
                run,
                "--as",
                "ops",
                "--note",
                "found in the server log",
                "--set",
                f"message_id={found}",
            )
        else:
            story.decision = "retry"
            code, out, err = desk.runner(
                "review",
                "retry",
                run,
                "--from",
                "send",
                "--as",
                "ops",
                "--note",
                "not in the server log",
            )
        assert (code, out, err) == (
            0,
            f"run {run} completed (0.00 s)\n",
            "approved by ops\n" if story.decision == "approve" else "",
        ), story
    assert desk.store().run(run).status == "completed", (story, state(desk, ticket))


def test_one_email_per_ticket_through_kills_and_resumes(
    tmp_path: Path, mail_server: MailServer, desks: list[Desk]
) -> None:
    desk = Desk(tmp_path, mail_server.port, SEND_STEPS)
    desks.append(desk)
    rng = random.Random(SEED)
    tickets = [f"t{n:02d}" for n in range(1, TICKETS + 1)]
    modes = ["rcpt", "rcpt", "data", "data"] + ["random"] * (TICKETS - 4)
    rng.shuffle(modes)
    stories = [Story(t, m) for t, m in zip(tickets, modes, strict=True)]
    rngs = [random.Random(rng.random()) for _ in stories]
    with ThreadPoolExecutor(PARALLEL) as pool:
        done = [
            pool.submit(live_through_kills, desk, mail_server, s, r)
            for s, r in zip(stories, rngs, strict=True)
        ]
        for future in done:
            future.result(timeout=120)

    report = "\n".join(
        f"{s.ticket} {s.mode}: kills {s.kills}, runs {s.runs}, resumes "
        f"{s.resumes}, decision {s.decision}"
        for s in stories
    )
    print(report)  # shown with -s, or on failure
    # Exactly one email per ticket, by Message-ID and by recipient.
    ids = [m.message_id for m in mail_server.mails]
    assert len(ids) == len(set(ids)) == TICKETS, report + f"\n{ids}"
    for story in stories:
        [mail] = mail_server.for_ticket(story.ticket)
        assert mail.message_id == message_id(key_of(story.ticket), SENDER), report
        assert mail.to == f"{story.ticket}@customers.example"
        assert mail.subject == f"[{story.ticket}] We got your request"
        assert mail.body == (
            f"Hello, ticket {story.ticket} is confirmed. We will refund you soon.\n"
        )
        effect = desk.store().effect(key_of(story.ticket))
        assert effect is not None
        assert effect.status == "done", (story, effect)
    # The scenario did what it meant to: held kills left the effect in doubt, and a
    # person resolved each the right way round.
    for story in stories:
        if story.mode == "rcpt":
            assert story.kills[0] == "running at send, ledger started", report
            assert story.decision == "retry", report
        if story.mode == "data":
            assert story.kills[0] == "running at send, ledger started", report
            assert story.decision == "approve", report
    assert any(
        k.startswith("running at") for s in stories if s.mode == "random" for k in s.kills
    ), report


# -- review decisions reach (or do not reach) the server -------------------------------------
def test_an_approved_edit_sends_the_edited_text(
    tmp_path: Path, mail_server: MailServer, desks: list[Desk]
) -> None:
    desk = Desk(tmp_path, mail_server.port, CHECKED_STEPS)
    desks.append(desk)
    code, out, err = desk.runner("run", str(desk.flow), "--input", desk.input_file("e01"))
    assert code == 4, (out, err)
    run = desk.run_of("e01")
    assert run is not None
    assert mail_server.for_ticket("e01") == []
    edited = "Hello, ticket e01 is confirmed. Billing will contact you about the money."
    code, out, err = desk.runner(
        "review", "approve", run, "--as", "alice", "--set", f"body={edited}"
    )
    assert (code, out, err) == (0, f"run {run} completed (0.00 s)\n", "approved by alice\n")
    [mail] = mail_server.for_ticket("e01")
    assert mail.body == edited + "\n"
    assert mail.subject == "[e01] We got your request"
    assert mail.message_id == message_id(key_of("e01"), SENDER)
    [decision] = desk.store().decisions(run)
    assert decision.content == {"subject": "[e01] We got your request", "body": edited}
    effect = desk.store().effect(key_of("e01"))
    assert effect is not None
    assert (effect.status, effect.result) == (
        "done",
        {"message_id": mail.message_id, "refused": []},
    )


def test_a_rejected_run_sends_nothing(
    tmp_path: Path, mail_server: MailServer, desks: list[Desk]
) -> None:
    desk = Desk(tmp_path, mail_server.port, CHECKED_STEPS)
    desks.append(desk)
    code, out, err = desk.runner("run", str(desk.flow), "--input", desk.input_file("r01"))
    assert code == 4, (out, err)
    run = desk.run_of("r01")
    assert run is not None
    code, out, err = desk.runner(
        "review", "reject", run, "--as", "bob", "--reason", "promises a refund"
    )
    assert (code, out, err) == (0, f"run {run} rejected by bob: promises a refund\n", "")
    code, out, err = desk.runner("resume", run)
    assert code == 1, (out, err)
    assert mail_server.rcpts == []  # not even a connection got as far as a recipient
    assert mail_server.mails == []
    assert desk.store().effect(key_of("r01")) is None
    assert desk.store().run(run).status == "rejected"


# -- alerts ------------------------------------------------------------------------------------
def test_an_alert_reaches_the_server_when_a_run_dead_letters(
    tmp_path: Path, mail_server: MailServer, desks: list[Desk]
) -> None:
    desk = Desk(tmp_path, mail_server.port, ALERTED_STEPS, alert_port=mail_server.port)
    desks.append(desk)
    code, out, err = desk.runner("run", str(desk.flow), "--input", desk.input_file("boom1"))
    assert code == 1, (out, err)
    run = desk.run_of("boom1")
    assert run is not None
    reason = (
        "step compose failed: failed after 1 attempt: #1 exception: RuntimeError: no "
        "template for boom1"
    )
    [alert] = mail_server.to("oncall@example.com")
    assert alert.subject == f"run {run} of confirm failed at compose"
    assert alert.body == f"{reason} (ticket boom1)\n"
    assert alert.message_id == message_id(f"alert:{run}:1", "runner <runner@example.com>")
    assert mail_server.for_ticket("boom1") == []
    events = [e.data for e in desk.store().events(run) if e.kind == "alert"]
    assert events == [{"tool": "alert", "status": "sent", "attempts": 1}]
    record = desk.store().run(run)
    assert (record.status, record.failed_step, record.reason) == ("failed", "compose", reason)


def test_a_failing_alert_is_an_event_and_the_run_keeps_its_error(
    tmp_path: Path, mail_server: MailServer, refused_port: int, desks: list[Desk]
) -> None:
    desk = Desk(tmp_path, mail_server.port, ALERTED_STEPS, alert_port=refused_port)
    desks.append(desk)
    code, out, err = desk.runner("run", str(desk.flow), "--input", desk.input_file("boom2"))
    run = desk.run_of("boom2")
    assert run is not None
    message = "failed after 1 attempt: #1 exception: RuntimeError: no template for boom2"
    assert (code, err) == (1, "")
    assert out == (
        f"run {run} failed (" + out.split("(", 1)[1].split(")", 1)[0] + ")\n"
        f"  in the dead-letter queue: step compose failed: {message}\n"
        f"  after fixing the cause: runner resume {run} (with --flow FILE if the fix is in "
        "the flow)\n"
    )
    [alert] = [e.data for e in desk.store().events(run) if e.kind == "alert"]
    assert (alert["tool"], alert["status"]) == ("alert", "failed"), alert
    assert re.search(r"connection|refused", alert["error"], re.IGNORECASE), alert
    assert "2 attempts" in alert["error"], alert
    record = desk.store().run(run)
    assert (record.status, record.position, record.failed_step) == (
        "failed",
        "dead_letter",
        "compose",
    )
    assert record.reason == f"step compose failed: {message}"
    assert record.error == {
        "kind": "exception",
        "message": message,
        "attempts": [
            {
                "number": 1,
                "kind": "exception",
                "message": "RuntimeError: no template for boom2",
                "wait_seconds": None,
            }
        ],
    }
    assert [c.step_id for c in desk.store().checkpoints(run)] == ["compose"]
    assert mail_server.mails == []
    # Still an ordinary dead letter: once the cause is fixed, it resumes.
    shown = json.loads(desk.runner("dlq", "list", "--format", "json")[1])
    assert [item["run"] for item in shown] == [run]


def test_the_server_records_what_it_accepts(mail_server: MailServer) -> None:
    """The fixture itself: a message sent with smtplib is recorded as sent."""
    import smtplib
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = SENDER, "x1@customers.example", "Hi"
    message["Message-ID"] = "<abc@example.com>"
    message.set_content("Body")
    with smtplib.SMTP("127.0.0.1", mail_server.port, timeout=10) as client:
        client.send_message(message)
    assert mail_server.for_ticket("x1") == [
        Mail("<abc@example.com>", "x1@customers.example", "Hi", "Body\n", ("x1@customers.example",))
    ]
    assert mail_server.has("<abc@example.com>")
    assert not mail_server.has("<other@example.com>")
