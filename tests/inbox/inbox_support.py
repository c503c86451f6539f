"""What the inbox's tests share: flows that stop for a person without a model, accounts,
`runner serve` as a real process on a free port of 127.0.0.1, a worker thread that
runs approved runs, and a real HTTP server that counts the payments it receives.

Flows (written into a folder of the test's own):
- refund: finance signs off a refund (an `approval` step whose `edit` schema has a
  number, a string, an enum and a boolean), then it is paid: an HTTP effect to PAYMENTS;
- replies: a python tool drafts a reply holding markup, a policy finds a refund promise
  in it and the run escalates with the finding;
- payroll: an approval of a flow that the reviewers here may not see;
- notices: an HTTP call to a server that fails (500, twice): a dead letter.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from serving import listening

from runner.lang.load import load_flow
from runner.runtime.engine import Engine
from runner.service.inbox.accounts import new_user
from runner.service.worker import Worker, WorkerOptions
from runner.store.sql import SqlStore

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "docs" / "screenshots"

MARKUP = "<script>alert(1)</script> Hello <img src=x onerror=alert(1)> we will refund you today."

REFUND = """\
version: 1
name: refund
description: Finance signs off a refund; then it is paid.
input:
  type: object
  required: [customer, amount]
  properties: {customer: {type: string}, amount: {type: number}}
tools:
  pay:
    http:
      method: POST
      url: "PAYMENTS/pay"
      json:
        customer: "{{ args.customer }}"
        amount: "{{ args.amount }}"
        message: "{{ args.message }}"
        speed: "{{ args.speed }}"
    effect: true
    input: {type: object, required: [customer, amount, message]}
    timeout_seconds: 10
steps:
  - id: finance
    approval:
      title: "Refund {{ input.amount }} EUR to {{ input.customer }}"
      show: {customer: "{{ input.customer }}"}
      edit:
        type: object
        required: [amount, message]
        properties:
          amount: {type: number, minimum: 0, maximum: 500, default: "{{ input.amount }}"}
          message:
            type: string
            minLength: 5
            maxLength: 200
            default: "Your refund of {{ input.amount }} EUR is on its way."
          speed: {enum: [standard, express], default: standard}
          notify_customer: {type: boolean, default: true}
      reviewers: [finance]
  - id: pay
    tool: pay
    args:
      customer: "{{ input.customer }}"
      amount: "{{ steps.finance.output.amount }}"
      message: "{{ steps.finance.output.message }}"
      speed: "{{ steps.finance.output.speed }}"
on_error: dead_letter
"""

REPLIES = """\
version: 1
name: replies
description: A drafted reply is checked for promises before anyone sees it.
input: {type: object, required: [ticket], properties: {ticket: {type: string}}}
tools:
  answer:
    python: tools.answers:answer
    input: {type: object, required: [ticket]}
    output: {type: object, required: [reply], properties: {reply: {type: string}}}
policies:
  no_refund_promise: {deny: "(?i)we will refund", message: only billing promises refunds}
steps:
  - id: draft
    tool: answer
    args: {ticket: "{{ input.ticket }}"}
  - id: check
    policies: [no_refund_promise]
    text: "{{ steps.draft.output.reply }}"
on_error: dead_letter
"""

ANSWERS = f"""\
def answer(ticket):
    return {{"reply": {MARKUP!r}}}
"""

PAYROLL = """\
version: 1
name: payroll
description: Salaries, signed off by people the reviewers here are not.
input: {type: object, required: [month], properties: {month: {type: string}}}
steps:
  - id: sign
    approval:
      title: "Payroll of {{ input.month }}"
      edit:
        type: object
        properties: {total: {type: number, default: 1000}}
on_error: dead_letter
"""

NOTICES = """\
version: 1
name: notices
description: A notice to a partner whose server fails, so a dead letter.
input: {type: object, required: [to], properties: {to: {type: string}}}
tools:
  post:
    http: {method: POST, url: "PAYMENTS/notice", json: {to: "{{ args.to }}"}}
    timeout_seconds: 5
    retry: {max_attempts: 2, interval_seconds: 0.01, retry_on: [http_5xx]}
steps:
  - id: send
    tool: post
    args: {to: "{{ input.to }}"}
on_error: dead_letter
"""

# name -> (role, flows, groups)
ACCOUNTS = {
    "lena": ("reviewer", ("refund", "replies", "notices"), ("finance",)),
    "mia": ("reviewer", ("refund",), ("finance",)),
    "sam": ("reviewer", ("refund",), ()),
    "omar": ("admin", (), ()),
}


def write_flows(root: Path, payments: str) -> Path:
    folder = root / "flows"
    (folder / "tools").mkdir(parents=True)
    (folder / "refund.yaml").write_text(REFUND.replace("PAYMENTS", payments), encoding="utf-8")
    (folder / "replies.yaml").write_text(REPLIES, encoding="utf-8")
    (folder / "payroll.yaml").write_text(PAYROLL, encoding="utf-8")
    (folder / "notices.yaml").write_text(NOTICES.replace("PAYMENTS", payments), encoding="utf-8")
    (folder / "tools" / "answers.py").write_text(ANSWERS, encoding="utf-8")
    return folder


@dataclass
class Served:
    """A `runner serve` process over a SQLite store, with the store opened here too."""

    folder: Path
    db: str
    url: str
    process: subprocess.Popen[bytes]
    err: Path
    store: SqlStore = field(init=False)

    def __post_init__(self) -> None:
        self.store = SqlStore(self.db)

    def start(self, flow: str, value: Any) -> str:
        """A run of a flow of the folder, run here until it stops; its id."""
        result = Engine(self.store, environ={}).start(
            load_flow(self.folder / f"{flow}.yaml"), value
        )
        return result.run_id

    def stop(self) -> None:
        self.store.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)


def serve(root: Path, payments: str, *extra: str) -> Served:
    """`runner serve` on a free port once it says where it listens, with ACCOUNTS."""
    folder = write_flows(root, payments)
    db = f"sqlite:///{root / 'runs.db'}"
    store = SqlStore(db)
    for name, (role, flows, groups) in ACCOUNTS.items():
        new_user(store, name, PASSWORD, role, flows, groups)
    store.close()
    out, err = root / "serve.out", root / "serve.err"
    command = [sys.executable, "-m", "runner", "serve", "--flows", str(folder), "--db", db]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [*command, "--port", "0", *extra], cwd=root, stdout=stdout, stderr=stderr, env=env
        )
    return Served(folder, db, listening(process, out, err), process, err)


class WorkerThread:
    """A `runner worker` on a thread of the test process, until stopped."""

    def __init__(self, db: str) -> None:
        self.store = SqlStore(db)
        engine = Engine(self.store, environ={})
        options = WorkerOptions(concurrency=2, poll_seconds=0.05, expire_seconds=60)
        self.worker = Worker(engine, options)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.worker.run, args=(self._stop,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.worker.wakeup.wake()
        self._thread.join(30)
        self.store.close()


def eventually(check: Callable[[], Any], seconds: float = 20.0) -> Any:
    """`check()` once it is true (polled, with a deadline); AssertionError after it."""
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not so after {seconds:g} s: {check}")
        time.sleep(0.05)


def need_chromium() -> None:
    """Skip (saying why) without Debian's Chromium; fail instead when
    RUNNER_REQUIRE_BROWSER is set (CI)."""
    if CHROMIUM.exists():
        return
    reason = f"no browser at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("RUNNER_REQUIRE_BROWSER"):
        pytest.fail(reason + "; RUNNER_REQUIRE_BROWSER is set, so these tests must run")
    pytest.skip(reason)
