"""Policy rules: detectors catch real data and let lookalikes pass; deny, require,
max_length and check rules; every violation locates what tripped it. Checked directly
(runner.kinds.policies) and through a flow's policies step."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path
from typing import Any

import pytest

from runner.core.llm import Answer, LLMResponse
from runner.kinds.policies.detectors import DETECTORS
from runner.kinds.policies.kinds import check_policies
from runner.lang.load import load_flow
from runner.lang.model import Policy
from runner.runtime.engine import Engine
from runner.store.sql import SqlStore
from runner.testing import FakeClock, FakeLLM


class Judge:
    """A model session that only a judge rule may ask: it answers with `verdict` and
    records each question (no model unless a verdict is given)."""

    def __init__(self, verdict: dict[str, Any] | None = None) -> None:
        self.verdict = verdict
        self.asked: list[str] = []
        self.events: list[Any] = []

    def ask(self, messages: Any, schema: Any, **options: Any) -> Answer:
        if self.verdict is None:
            raise AssertionError("no rule here should ask a model")
        self.asked.append(messages[-1]["content"])
        return Answer(self.verdict, LLMResponse(text=""))


no_judge = Judge()


def found(detector: str, text: str) -> list[str]:
    """What the detector flags in `text`, sliced by the offsets it reports."""
    return [text[start:end] for start, end in DETECTORS[detector](text)]


# (detector, text, the exact pieces of text it must flag; [] = must pass)
DETECTOR_CASES = [
    # payment cards: Luhn-valid numbers, however they are spelled
    ("credit_card", "card 4111 1111 1111 1111 thanks", ["4111 1111 1111 1111"]),
    ("credit_card", "card 4111-1111-1111-1111.", ["4111-1111-1111-1111"]),
    ("credit_card", "4111111111111111", ["4111111111111111"]),
    ("credit_card", "amex 3782 822463 10005", ["3782 822463 10005"]),
    (
        "credit_card",
        "cards 4111111111111111 and 5555555555554444",
        ["4111111111111111", "5555555555554444"],
    ),
    ("credit_card", "card 4111 1111 1111 1111 12/26", ["4111 1111 1111 1111"]),
    ("credit_card", "ref 12 4111 1111 1111 1111", ["4111 1111 1111 1111"]),
    ("credit_card", "order 4111111111111112 shipped", []),  # 16 digits, fails Luhn
    ("credit_card", "order 1234-5678-9012-3456 shipped", []),  # fails Luhn
    ("credit_card", "ticket 12345 from 2024-01-15", []),
    # IBANs: mod-97 valid, spaced or compact
    ("iban", "pay GB82 WEST 1234 5698 7654 32 today", ["GB82 WEST 1234 5698 7654 32"]),
    ("iban", "GB82WEST12345698765432", ["GB82WEST12345698765432"]),
    ("iban", "iban: DE89 3704 0044 0532 0130 00.", ["DE89 3704 0044 0532 0130 00"]),
    ("iban", "pay GB82 WEST 1234 5698 7654 32 ASAP", ["GB82 WEST 1234 5698 7654 32"]),
    ("iban", "pay GB82 WEST 1234 5698 7654 33 today", []),  # last digit mangled
    ("iban", "pay GB28 WEST 1234 5698 7654 32 today", []),  # check digits swapped
    ("iban", "SKU AB12 CDEF 3456 7890 12", []),
    # emails
    ("email", "write to jane.doe+tickets@example.co.uk soon", ["jane.doe+tickets@example.co.uk"]),
    ("email", "mail x@example.com.", ["x@example.com"]),
    ("email", "ask @support on chat", []),
    ("email", "user@localhost is local", []),
    ("email", "pip install pkg@1.2", []),
    # phone numbers vs short numbers
    ("phone", "call +44 20 7946 0958 today", ["+44 20 7946 0958"]),
    ("phone", "call +1 (555) 123-4567", ["+1 (555) 123-4567"]),
    ("phone", "call (555) 123-4567", ["(555) 123-4567"]),
    ("phone", "Tel. 030 1234567", ["030 1234567"]),
    ("phone", "call 555-1234", []),
    ("phone", "room 42, order 12345", []),
    ("phone", "version 1.2.3", []),
    ("phone", "ordered on 2024-01-15 at 10:30", []),
    ("phone", "the server at 192.168.100.200 is down", []),
    ("phone", "IBAN GB82 WEST 1234 5698 7654 32", []),  # an account number's tail
    # API-key-like secrets vs ordinary words
    ("secret", "key sk-abcdefghijklmnopqrstuvwx here", ["sk-abcdefghijklmnopqrstuvwx"]),
    ("secret", "sk-proj-abcDEF123456789_abcdefgh", ["sk-proj-abcDEF123456789_abcdefgh"]),
    ("secret", "token ghp_" + "A1" * 18, ["ghp_" + "A1" * 18]),
    ("secret", "AWS AKIAIOSFODNN7EXAMPLE.", ["AKIAIOSFODNN7EXAMPLE"]),
    ("secret", "slack xoxb-1234567890-abcdef", ["xoxb-1234567890-abcdef"]),
    ("secret", "we use sk-learn and a task-based, risk-free plan", []),
    ("secret", "AKIA is not a key, nor is ghp_short", []),
    ("secret", "the desk-abcdefghijklmnopqrstuvwxyz", []),
]


@pytest.mark.parametrize(
    ("detector", "text", "expected"), DETECTOR_CASES, ids=[f"{d}:{t}" for d, t, _ in DETECTOR_CASES]
)
def test_detector(detector: str, text: str, expected: list[str]) -> None:
    assert found(detector, text) == expected


def test_every_detector_is_covered() -> None:
    assert set(DETECTORS) == {d for d, _, _ in DETECTOR_CASES}
    for name in DETECTORS:
        cases = [e for d, _, e in DETECTOR_CASES if d == name]
        assert any(cases) and not all(cases), f"{name} needs true and false positives"


def policy(name: str, kind: str, value: Any, message: str | None = None) -> Policy:
    return Policy(name=name, kind=kind, value=value, message=message, path=("policies", name))


# (rule, text, the violations as (rule, message, sliced text or None))
RULE_CASES = [
    (
        policy("refunds", "deny", "(?i)we('ll| will) refund"),
        "Good news: We will refund you, and we'll refund the fee.",
        [
            (
                "deny",
                'the text matches the denied pattern "(?i)we(\'ll| will) refund"',
                "We will refund",
            ),
            (
                "deny",
                'the text matches the denied pattern "(?i)we(\'ll| will) refund"',
                "we'll refund",
            ),
        ],
    ),
    (
        policy("refunds", "deny", "(?i)we('ll| will) refund", "Only billing promises refunds."),
        "we will refund",
        [("deny", "Only billing promises refunds.", "we will refund")],
    ),
    (policy("refunds", "deny", "(?i)we('ll| will) refund"), "We cannot refund this.", []),
    (policy("signed", "require", "(?m)^Kind regards"), "Thanks!\nKind regards", []),
    (
        policy("signed", "require", "(?m)^Kind regards"),
        "Thanks!",
        [("require", "the text does not match the required pattern '(?m)^Kind regards'", None)],
    ),
    (policy("short", "max_length", 20), "x" * 20, []),
    (
        policy("short", "max_length", 20),
        "Twenty characters ok, then more",
        [("max_length", "the text is longer than 20 characters", ", then more")],
    ),
    (policy("names", "check", "input.name in text"), "Hello Ada, thanks.", []),
    (
        policy("names", "check", "input.name in text"),
        "Hello there.",
        [("check", "the check `input.name in text` is false", None)],
    ),
    (
        policy("pii", "detect", ("email", "credit_card")),
        "Mail a@example.com, card 4111 1111 1111 1111, order 4111111111111112",
        [
            ("email", "the text contains email data", "a@example.com"),
            ("credit_card", "the text contains credit card data", "4111 1111 1111 1111"),
        ],
    ),
    (
        policy("pii", "detect", ("email", "credit_card"), "No personal data."),
        "order 4111111111111112 for bob at example dot com",
        [],
    ),
]


@pytest.mark.parametrize(
    ("rule", "text", "expected"),
    RULE_CASES,
    ids=[f"{r.kind}-{i}" for i, (r, _, _) in enumerate(RULE_CASES)],
)
def test_rule(rule: Policy, text: str, expected: list[tuple[str, str, str | None]]) -> None:
    violations = check_policies([rule], text, {"input": {"name": "Ada"}}, no_judge)
    assert [(v["policy"], v["rule"], v["message"]) for v in violations] == [
        (rule.name, r, m) for r, m, _ in expected
    ]
    for violation, (_, _, piece) in zip(violations, expected, strict=True):
        if piece is None:
            assert "start" not in violation and "end" not in violation
        else:
            assert text[violation["start"] : violation["end"]] == piece
            assert piece in violation["excerpt"]


def test_violations_come_in_the_order_the_rules_are_listed() -> None:
    rules = [
        policy("b", "deny", "bad"),
        policy("a", "max_length", 5),
        policy("c", "detect", ("email",)),
    ]
    text = "bad news for x@example.com"
    violations = check_policies(rules, text, {}, no_judge)
    assert [(v["policy"], text[v["start"] : v["end"]]) for v in violations] == [
        ("b", "bad"),
        ("a", "ews for x@example.com"),
        ("c", "x@example.com"),
    ]


def test_a_judge_rule_asks_the_judge_and_keeps_its_violation() -> None:
    judge = Judge({"passes": False, "reason": "rude"})
    rule = policy("polite", "judge", {"rubric": "Be polite."})
    assert check_policies([rule], "go away", {}, judge) == [
        {"policy": "polite", "rule": "judge", "message": "the judge found: rude"}
    ]
    assert judge.asked == ["Rule: Be polite.\n\nText:\ngo away"]


# -- through a flow ----------------------------------------------------------------------
FLOW = """\
version: 1
name: guard
input: {type: object, required: [reply], properties: {reply: {type: string}}}
policies:
  no_refund_promise:
    deny: "(?i)we('ll| will) refund"
    message: Only billing staff promise refunds.
  no_personal_data: {detect: [credit_card, iban, email, phone, secret]}
  not_too_long: {max_length: 300}
