"""A reviewer's edit passes the same policies that held the draft: an edit that adds a
card number or a refund promise is refused, unless the reviewer overrides it with a
reason, which is recorded and then sent exactly as approved."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from runner.cli.main import main
from runner.lang.load import load_flow
from runner.runtime.engine import Engine
from runner.store.sql import SqlStore
from runner.testing import FakeLLM

FLOW = """\
version: 1
name: replies
input: {type: object, required: [ticket], properties: {ticket: {type: string}}}
models: {default: openai/gpt-4o-mini}
tools:
  send:
    python: tools.outbox:send
    input: {type: object, required: [ticket, body]}
    effect: true
policies:
  no_refund_promise: {deny: "(?i)we('ll| will) refund", message: only billing promises refunds}
  no_card_numbers: {detect: credit_card}
steps:
  - id: draft
    llm:
      prompt: "Answer ticket {{ input.ticket }}"
      output: {type: object, required: [reply], properties: {reply: {type: string}}}
  - id: check
    policies: [no_refund_promise, no_card_numbers]
    text: "{{ steps.draft.output.reply }}"
  - id: send
    tool: send
    args: {ticket: "{{ input.ticket }}", body: "{{ steps.draft.output.reply }}"}
on_error: dead_letter
"""

OUTBOX = """\
import json
from pathlib import Path


def send(ticket, body):
    with (Path(__file__).parent / "outbox.jsonl").open("a") as out:
        out.write(json.dumps({"ticket": ticket, "body": body}) + "\\n")
    return {"sent": True}
"""

PROMISE = "We will refund you today; card 4111 1111 1111 1111 was charged twice."


@pytest.fixture
def stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, Path]:
    """A run held by the policy check on a draft that promises a refund."""
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "outbox.py").write_text(OUTBOX, encoding="utf-8")
    flow = tmp_path / "replies.yaml"
    flow.write_text(textwrap.dedent(FLOW), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    store = SqlStore(db)
    llm = FakeLLM({"draft": [{"reply": "We'll refund you, promised."}]})
    result = Engine(store, llm=llm, environ={}).start(load_flow(flow), {"ticket": "T-1"})
    store.close()
    assert (result.status, result.reason) == (
        "escalated",
        "policy no_refund_promise: only billing promises refunds",
    )
    return result.run_id, db, tmp_path / "tools" / "outbox.jsonl"


def approve(
    db: str, run: str, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, str]:
    code = main(
        ["review", "approve", run, "--as", "Ann", "--set", f"reply={PROMISE}", *extra, "--db", db]
    )
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def decisions(db: str, run: str) -> list[Any]:
    store = SqlStore(db)
    try:
        return store.decisions(run)
    finally:
        store.close()


def test_an_edit_that_breaks_a_policy_is_refused(
    stopped: tuple[str, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run, db, outbox = stopped
    code, out, err = approve(db, run, capsys)
    assert (code, out) == (1, "")
    assert err == (
        "runner: the edited output breaks the flow's policies:\n"
        "  policy no_refund_promise (deny): only billing promises refunds: "
        '"We will refund you today; card 411"\n'
        "  policy no_card_numbers (credit_card): the text contains credit card data: "
        '"und you today; card 4111 1111 1111 1111 was charged twice."\n'
        "fix the edit, or approve it anyway with --override REASON\n"
    )
    assert not outbox.exists()
    assert decisions(db, run) == []


def test_an_override_sends_exactly_the_approved_text_and_is_recorded(
    stopped: tuple[str, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run, db, outbox = stopped
    code, out, _ = approve(
        db, run, capsys, "--override", "billing approved this refund", "--format", "json"
    )
    assert (code, json.loads(out)["status"]) == (0, "completed")
    sent = [json.loads(line) for line in outbox.read_text(encoding="utf-8").splitlines()]
    assert sent == [{"ticket": "T-1", "body": PROMISE}]
    [decision] = decisions(db, run)
    assert decision.override == "billing approved this refund"
    assert decision.diff == [
        {"path": "reply", "before": "We'll refund you, promised.", "after": PROMISE}
    ]


def test_an_edit_that_removes_the_promise_needs_no_override(
    stopped: tuple[str, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run, db, outbox = stopped
    code = main(
        [
            "review",
            "approve",
            run,
            "--as",
            "Ann",
            "--set",
            "reply=Billing will contact you.",
            "--db",
            db,
        ]
    )
    assert code == 0
    assert json.loads(outbox.read_text(encoding="utf-8")) == {
        "ticket": "T-1",
        "body": "Billing will contact you.",
    }


APPROVAL_FLOW = """\
version: 1
name: notes
input: {type: object, required: [ticket], properties: {ticket: {type: string}}}
tools:
  send:
    python: tools.outbox:send
    input: {type: object, required: [ticket, body]}
    effect: true
policies:
  no_refund_promise: {deny: "(?i)we('ll| will) refund", message: only billing promises refunds}
steps:
  - id: sign_off
    approval:
      title: "Reply to {{ input.ticket }}"
      edit:
        type: object
        required: [reply]
        properties: {reply: {type: string, default: "Thanks, {{ input.ticket }} is noted."}}
  - id: check
    policies: [no_refund_promise]
    text: "{{ steps.sign_off.output.reply }}"
  - id: send
    tool: send
    args: {ticket: "{{ input.ticket }}", body: "{{ steps.sign_off.output.reply }}"}
on_error: dead_letter
"""


def test_an_override_at_an_approval_carries_to_the_check_of_that_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The person saw the policy hit and approved past it: the check downstream lets
    exactly that text through instead of stopping the run a second time."""
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "outbox.py").write_text(OUTBOX, encoding="utf-8")
    (tmp_path / "notes.yaml").write_text(APPROVAL_FLOW, encoding="utf-8")
    (tmp_path / "in.json").write_text('{"ticket": "T-2"}', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    assert main(["run", "notes.yaml", "--input", "in.json", "--db", db]) == 4
    run = capsys.readouterr().out.split()[1]
    promise = "reply=We will refund you."
    assert main(["review", "approve", run, "--as", "Ann", "--set", promise, "--db", db]) == 1
    assert "breaks the flow's policies" in capsys.readouterr().err
    code = main(
        [
            "review",
            "approve",
            run,
            "--as",
            "Ann",
            "--set",
            promise,
            "--override",
            "billing agreed",
            "--db",
            db,
            "--format",
            "json",
        ]
    )
    assert (code, json.loads(capsys.readouterr().out)["status"]) == (0, "completed")
    sent = json.loads((tmp_path / "tools" / "outbox.jsonl").read_text(encoding="utf-8"))
    assert sent == {"ticket": "T-2", "body": "We will refund you."}
    store = SqlStore(db)
    try:
        [check] = [c for c in store.checkpoints(run) if c.step_id == "check"]
    finally:
        store.close()
    assert (check.outcome, check.output["overridden"]) == ("ok", "billing agreed")
