"""What a reviewer sees: `runner review show` for every way a run reaches a person, and
`runner review list` in the order a person should take the runs.

Each escalation origin has a small flow of its own (python tools in tmp_path, models
answered by `runner.testing.FakeLLM`); runs start in-process on a SQLite store, then
`runner review ...` reads it through the command line. Outputs are compared whole, after
replacing run ids, ages, clock offsets and durations with placeholders.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from runner.cli.main import main
from runner.lang.load import load_flow
from runner.review.proposals import content_hash
from runner.runtime.engine import Engine
from runner.store.records import now
from runner.store.sql import SqlStore
from runner.store.tables import runs
from runner.testing import FakeClock, FakeLLM

TOOLS = '''\
"""Tools of the review show flows."""


def assess(ticket):
    return {"amount": 480, "reason": "The chair arrived broken."}


def draft(ticket):
    return {"reply": "Refund? Yes, a refund.", "tone": "warm"}


def ledger(ticket):
    raise RuntimeError("ledger service down")


def pay(amount):
    return {"paid": amount}


def send(ticket, body):
    return {"sent": True}
'''

TOOL_DEFS = """\
tools:
  assess:
    python: tools.show_tools:assess
    input: {type: object, required: [ticket]}
    output: {type: object, required: [amount, reason]}
  draft:
    python: tools.show_tools:draft
    input: {type: object, required: [ticket]}
    output:
      type: object
      required: [reply, tone]
      properties: {reply: {type: string}, tone: {enum: [warm, formal]}}
  ledger:
    python: tools.show_tools:ledger
    input: {type: object, required: [ticket]}
    output: {type: object}
  pay:
    python: tools.show_tools:pay
    input: {type: object, required: [amount]}
    output: {type: object, required: [paid]}
    effect: true
    idempotency_key: "pay-{{ input.ticket }}"
  send:
    python: tools.show_tools:send
    input: {type: object, required: [ticket, body]}
    output: {type: object, required: [sent]}
    effect: true
    idempotency_key: "send-{{ input.ticket }}"
"""

MODEL_OUTPUT = """\
      output:
        type: object
        required: [category, confidence]
        properties:
          category: {enum: [billing, technical]}
          confidence: {type: number}
"""

FLOWS = {
    "confidence": f"""\
version: 1
name: triage
models:
  default: {{model: openai/gpt-4o-mini, temperature: 0}}
steps:
  - id: classify
    llm:
      prompt: "Classify: {{{{ input.ticket }}}}"
{MODEL_OUTPUT}    confidence: {{score: "{{{{ output.confidence }}}}", min: 0.85}}
    on_low_confidence: human_review
on_error: dead_letter
""",
    "policy": f"""\
version: 1
name: replies
{TOOL_DEFS}policies:
  no_refund: {{deny: "(?i)refund", message: only billing staff promise refunds}}
review: {{expires_after_seconds: 3600, on_expired: dead_letter}}
steps:
  - id: draft
    tool: draft
    args: {{ticket: "{{{{ input.ticket }}}}"}}
  - id: check
    policies: [no_refund]
    text: "{{{{ steps.draft.output.reply }}}}"
  - id: send
    tool: send
    args: {{ticket: "{{{{ input.ticket }}}}", body: "{{{{ steps.draft.output.reply }}}}"}}
on_error: dead_letter
""",
    "doubt": f"""\
version: 1
name: payouts
{TOOL_DEFS}steps:
  - id: pay
    tool: pay
    args: {{amount: 40}}
on_error: dead_letter
""",
    "switch": f"""\
version: 1
name: limits
{TOOL_DEFS}steps:
  - id: assess
    tool: assess
    args: {{ticket: "{{{{ input.ticket }}}}"}}
  - id: limit
    switch:
      - when: "steps.assess.output.amount > 200"
        next: human_review
    next: pay
  - id: pay
    tool: pay
    args: {{amount: "{{{{ steps.assess.output.amount }}}}"}}
on_error: dead_letter
""",
    "budget": f"""\
version: 1
name: summaries
models:
  default: {{model: openai/gpt-4o-mini, temperature: 0}}