steps:
  - id: check
    policies: [no_refund_promise, no_personal_data, not_too_long]
    text: "Reply: {{ input.reply }}"
    on_violation: VIOLATION
on_error: dead_letter
"""


def run_flow(tmp_path: Path, reply: str, violation: str = "human_review") -> tuple[Any, Any]:
    path = tmp_path / "guard.yaml"
    path.write_text(textwrap.dedent(FLOW).replace("VIOLATION", violation), encoding="utf-8")
    engine = Engine(SqlStore.memory(), llm=FakeLLM({}), clock=FakeClock(), rng=random.Random(0))
    return engine, engine.start(load_flow(path), {"reply": reply})


FLOW_CASES = [
    ("Thanks, your ticket is solved. Order 4111111111111112 ships today.", [], None),
    (
        "We will refund card 4111-1111-1111-1111 via DE89 3704 0044 0532 0130 00.",
        [
            ("no_refund_promise", "deny", "We will refund"),
            ("no_personal_data", "credit_card", "4111-1111-1111-1111"),
            ("no_personal_data", "iban", "DE89 3704 0044 0532 0130 00"),
        ],
        "policy no_refund_promise: Only billing staff promise refunds.; "
        "policy no_personal_data: the text contains credit card data; "
        "policy no_personal_data: the text contains iban data",
    ),
    (
        "Call me on +44 20 7946 0958 or use key AKIAIOSFODNN7EXAMPLE.",
        [
            ("no_personal_data", "phone", "+44 20 7946 0958"),
            ("no_personal_data", "secret", "AKIAIOSFODNN7EXAMPLE"),
        ],
        "policy no_personal_data: the text contains phone data; "
        "policy no_personal_data: the text contains secret data",
    ),
]


@pytest.mark.parametrize(("reply", "expected", "reason"), FLOW_CASES)
def test_policies_step(
    tmp_path: Path, reply: str, expected: list[tuple[str, str, str]], reason: str | None
) -> None:
    engine, result = run_flow(tmp_path, reply)
    text = f"Reply: {reply}"  # what the step checked: offsets index into it
    events = [e.data for e in engine.store.events(result.run_id) if e.kind == "policy"]
    assert [(v["policy"], v["rule"], text[v["start"] : v["end"]]) for v in events] == expected
    (checkpoint,) = engine.store.checkpoints(result.run_id)
    assert checkpoint.output == {"violations": events}
    assert result.reason == reason
    if not expected:
        assert (result.status, checkpoint.outcome) == ("completed", "ok")
        return
    assert (result.status, checkpoint.outcome, checkpoint.route) == (
        "escalated",
        "violation",
        "human_review",
    )
    run = engine.store.run(result.run_id)
    assert (run.failed_step, run.reason) == ("check", reason)


def test_policies_step_violation_route_to_dead_letter(tmp_path: Path) -> None:
    _, result = run_flow(tmp_path, "x@example.com", violation="dead_letter")
    assert (result.status, result.position) == ("failed", "dead_letter")
    assert result.reason == "policy no_personal_data: the text contains email data"
