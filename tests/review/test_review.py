"""The review queue and the dead-letter queue through the command line, in-process.

A small flow in tmp_path: a python `draft` tool, a `check` policies step that escalates a
reply promising a refund, and a python `send` effect. Every `runner review ...` and
`runner dlq ...` command's output is compared whole, after replacing run ids, times and
durations with placeholders; each list and show is also compared in JSON. Then the
behaviour behind the words: what the next step receives after an edit, what is refused,
what the effect ledger and the decision rows say. Last, two real processes approve the
same run at once: one wins.
"""

from __future__ import annotations

import getpass
import hashlib
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from runner.cli.main import main
from runner.review.desk import content_hash
from runner.store.records import now
from runner.store.sql import SqlStore
from runner.store.tables import runs

FLOW = """\
version: 1
name: replies
description: Draft a reply, check it, send it.
input:
  type: object
  required: [ticket]
  properties: {ticket: {type: string}}
tools:
  draft:
    python: tools.review_fixture:draft
    input: {type: object, required: [ticket]}
    output:
      type: object
      required: [reply, tone]
      additionalProperties: false
      properties:
        reply: {type: string, minLength: 1}
        tone: {enum: [warm, formal]}
  send:
    python: tools.review_fixture:send
    input: {type: object, required: [ticket, body]}
    output: {type: object, required: [sent]}
    effect: true
    idempotency_key: "send-{{ input.ticket }}"
    timeout_seconds: 1
    retry: 1
policies:
  no_refund: {deny: "(?i)refund", message: only billing staff promise refunds}
review: {expires_after_seconds: 3600, on_expired: dead_letter}
steps:
  - id: draft
    tool: draft
    args: {ticket: "{{ input.ticket }}"}
  - id: check
    policies: [no_refund]
    text: "{{ steps.draft.output.reply }}"
    on_violation: human_review
  - id: send
    tool: send
    args: {ticket: "{{ input.ticket }}", body: "{{ steps.draft.output.reply }}"}
on_error: dead_letter
"""
DIGEST = hashlib.sha256(FLOW.encode()).hexdigest()

TOOLS = '''\
"""Review fixture tools. REVIEW_DIR holds drafts.json ({ticket: reply}; a reply of
"!fail" raises), the call log calls.jsonl, and the gate file that a "slow-" send waits
for (it counts as sent as soon as it is called; only its answer is late)."""

import json
import os
import time


def _dir():
    return os.environ["REVIEW_DIR"]


def _log(entry):
    with open(os.path.join(_dir(), "calls.jsonl"), "a") as f:
        f.write(json.dumps(entry) + "\\n")


def draft(ticket):
    _log({"tool": "draft", "ticket": ticket})
    try:
        with open(os.path.join(_dir(), "drafts.json")) as f:
            drafts = json.load(f)
    except FileNotFoundError:
        drafts = {}
    reply = drafts.get(ticket, "We will refund you today.")
    if reply == "!fail":
        raise RuntimeError("draft service down")
    return {"reply": reply, "tone": "warm"}


def send(ticket, body):
    _log({"tool": "send", "ticket": ticket, "body": body})
    if ticket.startswith("slow-"):
        gate = os.path.join(_dir(), "gate")
        deadline = time.monotonic() + 20
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
    return {"sent": True}
'''

REASON = "policy no_refund: only billing staff promise refunds"
REFUND = {"reply": "We will refund you today.", "tone": "warm"}
RUN_ID = re.compile(r"\b\d{8}-\d{6}-[0-9a-f]{8}\b")


# -- the fixture -------------------------------------------------------------------------
@dataclass
class Result:
    code: int
    out: str
    err: str