budget: {{max_llm_calls: 1}}
steps:
  - id: classify
    llm:
      prompt: "Classify: {{{{ input.ticket }}}}"
{MODEL_OUTPUT}  - id: summarize
    llm:
      prompt: "Summarize: {{{{ input.ticket }}}}"
on_error: dead_letter
""",
    "error": f"""\
version: 1
name: ledgers
{TOOL_DEFS}steps:
  - id: book
    tool: ledger
    args: {{ticket: "{{{{ input.ticket }}}}"}}
    on_error: human_review
on_error: dead_letter
""",
    "approval": f"""\
version: 1
name: refunds
{TOOL_DEFS}steps:
  - id: assess
    tool: assess
    args: {{ticket: "{{{{ input.ticket }}}}"}}
  - id: finance
    approval:
      title: "Refund of {{{{ steps.assess.output.amount }}}} EUR for {{{{ input.ticket }}}}"
      show:
        reason: "{{{{ steps.assess.output.reason }}}}"
        ticket: "{{{{ input.ticket }}}}"
      edit:
        type: object
        required: [amount]
        properties:
          amount: {{type: number, minimum: 0, default: "{{{{ steps.assess.output.amount }}}}"}}
          note: {{type: string, default: "Refund for {{{{ input.ticket }}}}"}}
      reviewers: [finance]
      expires_after_seconds: 86400
    on_rejected: done
    on_expired: dead_letter
  - id: pay
    tool: pay
    args: {{amount: "{{{{ steps.finance.output.amount }}}}"}}
on_error: dead_letter
""",
}


def digest(origin: str) -> str:
    return hashlib.sha256(FLOWS[origin].encode()).hexdigest()[:12]


class Bench:
    """Flows in tmp_path and one SQLite store: runs start in-process, people read and
    decide through `runner.cli.main.main`."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.root = root
        self.capsys = capsys
        self.url = f"sqlite:///{root / 'runs.db'}"
        self.names: dict[str, str] = {}
        (root / "tools").mkdir()
        (root / "tools" / "show_tools.py").write_text(TOOLS)
        self.store = SqlStore(self.url)

    def start(self, origin: str, name: str, llm: FakeLLM | None = None, ticket: str = "T-1") -> str:
        """Run the flow of `origin` until it stops for review; `<name>` in outputs."""
        path = self.root / f"{origin}.yaml"
        path.write_text(FLOWS[origin])
        engine = Engine(self.store, llm=llm or FakeLLM(), clock=FakeClock(), rng=random.Random(0))
        result = engine.start(load_flow(path), {"ticket": ticket})
        assert result.status == "escalated", result
        self.names[result.run_id] = f"<{name}>"
        return result.run_id

    def cli(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        buffer = io.StringIO()
        code = main([*args, "--db", self.url], out=buffer)
        return code, buffer.getvalue(), self.capsys.readouterr().err

    def show(self, run: str) -> str:
        code, out, err = self.cli("review", "show", run)
        assert (code, err) == (0, ""), err
        return self.text(out)

    def text(self, value: str) -> str:
        for run_id, name in self.names.items():
            value = value.replace(run_id, name)
        value = re.sub(r"\+ *\d+\.\d{3}s", "+<T>", value)
        value = re.sub(r"\d+\.\d ms\)", "<MS> ms)", value)
        value = re.sub(r"\b\d+\+\d+ tokens", "<N> tokens", value)
        return re.sub(r"\b\d+[smhd] ago\b", "<AGE> ago", value)

    def due(self, run: str) -> str:
        """The expiry time `review show` prints for a run."""
        due_at = self.store.run(run).due_at
        assert due_at is not None
        return due_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")

    def backdate(self, run: str, *, waited: timedelta, due_in: timedelta | None) -> None:
        """Make a run look as if it stopped `waited` ago, its review due `due_in` from now
        (None: no deadline stored, as release 0.1 left them)."""
        due_at = None if due_in is None else now() + due_in
        with self.store.engine.begin() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.id == run)
                .values(updated_at=now() - waited, due_at=due_at)
            )


@pytest.fixture
def bench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Bench]:
    made = Bench(tmp_path, capsys)
    try:
        yield made
    finally:
        made.store.close()


def trail(*lines: str) -> str:
    return "audit trail:\n" + "".join(f"  +<T>  {line}\n" for line in lines)


def started(flow: str, origin: str) -> str:
    return f"-                run started (flow {flow}, version {digest(origin)})"


# -- review show, one origin at a time -------------------------------------------------------
def test_low_confidence_shows_the_score_and_the_answers_that_did_not_fit(bench: Bench) -> None:
    answers = [
        "Sure! It is billing.",
        {"category": "refunds", "confidence": 0.9},
        {"category": "billing", "confidence": 0.412},
    ]
    run = bench.start("confidence", "RUN", FakeLLM({"classify": answers}))
    hash_ = content_hash(answers[-1])[:12]
    assert bench.show(run) == (
        "run      <RUN> (triage), escalated <AGE> ago\n"
        "stopped  at classify: confidence 0.412 below 0.85 (field)\n"
        "score    0.412 (field)\n"
        'input    {"ticket": "T-1"}\n'
        "invalid  answers of classify that did not fit its schema (first 300 characters of each):\n"
        "         1. Sure! It is billing.\n"
        "            problem: it is not JSON (Expecting value at line 1 column 1)\n"
        '         2. {"category": "refunds", "confidence": 0.9}\n'
        "            problem: it does not match the JSON Schema: category: must be one of "
        'billing, technical; found "refunds"\n'
        f"proposed output of classify (hash {hash_}):\n"
        "  {\n"
        '    "category": "billing",\n'
        '    "confidence": 0.412\n'
        "  }\n"
        "who      anyone\n"
        "expires  never\n"
        f"decide   runner review approve <RUN> --hash {hash_}  ends at done\n"
        "         runner review reject <RUN> --reason TEXT         closes the run\n"
        "         runner review retry <RUN> --from classify        runs classify again\n"
        "edit     to change values, approve with --set PATH=VALUE (repeatable) or --edit FILE\n"
        + trail(
            started("triage", "confidence"),
            "classify         model openai/gpt-4o-mini: <N> tokens, 0 ms",
            "classify         answer 1 invalid, it is not JSON (Expecting value at line 1 "
            "column 1): Sure! It is billing.",
            "classify         model openai/gpt-4o-mini: <N> tokens, 0 ms, repair 1",
            "classify         answer 2 invalid, it does not match the JSON Schema: category: "
            'must be one of billing, technical; found "refunds": {"category": "refunds", '
            '"confidence": 0.9}',
            "classify         model openai/gpt-4o-mini: <N> tokens, 0 ms, repair 2",
            "classify         confidence 0.412 (field) vs 0.85: failed",
            "classify         low_confidence -> human_review  (1 attempt, <MS> ms)",
        )
    )


def test_a_model_answer_is_shown_bounded_and_on_one_line(bench: Bench) -> None:
    rambling = "Let me think.\n\n" + "billing " * 100
    answers = [rambling, rambling, {"category": "billing", "confidence": 0.5}]
    run = bench.start("confidence", "RUN", FakeLLM({"classify": answers}))
    shown = bench.show(run).splitlines()
    cut = "Let me think. " + ("billing " * 100)[: 300 - 14 - 3] + "..."
    assert shown[5:9] == [
        f"         1. {cut}",
        "            problem: it is not JSON (Expecting value at line 1 column 1)",
        f"         2. {cut}",
        "            problem: it is not JSON (Expecting value at line 1 column 1)",
    ]


def test_a_policy_violation_shows_each_distinct_hit_once_with_a_count(bench: Bench) -> None:
    run = bench.start("policy", "RUN")
    draft = {"reply": "Refund? Yes, a refund.", "tone": "warm"}
    hash_ = content_hash(draft)[:12]
    assert bench.show(run) == (
        "run      <RUN> (replies), escalated <AGE> ago\n"
        "stopped  at check: policy no_refund: only billing staff promise refunds\n"
        'input    {"ticket": "T-1"}\n'
        "hits     policy no_refund (deny): only billing staff promise refunds: "
        '"Refund? Yes, a refund." (x2)\n'
        f"proposed output of draft (hash {hash_}):\n"
        "  {\n"
        '    "reply": "Refund? Yes, a refund.",\n'
        '    "tone": "warm"\n'
        "  }\n"
        "who      anyone\n"
        f"expires  {bench.due(run)} (in 59m) -> dead_letter\n"
        f"decide   runner review approve <RUN> --hash {hash_}  continues at send\n"
        "         runner review reject <RUN> --reason TEXT         closes the run\n"
        "         runner review retry <RUN> --from draft           runs draft again\n"
        "edit     to change values, approve with --set PATH=VALUE (repeatable) or --edit FILE\n"
        "         an edit that still breaks a policy is refused: add --override REASON\n"
        + trail(
            started("replies", "policy"),
            "draft            ok -> check  (1 attempt, <MS> ms)",
            "check            policy no_refund fired (deny): only billing staff promise refunds"
            " (x2)",
            "check            violation -> human_review  (1 attempt, <MS> ms)",
        )
    )