class Desk:
    """One flow, one SQLite store, one tool folder; `cli` runs `runner` in-process."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.root = root
        self.capsys = capsys
        self.flow = root / "flow.yaml"
        self.url = f"sqlite:///{root / 'runs.db'}"
        self.names: dict[str, str] = {}  # run id -> its placeholder
        self._store: SqlStore | None = None

    def cli(self, *args: str) -> Result:
        self.capsys.readouterr()
        buffer = io.StringIO()
        code = main([*args, "--db", self.url], out=buffer)
        return Result(code, buffer.getvalue(), self.capsys.readouterr().err)

    def drafts(self, **replies: str) -> None:
        (self.root / "drafts.json").write_text(json.dumps(replies))

    def run(self, ticket: str, name: str, expect: int = 4) -> str:
        """Start a run of `ticket`; its id is shown as `<name>` in normalised output."""
        (self.root / f"{ticket}.json").write_text(json.dumps({"ticket": ticket}))
        result = self.cli("run", str(self.flow), "--input", str(self.root / f"{ticket}.json"))
        assert result.code == expect, result
        found = RUN_ID.findall(result.out)
        assert found, result
        self.names[found[0]] = f"<{name}>"
        return found[0]

    def calls(self, tool: str | None = None) -> list[dict[str, Any]]:
        path = self.root / "calls.jsonl"
        if not path.exists():
            return []
        entries = [json.loads(line) for line in path.read_text().splitlines()]
        return [e for e in entries if tool is None or e["tool"] == tool]

    def store(self) -> SqlStore:
        if self._store is None:
            self._store = SqlStore(self.url)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def text(self, value: str) -> str:
        """Run ids, ages, clock offsets and durations replaced by placeholders."""
        for run_id, name in self.names.items():
            value = value.replace(run_id, name)
        value = RUN_ID.sub("<UNKNOWN RUN>", value)
        value = value.replace(DIGEST, "<DIGEST>").replace(DIGEST[:12], "<DIGEST>")
        value = re.sub(r"\+ *\d+\.\d{3}s", "+<T>", value)
        value = re.sub(r"\d+\.\d ms\)", "<MS> ms)", value)
        value = re.sub(r"\((\d+\.\d\d) s\)", "(<S> s)", value)
        value = re.sub(r"\b\d+[smhd] ago\b", "<AGE> ago", value)
        value = re.sub(r"\b\d{4}-\d\d-\d\d \d\d:\d\d UTC\b", "<DUE>", value)
        return re.sub(r"(?m) \d+[smhd]$", " <AGE>", value)

    def json(self, value: str) -> Any:
        """Parsed JSON with the same placeholders; every time must be an ISO time."""
        return self._norm(json.loads(value), None)

    def _norm(self, value: Any, key: str | None) -> Any:
        if key in ("at", "updated_at", "decided_at", "created_at", "due_at") and value is not None:
            datetime.fromisoformat(value)  # a real time, then a placeholder
            return "<TIME>"
        if key == "ms":
            assert isinstance(value, int | float)
            return "<MS>"
        if key == "owner":
            assert re.fullmatch(r"[^:]+:\d+:[0-9a-f]{8}", value), value
            return "<OWNER>"
        if isinstance(value, dict):
            return {k: self._norm(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self._norm(v, None) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value


@pytest.fixture
def desk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Desk]:
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "review_fixture.py").write_text(TOOLS)
    (tmp_path / "flow.yaml").write_text(FLOW)
    monkeypatch.setenv("REVIEW_DIR", str(tmp_path))
    # `tools` is a common package name: other tests may have imported another one.
    saved = {k: v for k, v in sys.modules.items() if k == "tools" or k.startswith("tools.")}
    for name in saved:
        del sys.modules[name]
    path = list(sys.path)
    made = Desk(tmp_path, capsys)
    try:
        yield made
    finally:
        made.close()
        (tmp_path / "gate").touch()  # a slow send still waiting: let it finish
        for name in [k for k in sys.modules if k == "tools" or k.startswith("tools.")]:
            del sys.modules[name]
        sys.modules.update(saved)
        sys.path[:] = path


def timeline(*lines: str) -> str:
    return "".join(f"  +<T>  {line}\n" for line in lines)


STARTED = "-                run started (flow replies, version <DIGEST>)"
DRAFT_OK = "draft            ok -> check  (1 attempt, <MS> ms)"
FIRED = "check            policy no_refund fired (deny): only billing staff promise refunds"
VIOLATION = "check            violation -> human_review  (1 attempt, <MS> ms)"
ESCALATED = [STARTED, DRAFT_OK, FIRED, VIOLATION]
# What alice changed when she approved the refund-1 draft.
CHANGED = {
    "path": "reply",
    "before": "We will refund you today.",
    "after": "Billing will contact you.",
}


def step_event(step: str, outcome: str, route: str) -> dict[str, Any]:
    return {
        "at": "<TIME>",
        "kind": "step",
        "step": step,
        "data": {"outcome": outcome, "route": route, "attempts": 1, "ms": "<MS>"},
    }


STARTED_JSON = {
    "at": "<TIME>",
    "kind": "run_started",
    "step": None,
    "data": {"flow": "replies", "digest": "<DIGEST>", "git_commit": None},
}
FIRED_JSON = {
    "at": "<TIME>",
    "kind": "policy",
    "step": "check",
    "data": {
        "policy": "no_refund",
        "rule": "deny",
        "message": "only billing staff promise refunds",
        "start": 8,
        "end": 14,
        "excerpt": "We will refund you today.",
    },
}
ESCALATED_JSON = [
    STARTED_JSON,
    step_event("draft", "ok", "check"),
    FIRED_JSON,
    step_event("check", "violation", "human_review"),
]


# -- the review queue: list, show, approve -------------------------------------------------
def test_list_show_and_approve_with_set(desk: Desk) -> None:
    desk.drafts(**{"calm-1": "Thanks, we are on it."})
    calm = desk.run("calm-1", "CALM", expect=0)
    assert desk.calls("send") == [
        {"tool": "send", "ticket": "calm-1", "body": "Thanks, we are on it."}
    ]
    assert desk.cli("review", "list").out == "nothing waiting\n"
    assert desk.cli("review", "list", "--format", "json").out == "[]\n"

    (desk.root / "in.json").write_text('{"ticket": "refund-1"}')
    started = desk.cli("run", str(desk.flow), "--input", str(desk.root / "in.json"))
    run = RUN_ID.findall(started.out)[0]
    desk.names[run] = "<RUN>"
    assert started.code == 4
    assert desk.text(started.out) == (
        f"run <RUN> escalated (<S> s)\n  waiting for human review: {REASON}\n"
    )

    listed = desk.cli("review", "list")
    assert listed.code == 0
    assert desk.text(listed.out) == (
        f"{'RUN':26}FLOW     STEP   REASON{'':48}SCORE  DUE     AGE\n"
        f"<RUN>  replies  check  {REASON}  -      in 59m  <AGE>\n"
    )
    assert desk.text(listed.out).count("\n") == 2  # the completed run is not listed
    assert calm not in listed.out

    proposal_hash = content_hash(REFUND)
    assert proposal_hash == "fdda591feb921162c11f199a189f9eab22b4039c72d8aa0549da6bd4a6a055c5"
    proposal = {
        "run": "<RUN>",
        "flow": "replies",
        "status": "escalated",
        "step": "check",
        "reason": REASON,
        "score": None,
        "method": None,
        "proposed_step": "draft",
        "proposed_output": REFUND,
        "content_hash": proposal_hash,
        "editable": True,
        "effect_in_doubt": None,
        "hits": [{**FIRED_JSON["data"], "excerpt": "We will refund you today."}],
        "invalid_answers": [],
        "reviewers": [],
        "due_at": "<TIME>",
        "on_approved": "send",
        "on_rejected": None,
        "on_expired": "dead_letter",
        "error": None,
        "input": {"ticket": "refund-1"},
        "updated_at": "<TIME>",
        "title": None,
        "shown": {},
    }
    listed = desk.cli("review", "list", "--format", "json")
    assert listed.code == 0
    assert desk.json(listed.out) == [proposal]

    shown = desk.cli("review", "show", run)
    assert shown.code == 0
    assert desk.text(shown.out) == (
        "run      <RUN> (replies), escalated <AGE> ago\n"
        f"stopped  at check: {REASON}\n"
        'input    {"ticket": "refund-1"}\n'
        'hits     policy no_refund (deny): only billing staff promise refunds: "We will refund '
        'you today."\n'
        "proposed output of draft (hash fdda591feb92):\n"
        "  {\n"
        '    "reply": "We will refund you today.",\n'
        '    "tone": "warm"\n'
        "  }\n"
        "who      anyone\n"
        "expires  <DUE> (in 59m) -> dead_letter\n"
        "decide   runner review approve <RUN> --hash fdda591feb92  continues at send\n"
        "         runner review reject <RUN> --reason TEXT         closes the run\n"
        "         runner review retry <RUN> --from draft           runs draft again\n"
        "edit     to change values, approve with --set PATH=VALUE (repeatable) or --edit FILE\n"
        "         an edit that still breaks a policy is refused: add --override REASON\n"
        "audit trail:\n" + timeline(*ESCALATED)
    )
    shown = desk.cli("review", "show", run, "--format", "json")
    assert shown.code == 0
    assert desk.json(shown.out) == {**proposal, "decisions": [], "events": ESCALATED_JSON}

    before = now()
    approved = desk.cli(
        "review",
        "approve",
        run,
        "--as",
        "alice",
        "--hash",
        proposal_hash[:12],
        "--set",
        "reply=Billing will contact you.",
        "--note",
        "no promise",
    )
    after = now()
    assert (approved.code, desk.text(approved.out), approved.err) == (
        0,
        "run <RUN> completed (<S> s)\n",
        "approved by alice\n",
    )
    assert approved.out.endswith("(0.00 s)\n")
    edited = {"reply": "Billing will contact you.", "tone": "warm"}
    # The next step received the edited reply, and only that one was sent.
    assert desk.calls("send")[1:] == [
        {"tool": "send", "ticket": "refund-1", "body": "Billing will contact you."}
    ]
    [decision] = desk.store().decisions(run)
    assert (decision.decision, decision.decided_by, decision.step_id, decision.note) == (
        "approved",
        "alice",
        "check",
        "no promise",
    )
    assert decision.content_hash == content_hash(edited)
    assert decision.content == edited
    assert before <= decision.decided_at <= after
    record = desk.store().run(run)
    assert (record.status, record.position) == ("completed", "done")

    assert desk.cli("review", "list").out == "nothing waiting\n"
    shown = desk.cli("review", "show", run)
    assert desk.text(shown.out) == (
        "run      <RUN> (replies), completed <AGE> ago\n"
        "status   completed: nothing waits for a decision\n"
        'input    {"ticket": "refund-1"}\n'
        "audit trail:\n"
        + timeline(
            *ESCALATED,
            "check            approved by alice (no promise) -> send\n"
            + " " * 30
            + 'reply: "We will refund you today." -> "Billing will contact you."',
            "send             effect send-refund-1: done",
            "send             ok -> done  (1 attempt, <MS> ms)",
        )
    )
    shown = desk.json(desk.cli("review", "show", run, "--format", "json").out)
    assert shown["decisions"] == [
        {
            "run_id": "<RUN>",
            "step_id": "check",
            "decision": "approved",
            "decided_by": "alice",
            "content_hash": content_hash(edited),
            "note": "no promise",
            "content": edited,
            "decided_at": "<TIME>",
            "diff": [CHANGED],
            "override": None,
        }
    ]
    assert shown["events"][4:] == [
        {
            "at": "<TIME>",
            "kind": "decision",
            "step": "check",
            "data": {
                "decision": "approved",
                "by": "alice",
                "content_hash": content_hash(edited),
                "note": "no promise",
                "status": "running",
                "position": "send",
                "diff": [CHANGED],
            },
        },
        {
            "at": "<TIME>",
            "kind": "effect",
            "step": "send",
            "data": {"key": "send-refund-1", "status": "done"},
        },
        step_event("send", "ok", "done"),
    ]

    again = desk.cli("review", "approve", run, "--as", "bob")
    assert (again.code, again.out) == (1, "")
    assert desk.text(again.err) == "runner: run <RUN> is completed, not waiting for review\n"
    assert len(desk.store().decisions(run)) == 1


def test_approve_with_an_edit_file(desk: Desk) -> None:
    run = desk.run("refund-2", "RUN")
    edit = {"reply": "A colleague from billing will write to you.", "tone": "formal"}
    path = desk.root / "edit.json"
    path.write_text(json.dumps(edit, indent=2))
    approved = desk.cli("review", "approve", run, "--as", "alice", "--edit", str(path))
    assert (approved.code, desk.text(approved.out), approved.err) == (
        0,
        "run <RUN> completed (<S> s)\n",
        "approved by alice\n",
    )
    assert desk.calls("send") == [
        {
            "tool": "send",
            "ticket": "refund-2",
            "body": "A colleague from billing will write to you.",
        }
    ]
    [decision] = desk.store().decisions(run)
    assert decision.content_hash == content_hash(edit)
    assert decision.content == edit
    # The approved output is the draft's new checkpoint, as the reviewer wrote it.
    checkpoints = desk.store().checkpoints(run)
    assert [(c.step_id, c.outcome, c.route) for c in checkpoints] == [
        ("draft", "ok", "check"),
        ("check", "violation", "human_review"),
        ("draft", "approved", "send"),
        ("send", "ok", "done"),
    ]
    assert checkpoints[2].output == edit


def test_approve_by_a_run_id_prefix(desk: Desk) -> None:
    """Every command takes a unique prefix of a run id, as `review show` does."""
    run = desk.run("refund-14", "RUN")
    other = desk.run("refund-15", "OTHER")
    prefix = next(run[:n] for n in range(16, 25) if not other.startswith(run[:n]))
    shown = desk.cli("review", "show", prefix)
    assert shown.code == 0
    assert desk.text(shown.out).startswith("run      <RUN> (replies), escalated")
    approved = desk.cli(
        "review", "approve", prefix, "--as", "alice", "--set", "reply=Billing will write."
    )
    assert (approved.code, desk.text(approved.out), approved.err) == (
        0,
        "run <RUN> completed (<S> s)\n",
        "approved by alice\n",
    )
    assert desk.calls("send") == [
        {"tool": "send", "ticket": "refund-14", "body": "Billing will write."}
    ]
    assert [(c.seq, c.step_id, c.outcome) for c in desk.store().checkpoints(run)] == [
        (1, "draft", "ok"),
        (2, "check", "violation"),
        (3, "draft", "approved"),
        (4, "send", "ok"),
    ]


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (["--set", "tone=casual"], 'tone: must be one of warm, formal; found "casual"'),
        (["--set", "reply="], "reply: "),
        (["--set", "signature=Bo"], "signature"),
        (["--edit", "FILE"], "tone"),
    ],
    ids=["enum", "min-length", "extra-field", "missing-field"],
)
def test_an_edit_that_breaks_the_schema_is_refused(
    desk: Desk, edit: list[str], problem: str
) -> None:
    run = desk.run("refund-3", "RUN")
    if edit[0] == "--edit":
        (desk.root / "edit.json").write_text('{"reply": "Billing will write."}')
        edit = ["--edit", str(desk.root / "edit.json")]
    refused = desk.cli("review", "approve", run, "--as", "alice", *edit)
    assert refused.out == ""
    assert refused.err.startswith(
        "runner: the edited output does not match the output schema of step draft: "
    ), refused.err
    assert problem in refused.err
    assert refused.code == 1, f"exit {refused.code}: {refused.err}"


def test_an_edit_refused_leaves_the_run_waiting(desk: Desk) -> None:
    run = desk.run("refund-4", "RUN")
    refused = desk.cli("review", "approve", run, "--as", "alice", "--set", "tone=casual")
    assert refused.code != 0
    assert refused.err == (
        "runner: the edited output does not match the output schema of "
        'step draft: tone: must be one of warm, formal; found "casual"\n'
    )
    assert desk.store().run(run).status == "escalated"
    assert desk.store().decisions(run) == []
    assert desk.calls("send") == []


def test_a_hash_that_no_longer_matches_is_refused(desk: Desk) -> None:
    run = desk.run("refund-5", "RUN")
    seen = content_hash(REFUND)[:12]
    refused = desk.cli("review", "approve", run, "--as", "alice", "--hash", "000000000000")
    assert (refused.code, refused.out) == (1, "")
    assert desk.text(refused.err) == (
        "runner: run <RUN>: the proposal changed since it was shown (hash 000000000000, "
        f"now {seen}); look at it again\n"
    )
    # The proposal really changes: a retry drafts again, and the new draft escalates too.
    desk.drafts(**{"refund-5": "Refund approved."})
    retried = desk.cli("review", "retry", run, "--from", "draft", "--as", "carol")
    assert retried.code == 4
    assert desk.text(retried.out) == (
        f"run <RUN> escalated (<S> s)\n  waiting for human review: {REASON}\n"
    )
    new = content_hash({"reply": "Refund approved.", "tone": "warm"})
    stale = desk.cli("review", "approve", run, "--as", "alice", "--hash", seen)
    assert (stale.code, stale.out) == (1, "")
    assert desk.text(stale.err) == (
        f"runner: run <RUN>: the proposal changed since it was shown (hash {seen}, "
        f"now {new[:12]}); look at it again\n"
    )
    assert desk.store().run(run).status == "escalated"
    assert [d.decision for d in desk.store().decisions(run)] == ["retried"]
    assert desk.calls("send") == []
    approved = desk.cli("review", "approve", run, "--as", "alice", "--hash", new)
    assert approved.code == 0
    assert desk.calls("send") == [
        {"tool": "send", "ticket": "refund-5", "body": "Refund approved."}
    ]
    assert desk.store().decisions(run)[-1].content_hash == new


# -- reject, retry, expire -------------------------------------------------------------------
def test_reject_closes_the_run_and_nothing_is_sent(desk: Desk) -> None:
    run = desk.run("refund-6", "RUN")
    rejected = desk.cli("review", "reject", run, "--reason", "promises a refund", "--as", "bob")
    assert (rejected.code, rejected.err) == (0, "")
    assert desk.text(rejected.out) == "run <RUN> rejected by bob: promises a refund\n"
    record = desk.store().run(run)
    assert (record.status, record.failed_step) == ("rejected", "check")
    [decision] = desk.store().decisions(run)
    assert (decision.decision, decision.decided_by, decision.note) == (
        "rejected",
        "bob",
        "promises a refund",
    )
    assert decision.content_hash == content_hash(REFUND)
    assert desk.cli("review", "list").out == "nothing waiting\n"

    shown = desk.cli("review", "show", run)
    assert desk.text(shown.out) == (
        "run      <RUN> (replies), rejected <AGE> ago\n"
        f"stopped  at check: {REASON}\n"
        'input    {"ticket": "refund-6"}\n'
        "audit trail:\n"
        + timeline(
            *ESCALATED, "check            rejected by bob (promises a refund) -> human_review"
        )
    )

    # Nothing more of it runs, whoever asks.
    for args, message in [
        (("resume", run), "runner: run <RUN> is rejected; there is nothing to resume\n"),
        (
            ("review", "approve", run, "--as", "alice"),
            "runner: run <RUN> is rejected, not waiting for review\n",
        ),
        (
            ("review", "retry", run, "--from", "send", "--as", "alice"),
            "runner: run <RUN> is rejected, not escalated\n",
        ),
        (("dlq", "retry", run, "--as", "alice"), "runner: run <RUN> is rejected, not failed\n"),
    ]:
        refused = desk.cli(*args)
        assert (refused.code, refused.out, desk.text(refused.err)) == (1, "", message)
    assert desk.calls("send") == []
    assert desk.store().run(run).status == "rejected"
    assert len(desk.store().decisions(run)) == 1


def test_retry_from_a_step_runs_it_again(desk: Desk) -> None:
    run = desk.run("refund-7", "RUN")
    desk.drafts(**{"refund-7": "Billing will get back to you."})
    retried = desk.cli(
        "review", "retry", run, "--from", "draft", "--as", "carol", "--note", "new wording"
    )
    assert (retried.code, desk.text(retried.out), retried.err) == (
        0,
        "run <RUN> completed (<S> s)\n",
        "",
    )
    assert [c["ticket"] for c in desk.calls("draft")] == ["refund-7", "refund-7"]
    assert desk.calls("send") == [
        {"tool": "send", "ticket": "refund-7", "body": "Billing will get back to you."}
    ]
    [decision] = desk.store().decisions(run)
    assert (
        decision.decision,
        decision.decided_by,
        decision.step_id,
        decision.note,
        decision.content_hash,
    ) == ("retried", "carol", "check", "new wording", None)
    shown = desk.cli("show", run)
    assert "check            retried by carol (new wording) -> draft\n" in shown.out

    unknown = desk.cli("review", "retry", run, "--from", "nowhere", "--as", "carol")
    assert unknown.code != 0
    assert desk.text(unknown.err) == "runner: run <RUN> is completed, not escalated\n"
    other = desk.run("refund-8", "OTHER")
    unknown = desk.cli("review", "retry", other, "--from", "nowhere", "--as", "carol")
    assert (unknown.code, unknown.err) == (2, "runner: flow replies has no step nowhere\n")
    assert desk.store().run(other).status == "escalated"


def test_an_in_doubt_effect_approved_is_done_and_not_sent(desk: Desk) -> None:
    desk.drafts(**{"doubt-1": "Your order ships today."})
    # A crash inside the call left the ledger row `started`: its outcome is unknown.
    assert desk.store().start_effect("send-doubt-1", "crashed-run", "send", "send") is None
    run = desk.run("doubt-1", "RUN")
    assert desk.calls("send") == []
    reason = (
        "effect send-doubt-1 may have happened (a previous attempt started and never "
        "finished); check before approving"
    )
    listed = desk.cli("review", "list")
    assert desk.text(listed.out) == (
        f"{'RUN':26}FLOW     STEP  REASON                                                        "
        "SCORE  DUE     AGE\n"
        f"<RUN>  replies  send  {reason[:57]}...  -      in 59m  <AGE>\n"
    )
    shown = desk.cli("review", "show", run)
    assert desk.text(shown.out) == (
        "run      <RUN> (replies), escalated <AGE> ago\n"
        f"stopped  at send: {reason}\n"
        "in doubt effect send-doubt-1 may have happened: approve if it did, "
        "retry --from send if it did not\n"
        'input    {"ticket": "doubt-1"}\n'
        "proposed output of send (hash 74234e98afe7): none was recorded\n"
        "who      anyone\n"
        "expires  <DUE> (in 59m) -> dead_letter\n"
        "decide   runner review approve <RUN> --hash 74234e98afe7  ends at done\n"
        "         runner review reject <RUN> --reason TEXT         closes the run\n"
        "         runner review retry <RUN> --from send            runs send again\n"
        "edit     to give the output it should have, approve with --set PATH=VALUE (repeatable)"
        " or --edit FILE\n"
        "audit trail:\n"
        + timeline(
            STARTED,
            "draft            ok -> check  (1 attempt, <MS> ms)",
            "check            ok -> send  (1 attempt, <MS> ms)",
            "send             effect send-doubt-1: in_doubt",
            "send             in_doubt -> human_review  (1 attempt, <MS> ms)\n"
            f"{'':30}error: {reason}",
        )
    )
    shown = desk.json(desk.cli("review", "show", run, "--format", "json").out)
    assert shown["effect_in_doubt"] == "send-doubt-1"
    assert shown["proposed_step"] == "send"

    # Nothing recorded what the send returned: the person must say, in its schema.
    refused = desk.cli("review", "approve", run, "--as", "dave")
    assert refused.code == 1
    assert (
        "runner: the proposed output does not match the output schema of step send: "
        "(the value): expected a mapping, found null; give the output with --edit or "
        "--set" in refused.err
    )
    approved = desk.cli(
        "review", "approve", run, "--as", "dave", "--note", "it arrived", "--set", "sent=true"
    )
    assert (approved.code, desk.text(approved.out)) == (0, "run <RUN> completed (<S> s)\n")
    effect = desk.store().effect("send-doubt-1")
    assert effect is not None
    assert (effect.status, effect.result) == ("done", {"sent": True})
    assert desk.calls("send") == []  # the person said it happened: never sent again
    [decision] = desk.store().decisions(run)
    assert (decision.decision, decision.decided_by, decision.content_hash) == (
        "approved",
        "dave",
        content_hash({"sent": True}),
    )


def test_an_in_doubt_effect_retried_is_sent_again(desk: Desk) -> None:
    desk.drafts(**{"slow-1": "Your order ships today."})
    # The send is called, then its answer is late: the call times out, maybe sent.
    run = desk.run("slow-1", "RUN")
    (desk.root / "gate").touch()
    assert desk.calls("send") == [
        {"tool": "send", "ticket": "slow-1", "body": "Your order ships today."}
    ]
    record = desk.store().run(run)
    assert (record.status, record.failed_step) == ("escalated", "send")
    assert record.reason == (
        "effect send-slow-1 may have happened (no result after 1s); check before approving"
    )
    effect = desk.store().effect("send-slow-1")
    assert effect is not None
    assert effect.status == "started"
    # `resume` does not decide for a person.
    resumed = desk.cli("resume", run)
    assert (resumed.code, desk.text(resumed.err)) == (
        1,
        "runner: run <RUN> waits for human review at send: see `runner review show "
        "<RUN>`, then approve, reject or retry it\n",
    )

    retried = desk.cli(
        "review", "retry", run, "--from", "send", "--as", "erin", "--note", "not in the outbox"
    )
    assert (retried.code, desk.text(retried.out)) == (0, "run <RUN> completed (<S> s)\n")
    assert len(desk.calls("send")) == 2  # the person said it did not happen: sent again
    effect = desk.store().effect("send-slow-1")
    assert effect is not None
    assert (effect.status, effect.result) == ("done", {"sent": True})
    [decision] = desk.store().decisions(run)
    assert (decision.decision, decision.decided_by, decision.note) == (
        "retried",
        "erin",
        "not in the outbox",
    )
    events = [
        (e.kind, e.step_id, e.data.get("status"))
        for e in desk.store().events(run)
        if e.kind in ("effect", "decision")
    ]
    assert events == [
        ("effect", "send", "in_doubt"),
        ("decision", "send", "running"),
        ("effect", "send", "done"),
    ]


def test_expire_takes_on_expired(desk: Desk) -> None:
    old = desk.run("refund-9", "OLD")
    fresh = desk.run("refund-10", "FRESH")
    nothing = desk.cli("review", "expire")
    assert (nothing.code, nothing.out) == (0, "0 expired\n")
    assert desk.cli("review", "expire", "--format", "json").out == "[]\n"
    store = desk.store()
    with store.engine.begin() as conn:  # its review fell due an hour after it stopped
        conn.execute(
            runs.update()
            .where(runs.c.id == old)
            .values(updated_at=now() - timedelta(seconds=3601), due_at=now() - timedelta(seconds=1))
        )
    expired = desk.cli("review", "expire")
    assert (expired.code, desk.text(expired.out)) == (
        0,
        "run <OLD> expired -> dead_letter\n1 expired\n",
    )
    record = desk.store().run(old)
    assert (record.status, record.position) == ("failed", "dead_letter")
    [decision] = desk.store().decisions(old)
    assert (decision.decision, decision.decided_by, decision.note) == (
        "expired",
        "runner",
        "unreviewed for 3600 s",
    )
    assert desk.store().run(fresh).status == "escalated"
    assert desk.store().decisions(fresh) == []
    assert desk.calls("send") == []
    # Expired once: it is no longer waiting, so it does not expire again.
    assert desk.cli("review", "expire", "--format", "json").out == "[]\n"
    listed = desk.cli("dlq", "list")
    assert desk.text(listed.out) == (
        f"{'RUN':26}FLOW     STEP   ERROR                                                 AGE\n"
        f"<OLD>  replies  check  {REASON}  <AGE>\n"
    )

    # Nobody has to run `review expire`: any command that opens the store applies it.
    with store.engine.begin() as conn:
        conn.execute(
            runs.update().where(runs.c.id == fresh).values(due_at=now() - timedelta(seconds=1))
        )
    listed = desk.cli("review", "list")
    assert (listed.code, listed.out) == (0, "nothing waiting\n")
    assert desk.text(listed.err) == "runner: review of run <FRESH> expired -> dead_letter\n"
    assert desk.store().run(fresh).status == "failed"
    assert desk.json(desk.cli("review", "expire", "--format", "json").out) == []


def test_a_run_escalated_before_review_deadlines_expires_by_its_flows_policy(desk: Desk) -> None:
    """Runs that stopped before deadlines were recorded (release 0.1's) have none:
    `review expire` measures them from when they stopped, by the flow's policy."""
    old = desk.run("refund-11", "OLD")
    with desk.store().engine.begin() as conn:
        conn.execute(
            runs.update()
            .where(runs.c.id == old)
            .values(updated_at=now() - timedelta(seconds=3601), due_at=None)
        )
    assert desk.cli("runs").code == 0  # the automatic sweep goes by deadlines only
    assert desk.store().run(old).status == "escalated"
    expired = desk.cli("review", "expire")
    assert (expired.code, desk.text(expired.out)) == (
        0,
        "run <OLD> expired -> dead_letter\n1 expired\n",
    )


# -- the dead-letter queue -------------------------------------------------------------------
def test_dlq_list_show_retry_and_drop(desk: Desk) -> None:
    desk.drafts(**{"boom-1": "!fail", "boom-2": "!fail"})
    run = desk.run("boom-1", "RUN", expect=1)
    other = desk.run("boom-2", "OTHER", expect=1)
    message = "failed after 1 attempt: #1 exception: RuntimeError: draft service down"
    error = f"step draft failed: {message}"

    listed = desk.cli("dlq", "list")
    assert listed.code == 0
    assert desk.text(listed.out) == (
        f"{'RUN':26}FLOW     STEP   ERROR{'':57}AGE\n"
        f"<OTHER>  replies  draft  {error[:57]}...  <AGE>\n"
        f"<RUN>  replies  draft  {error[:57]}...  <AGE>\n"
    )
    dead = {
        "flow": "replies",
        "status": "failed",
        "step": "draft",
        "reason": error,
        "score": None,
        "method": None,
        "proposed_step": "draft",
        "proposed_output": None,
        "content_hash": content_hash(None),
        "editable": True,
        "effect_in_doubt": None,
        "hits": [],
        "invalid_answers": [],
        "reviewers": [],
        "due_at": None,
        "on_approved": "check",
        "on_rejected": None,
        "on_expired": "dead_letter",
        "title": None,
        "shown": {},
        "error": {
            "kind": "exception",
            "message": message,
            "attempts": [
                {
                    "number": 1,
                    "kind": "exception",
                    "message": "RuntimeError: draft service down",
                    "wait_seconds": None,
                }
            ],
        },
        "updated_at": "<TIME>",
    }
    listed = desk.cli("dlq", "list", "--format", "json")
    assert desk.json(listed.out) == [
        {"run": "<OTHER>", **dead, "input": {"ticket": "boom-2"}},
        {"run": "<RUN>", **dead, "input": {"ticket": "boom-1"}},
    ]
    assert desk.cli("review", "list").out == "nothing waiting\n"

    failed_events = [
        STARTED,
        "draft            attempt 1 failed: exception: RuntimeError: draft service down",
        f"draft            error -> dead_letter  (1 attempt, <MS> ms)\n{'':30}error: {message}",
    ]
    shown = desk.cli("dlq", "show", run)
    assert shown.code == 0
    assert desk.text(shown.out) == (
        "run      <RUN> (replies), failed <AGE> ago\n"
        f"stopped  at draft: {error}\n"
        'input    {"ticket": "boom-1"}\n'
        f"error    {message}\n"
        "decide   runner dlq retry <RUN>  resumes at draft\n"
        "         runner dlq drop <RUN>   archives the run, keeping its audit trail\n"
        "audit trail:\n" + timeline(*failed_events)
    )
    failed_json = [
        STARTED_JSON,
        {
            "at": "<TIME>",
            "kind": "attempt_failed",
            "step": "draft",
            "data": {
                "attempt": 1,
                "kind": "exception",
                "message": "RuntimeError: draft service down",
                "wait": None,
            },
        },
        {
            "at": "<TIME>",
            "kind": "step",
            "step": "draft",
            "data": {
                "outcome": "error",
                "route": "dead_letter",
                "attempts": 1,
                "ms": "<MS>",
                "error": dead["error"],
            },
        },
    ]
    shown = desk.cli("dlq", "show", run, "--format", "json")
    assert desk.json(shown.out) == {
        "run": "<RUN>",
        **dead,
        "input": {"ticket": "boom-1"},
        "decisions": [],
        "events": failed_json,
    }

    # The cause is fixed: retry resumes at the failed step with the stored input.
    desk.drafts(**{"boom-1": "Fixed now.", "boom-2": "!fail"})
    retried = desk.cli("dlq", "retry", run, "--as", "frank")
    assert (retried.code, desk.text(retried.out), retried.err) == (
        0,
        "run <RUN> completed (<S> s)\n",
        "",
    )
    assert desk.calls("send") == [{"tool": "send", "ticket": "boom-1", "body": "Fixed now."}]
    [decision] = desk.store().decisions(run)
    assert (decision.decision, decision.decided_by, decision.step_id, decision.note) == (
        "retried",
        "frank",
        "draft",
        "from draft",
    )
    assert desk.text(desk.cli("show", run).out).endswith(
        timeline(
            "draft            retried by frank (from draft) -> draft",
            "draft            ok -> check  (1 attempt, <MS> ms)",
            "check            ok -> send  (1 attempt, <MS> ms)",
            "send             effect send-boom-1: done",
            "send             ok -> done  (1 attempt, <MS> ms)",
        )
    )

    dropped = desk.cli("dlq", "drop", other, "--as", "frank", "--note", "duplicate ticket")
    assert (dropped.code, desk.text(dropped.out), dropped.err) == (
        0,
        "run <OTHER> archived by frank\n",
        "",
    )
    assert desk.cli("dlq", "list").out == "no failed runs\n"
    assert desk.cli("dlq", "list", "--format", "json").out == "[]\n"
    record = desk.store().run(other)
    assert (record.status, record.failed_step) == ("archived", "draft")
    assert record.error == dead["error"]  # the audit trail stays
    assert record.input == {"ticket": "boom-2"}
    shown = desk.json(desk.cli("dlq", "show", other, "--format", "json").out)
    assert shown["status"] == "archived"
    assert shown["error"] == dead["error"]
    assert shown["decisions"] == [
        {
            "run_id": "<OTHER>",
            "step_id": "draft",
            "decision": "dropped",
            "decided_by": "frank",
            "content_hash": None,
            "note": "duplicate ticket",
            "content": None,
            "decided_at": "<TIME>",
            "diff": None,
            "override": None,
        }
    ]
    assert [e["kind"] for e in shown["events"]] == [
        "run_started",
        "attempt_failed",
        "step",
        "decision",
    ]

    for args, message in [
        (("dlq", "retry", other, "--as", "frank"), "runner: run <OTHER> is archived, not failed\n"),
        (
            ("dlq", "drop", other, "--as", "frank"),
            "runner: run <OTHER> is archived; only failed runs are dropped\n",
        ),
        (("resume", other), "runner: run <OTHER> is archived; there is nothing to resume\n"),
    ]:
        refused = desk.cli(*args)
        assert (refused.code, refused.out, desk.text(refused.err)) == (1, "", message)
    assert [c["ticket"] for c in desk.calls("draft")].count("boom-2") == 1


# -- who decides ------------------------------------------------------------------------------
def test_who_decides_defaults_to_git_then_the_os_user(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = desk.root / "gitconfig"
    config.write_text("[user]\n\tname = Gita Reviewer\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.chdir(desk.root)
    first = desk.run("refund-11", "FIRST")
    second = desk.run("refund-12", "SECOND")
    approved = desk.cli("review", "approve", first)
    assert (approved.code, approved.err) == (0, "approved by Gita Reviewer\n")
    config.write_text("")
    rejected = desk.cli("review", "reject", second, "--reason", "no")
    assert rejected.code == 0
    user = getpass.getuser()
    assert desk.text(rejected.out) == f"run <SECOND> rejected by {user}: no\n"
    assert [d.decided_by for d in desk.store().decisions(first)] == ["Gita Reviewer"]
    assert [d.decided_by for d in desk.store().decisions(second)] == [user]


# -- two people at once ------------------------------------------------------------------------
BARRIER = '''\
"""Test instrumentation: when RUNNER_TEST_BARRIER names a folder, a decision waits,
after the run was read and before it is written, until every approver got there."""

import os

if os.environ.get("RUNNER_TEST_BARRIER"):
    import time

    from runner.store.sql import SqlStore

    _decide = SqlStore.decide

    def decide(self, *args, **kwargs):
        folder = os.environ["RUNNER_TEST_BARRIER"]
        open(os.path.join(folder, str(os.getpid())), "w").close()
        deadline = time.monotonic() + 20
        while len(os.listdir(folder)) < int(os.environ["RUNNER_TEST_PARTIES"]):
            if time.monotonic() > deadline:
                raise SystemExit("barrier: the other approver never came")
            time.sleep(0.001)
        return _decide(self, *args, **kwargs)

    SqlStore.decide = decide
'''


@pytest.mark.slow
@pytest.mark.parametrize("barrier", [True, True, True, False, False])
def test_two_people_approving_at_once_one_wins(desk: Desk, barrier: bool) -> None:
    run = desk.run("refund-13", "RUN")
    hooks = desk.root / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(BARRIER)
    folder = desk.root / "barrier"
    folder.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hooks), str(Path(__file__).resolve().parents[2])]),
        "RUNNER_TEST_PARTIES": "2",
        "REVIEW_DIR": str(desk.root),
    }
    if barrier:
        env["RUNNER_TEST_BARRIER"] = str(folder)
    names = ("alice", "bob")
    procs: list[subprocess.Popen[str]] = []
    try:
        for name in names:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "runner",
                        "review",
                        "approve",
                        run,
                        "--db",
                        desk.url,
                        "--as",
                        name,
                    ],
                    env=env,
                    cwd=desk.root,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        results = [p.communicate(timeout=40) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    codes = [p.returncode for p in procs]
    print(results)  # shown with -s, or on failure
    assert sorted(codes) == [0, 1], (codes, results)
    winner = codes.index(0)
    loser = 1 - winner
    assert desk.text(results[winner][0]) == "run <RUN> completed (<S> s)\n"
    assert results[winner][1] == f"approved by {names[winner]}\n"
    assert results[loser][0] == ""
    changed = (
        "runner: run <RUN> changed while this decision was made (someone else "
        "decided first?): look at it again\n"
    )
    late = {
        "runner: run <RUN> is completed, not waiting for review\n",
        "runner: run <RUN> is running, not waiting for review\n",
    }
    if barrier:  # both read the run before either wrote: a real race
        assert desk.text(results[loser][1]) == changed
    else:
        assert desk.text(results[loser][1]) in {changed, *late}
    decisions = desk.store().decisions(run)
    assert [(d.decision, d.decided_by) for d in decisions] == [("approved", names[winner])]
    assert desk.calls("send") == [
        {"tool": "send", "ticket": "refund-13", "body": "We will refund you today."}
    ]
    assert desk.store().run(run).status == "completed"