def test_an_effect_in_doubt_says_what_approving_and_retrying_mean(bench: Bench) -> None:
    # A crash inside the call left the ledger row `started`: its outcome is unknown.
    assert bench.store.start_effect("pay-T-1", "crashed-run", "pay", "pay") is None
    run = bench.start("doubt", "RUN")
    reason = (
        "effect pay-T-1 may have happened (a previous attempt started and never finished); "
        "check before approving"
    )
    hash_ = content_hash(None)[:12]
    assert bench.show(run) == (
        "run      <RUN> (payouts), escalated <AGE> ago\n"
        f"stopped  at pay: {reason}\n"
        "in doubt effect pay-T-1 may have happened: approve if it did, retry --from pay if it "
        "did not\n"
        'input    {"ticket": "T-1"}\n'
        f"proposed output of pay (hash {hash_}): none was recorded\n"
        "who      anyone\n"
        "expires  never\n"
        f"decide   runner review approve <RUN> --hash {hash_}  ends at done\n"
        "         runner review reject <RUN> --reason TEXT         closes the run\n"
        "         runner review retry <RUN> --from pay             runs pay again\n"
        "edit     to give the output it should have, approve with --set PATH=VALUE (repeatable)"
        " or --edit FILE\n"
        + trail(
            started("payouts", "doubt"),
            "pay              effect pay-T-1: in_doubt",
            f"pay              in_doubt -> human_review  (1 attempt, <MS> ms)\n{'':30}"
            f"error: {reason}",
        )
    )


def test_a_switch_route_has_nothing_to_edit(bench: Bench) -> None:
    run = bench.start("switch", "RUN")
    hash_ = content_hash({"branch": 1, "when": "steps.assess.output.amount > 200"})[:12]
    assert bench.show(run) == (
        "run      <RUN> (limits), escalated <AGE> ago\n"
        "stopped  at limit: case 1, steps.assess.output.amount = 480 > 200\n"
        'input    {"ticket": "T-1"}\n'
        "nothing to edit: approve to continue on `pay`, or reject\n"
        "who      anyone\n"
        "expires  never\n"
        f"decide   runner review approve <RUN> --hash {hash_}  continues at pay\n"
        "         runner review reject <RUN> --reason TEXT         closes the run\n"
        + trail(
            started("limits", "switch"),
            "assess           ok -> limit  (1 attempt, <MS> ms)",
            "limit            case_1 -> human_review  (1 attempt, <MS> ms)",
        )
    )


def test_a_budget_reached_names_the_limit(bench: Bench) -> None:
    answer = {"category": "billing", "confidence": 0.9}
    run = bench.start("budget", "RUN", FakeLLM({"classify": [answer]}))
    reason = "budget reached: 1 model calls used, the limit is 1"
    hash_ = content_hash(None)[:12]
    assert bench.show(run) == (
        "run      <RUN> (summaries), escalated <AGE> ago\n"
        f"stopped  at summarize: {reason}\n"
        'input    {"ticket": "T-1"}\n'
        f"proposed output of summarize (hash {hash_}): none was recorded\n"
        "who      anyone\n"
        "expires  never\n"
        f"decide   runner review approve <RUN> --hash {hash_}  ends at done\n"
        "         runner review reject <RUN> --reason TEXT         closes the run\n"
        "         runner review retry <RUN> --from summarize       runs summarize again\n"
        "edit     to give the output it should have, approve with --set PATH=VALUE (repeatable)"
        " or --edit FILE\n"
        + trail(
            started("summaries", "budget"),
            "classify         model openai/gpt-4o-mini: <N> tokens, 0 ms",
            "classify         ok -> summarize  (1 attempt, <MS> ms)",
            f"summarize        {reason}",
            f"summarize        budget_exceeded -> human_review  (0 attempts, <MS> ms)\n{'':30}"
            f"error: {reason}",
        )
    )


def test_a_step_error_shows_the_error(bench: Bench) -> None:
    run = bench.start("error", "RUN")
    error = "failed after 1 attempt: #1 exception: RuntimeError: ledger service down"
    hash_ = content_hash(None)[:12]
    assert bench.show(run) == (
        "run      <RUN> (ledgers), escalated <AGE> ago\n"
        f"stopped  at book: step book failed: {error}\n"
        'input    {"ticket": "T-1"}\n'
        f"proposed output of book (hash {hash_}): none was recorded\n"
        "who      anyone\n"
        "expires  never\n"
        f"decide   runner review approve <RUN> --hash {hash_}  ends at done\n"
        "         runner review reject <RUN> --reason TEXT         closes the run\n"
        "         runner review retry <RUN> --from book            runs book again\n"
        "edit     to give the output it should have, approve with --set PATH=VALUE (repeatable)"
        " or --edit FILE\n"
        + trail(
            started("ledgers", "error"),
            "book             attempt 1 failed: exception: RuntimeError: ledger service down",
            f"book             error -> human_review  (1 attempt, <MS> ms)\n{'':30}error: {error}",
        )
    )


APPROVAL_SHOW = """\
run      <RUN> (refunds), escalated <AGE> ago
stopped  at finance, an approval step
title    Refund of 480 EUR for T-1
show     reason: The chair arrived broken.
         ticket: T-1
input    {{"ticket": "T-1"}}
proposed values (hash {hash}):
  {{
    "amount": 480,
    "note": "Refund for T-1"
  }}
who      finance (--as "Your Name (finance)")
expires  {due} (in 23h) -> dead_letter
decide   runner review approve <RUN> --hash {hash}  continues at pay
         runner review reject <RUN> --reason TEXT         ends at done
edit     to change values, approve with --set PATH=VALUE (repeatable) or --edit FILE
"""


def test_an_approval_shows_its_title_values_reviewers_and_expiry(bench: Bench) -> None:
    run = bench.start("approval", "RUN")
    proposed = {"amount": 480, "note": "Refund for T-1"}
    hash_ = content_hash(proposed)[:12]
    assert bench.show(run) == APPROVAL_SHOW.format(hash=hash_, due=bench.due(run)) + trail(
        started("refunds", "approval"),
        "assess           ok -> finance  (1 attempt, <MS> ms)",
        "finance          awaiting_approval -> human_review  (1 attempt, <MS> ms)",
    )
    code, out, _ = bench.cli("review", "show", run, "--format", "json")
    shown = json.loads(out)
    assert code == 0
    assert {k: v for k, v in shown.items() if k not in ("events", "updated_at")} == {
        "run": run,
        "flow": "refunds",
        "status": "escalated",
        "step": "finance",
        "reason": "Refund of 480 EUR for T-1",
        "title": "Refund of 480 EUR for T-1",
        "shown": {"reason": "The chair arrived broken.", "ticket": "T-1"},
        "score": None,
        "method": None,
        "proposed_step": "finance",
        "proposed_output": proposed,
        "content_hash": content_hash(proposed),
        "editable": True,
        "effect_in_doubt": None,
        "hits": [],
        "invalid_answers": [],
        "reviewers": ["finance"],
        "due_at": bench.store.run(run).due_at.isoformat(),  # type: ignore[union-attr]
        "on_approved": "pay",
        "on_rejected": "done",
        "on_expired": "dead_letter",
        "error": None,
        "input": {"ticket": "T-1"},
        "decisions": [],
    }


def test_show_json_carries_the_hits_and_the_invalid_answers(bench: Bench) -> None:
    policy = bench.start("policy", "POLICY")
    switch = bench.start("switch", "SWITCH")
    answers = ["nope", {"category": "billing", "confidence": 0.3}]
    model = bench.start("confidence", "MODEL", FakeLLM({"classify": answers}))

    def shown(run: str) -> dict[str, Any]:
        code, out, _ = bench.cli("review", "show", run, "--format", "json")
        assert code == 0
        data: dict[str, Any] = json.loads(out)
        return data

    hit = {
        "policy": "no_refund",
        "rule": "deny",
        "message": "only billing staff promise refunds",
        "excerpt": "Refund? Yes, a refund.",
    }
    assert shown(policy)["hits"] == [{**hit, "start": 0, "end": 6}, {**hit, "start": 15, "end": 21}]
    assert (shown(policy)["on_approved"], shown(policy)["reviewers"]) == ("send", [])
    assert (shown(switch)["editable"], shown(switch)["on_approved"]) == (False, "pay")
    assert shown(model)["invalid_answers"] == [
        {
            "repair": 0,
            "problem": "it is not JSON (Expecting value at line 1 column 1)",
            "answer": "nope",
        }
    ]
    assert (shown(model)["score"], shown(model)["method"]) == (0.3, "field")


def test_a_retried_run_shows_only_what_its_last_visit_found(bench: Bench) -> None:
    """A run escalated, retried and escalated again: the findings are the new ones."""
    run = bench.start("policy", "RUN")
    code, _, _ = bench.cli("review", "retry", run, "--from", "draft", "--as", "carol")
    assert code == 4
    hits = [line for line in bench.show(run).splitlines() if line.startswith("hits")]
    assert hits == [
        "hits     policy no_refund (deny): only billing staff promise refunds: "
        '"Refund? Yes, a refund." (x2)'
    ]


# -- review list -------------------------------------------------------------------------------
def test_list_puts_overdue_reviews_first_then_the_longest_waiting(bench: Bench) -> None:
    recent = bench.start("policy", "RECENT", ticket="T-1")
    older = bench.start("policy", "OLDER", ticket="T-2")
    legacy = bench.start("policy", "LEGACY", ticket="T-3")
    never = bench.start("switch", "NEVER", ticket="T-4")
    bench.backdate(recent, waited=timedelta(minutes=30), due_in=timedelta(minutes=30))
    bench.backdate(older, waited=timedelta(minutes=50), due_in=timedelta(minutes=10))
    # Stopped before deadlines were stored: due an hour after it stopped, by the flow.
    bench.backdate(legacy, waited=timedelta(hours=3), due_in=None)
    bench.backdate(never, waited=timedelta(hours=1), due_in=None)
    code, out, err = bench.cli("review", "list")
    assert (code, err) == (0, "")
    policy = "policy no_refund: only billing staff promise refunds"
    switch = "case 1, steps.assess.output.amount = 480 > 200"
    assert bench.text(out) == (
        f"{'RUN':26}FLOW     STEP   REASON{'':48}SCORE  DUE         AGE\n"
        f"<LEGACY>  replies  check  {policy}  -      overdue 2h  3h\n"
        f"<NEVER>  limits   limit  {switch:<{len(policy)}}  -      -           60m\n"
        f"<OLDER>  replies  check  {policy}  -      in 9m       50m\n"
        f"<RECENT>  replies  check  {policy}  -      in 29m      30m\n"
    )
    code, out, _ = bench.cli("review", "list", "--format", "json")
    listed = json.loads(out)
    assert [(bench.names[p["run"]], p["due_at"] is None) for p in listed] == [
        ("<LEGACY>", False),
        ("<NEVER>", True),
        ("<OLDER>", False),
        ("<RECENT>", False),
    ]
    due = datetime.fromisoformat(listed[0]["due_at"])
    assert timedelta(hours=1, seconds=-5) < now() - due <= timedelta(hours=2, seconds=5)


def test_an_escalation_without_a_recorded_reason_says_how_its_step_ended(bench: Bench) -> None:
    run = bench.start("error", "RUN")
    with bench.store.engine.begin() as conn:  # as a run of an older release may have it
        conn.execute(runs.update().where(runs.c.id == run).values(reason=None))
    stopped = [line for line in bench.show(run).splitlines() if line.startswith("stopped")]
    assert stopped == [
        "stopped  at book: book ended error -> human_review: failed after 1 attempt: #1 "
        "exception: RuntimeError: ledger service down"
    ]
    _, out, _ = bench.cli("review", "list")
    assert "  book failed: failed after 1 attempt: #1 exception: Runtim...  " in out
