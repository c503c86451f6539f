"""llm steps in-process with FakeLLM: structured output and repair, retries with
Retry-After, fallback models, confidence gates (field, logprobs, agreement, judge),
judge policies, run budgets, templates in input, and the usage each call records."""

from __future__ import annotations

import math
import random
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from runner.core.errors import LLMError
from runner.core.llm import Answer
from runner.kinds.confidence.logprobs import KIND as LOGPROBS_METHOD
from runner.lang.compiler import CompiledFlow
from runner.lang.load import load_flow
from runner.lang.model import ConfidenceGate
from runner.runtime.engine import Engine, RunResult
from runner.runtime.models import LLMResponse
from runner.store.records import Event
from runner.store.sql import SqlStore
from runner.testing import FakeClock, FakeLLM

CATEGORY = {
    "type": "object",
    "required": ["category"],
    "properties": {"category": {"enum": ["billing", "technical", "account", "other"]}},
}


def load(tmp_path: Path, text: str, name: str = "flow.yaml") -> CompiledFlow:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_flow(path)


def make_engine(llm: FakeLLM, clock: FakeClock | None = None) -> Engine:
    return Engine(SqlStore.memory(), llm=llm, clock=clock or FakeClock(), rng=random.Random(0))


def events(engine: Engine, result: RunResult, kind: str) -> list[Event]:
    return [e for e in engine.store.events(result.run_id) if e.kind == kind]


CLASSIFY = """\
version: 1
name: classify
models:
  default: {model: openai/gpt-4o-mini, temperature: 0}
steps:
  - id: classify
    llm:
      prompt: "Classify: {{ input.text }}"
      output:
        type: object
        required: [category]
        properties: {category: {enum: [billing, technical, account, other]}}
on_error: dead_letter
"""


# -- structured output and repair --------------------------------------------------------
def test_invalid_json_is_repaired_with_the_exact_problem_sent_back(tmp_path: Path) -> None:
    llm = FakeLLM({"classify": ["not json", {"category": "billing"}]})
    engine = make_engine(llm)
    result = engine.start(load(tmp_path, CLASSIFY), {"text": "I was charged twice"})

    assert result.status == "completed"
    assert engine.store.checkpoints(result.run_id)[-1].output == {"category": "billing"}
    assert len(llm.requests) == 2
    second = [dict(m) for m in llm.requests[1].messages]
    assert second[-2:] == [
        {"role": "assistant", "content": "not json"},
        {
            "role": "user",
            "content": "That answer is not valid: it is not JSON (Expecting "
            "value at line 1 column 1). Reply again with only the "
            "corrected JSON.",
        },
    ]
    invalid = events(engine, result, "llm_invalid")
    assert [e.data for e in invalid] == [
        {
            "repair": 0,
            "problem": "it is not JSON (Expecting value at line 1 column 1)",
            "answer": "not json",
        }
    ]  # what the model wrote is kept for its reviewer
    assert [e.data["repair"] for e in events(engine, result, "llm_call")] == [0, 1]


def test_an_answer_that_stays_invalid_takes_the_error_route(tmp_path: Path) -> None:
    wrong = {"category": "refund"}
    llm = FakeLLM({"classify": [wrong, wrong, wrong]})
    engine = make_engine(llm)
    result = engine.start(load(tmp_path, CLASSIFY), {"text": "money back"})

    problem = (
        "it does not match the JSON Schema: category: must be one of billing, "
        'technical, account, other; found "refund"'
    )
    assert result.status == "failed"
    assert result.position == "dead_letter"
    assert len(llm.requests) == 3  # the answer and 2 repairs
    run = engine.store.run(result.run_id)
    assert run.status == "failed"
    assert run.failed_step == "classify"
    assert run.error["kind"] == "invalid_output"
    assert run.error["message"] == f"the answer stayed invalid after 2 repairs: {problem}"
    assert [e.data for e in events(engine, result, "llm_invalid")] == [
        {"repair": n, "problem": problem, "answer": '{"category": "refund"}'} for n in range(3)
    ]


# -- retries and fallbacks ---------------------------------------------------------------
def test_rate_limit_waits_for_retry_after_then_succeeds(tmp_path: Path) -> None:
    text = CLASSIFY.replace(
        "default: {model: openai/gpt-4o-mini, temperature: 0}",
        "default: {model: openai/gpt-4o-mini, temperature: 0,\n"
        "             retry: {max_attempts: 3, interval_seconds: 1, jitter: false}}",
    )
    llm = FakeLLM(
        {"classify": [LLMError("slow down", "http_429", retry_after=3), {"category": "technical"}]}
    )
    clock = FakeClock()
    engine = make_engine(llm, clock)
    result = engine.start(load(tmp_path, text), {"text": "the app crashes"})

    assert result.status == "completed"
    assert clock.sleeps == [3.0]
    failed = events(engine, result, "attempt_failed")
    assert [
        (e.data["kind"], e.data["attempt"], e.data["wait"], e.data["model"]) for e in failed
    ] == [("http_429", 1, 3.0, "openai/gpt-4o-mini")]
    assert failed[0].data["message"] == "slow down"
    assert [e.data["attempts"] for e in events(engine, result, "llm_call")] == [2]
    assert engine.store.run(result.run_id).llm_calls == 2


FALLBACK = """\
version: 1
name: fallback
models:
  default:
    model: openai/primary
    timeout_seconds: 5
    retry: {max_attempts: 2, interval_seconds: 0.5, jitter: false}
    fallbacks: [backup]
  backup: {model: anthropic/backup}
steps:
  - id: classify
    llm:
      prompt: "Classify: {{ input.text }}"
      output: {type: object, required: [category]}
on_error: dead_letter
"""


def test_primary_times_out_then_the_fallback_model_answers(tmp_path: Path) -> None:
    llm = FakeLLM(
        {
            "classify": [
                LLMError("timed out", "timeout"),
                LLMError("timed out", "timeout"),
                {"category": "account"},
            ]
        }
    )
    clock = FakeClock()
    engine = make_engine(llm, clock)
    result = engine.start(load(tmp_path, FALLBACK), {"text": "locked out"})

    assert result.status == "completed"
    assert [r.model for r in llm.requests] == [
        "openai/primary",
        "openai/primary",
        "anthropic/backup",
    ]
    assert clock.sleeps == [0.5]
    calls = events(engine, result, "llm_call")
    assert [e.data["model"] for e in calls] == ["anthropic/backup"]
    failed = events(engine, result, "attempt_failed")
    assert [(e.data["model"], e.data["kind"], e.data["attempt"]) for e in failed] == [
        ("openai/primary", "timeout", 1),
        ("openai/primary", "timeout", 2),
    ]
    assert engine.store.checkpoints(result.run_id)[-1].output == {"category": "account"}


# -- confidence gates --------------------------------------------------------------------
FIELD = """\
version: 1
name: field
models:
  default: openai/gpt-4o-mini
steps:
  - id: classify
    llm:
      prompt: "Classify: {{ input.text }}"
      output:
        type: object
        required: [category, confidence]
        properties: {category: {type: string}, confidence: {type: number}}
    confidence: {score: "{{ output.confidence }}", min: 0.85}
on_error: dead_letter
"""


@pytest.mark.parametrize(
    ("score", "status", "passed", "reason"),
    [
        (0.4, "escalated", False, "confidence 0.400 below 0.85 (field)"),
        (0.85, "completed", True, None),
        (0.97, "completed", True, None),
    ],
)
def test_field_score_gate(
    tmp_path: Path, score: float, status: str, passed: bool, reason: str | None
) -> None:
    llm = FakeLLM({"classify": [{"category": "billing", "confidence": score}]})
    engine = make_engine(llm)
    result = engine.start(load(tmp_path, FIELD), {"text": "refund?"})

    assert result.status == status
    assert result.reason == reason
    gates = events(engine, result, "confidence")
    assert [e.data for e in gates] == [
        {"method": "field", "score": score, "min": 0.85, "passed": passed}
    ]
    if not passed:
        run = engine.store.run(result.run_id)
        assert (run.status, run.failed_step, run.reason) == ("escalated", "classify", reason)
        # the proposed output is kept for the reviewer
        assert engine.store.checkpoints(result.run_id)[-1].output == {
            "category": "billing",
            "confidence": score,
        }


LOGPROBS = CLASSIFY.replace(
    "on_error: dead_letter", "    confidence: {method: logprobs, min: MIN}\non_error: dead_letter"
)

# '{"category": "billing"}' in tokens; "billing" is spelled by "bill" + "ing".
ANSWER_TOKENS = ('{"', "category", '":', ' "', "bill", "ing", '"}')
P_BILL, P_TECH, P_ACC, P_THE, P_ING = 0.6, 0.25, 0.1, 0.05, 0.9


def logprobs_response() -> LLMResponse:
    alternatives = {
        # the chosen first token, its rivals among the allowed values ("tech" starts
        # technical, "acc" starts account) and a token that starts no allowed value
        "bill": (
            ("bill", math.log(P_BILL)),
            ("tech", math.log(P_TECH)),
            ("acc", math.log(P_ACC)),
            ("the", math.log(P_THE)),
        ),
        "ing": (("ing", math.log(P_ING)), ("ed", math.log(0.1))),
    }
    tokens = tuple(
        (t, alternatives[t][0][1], alternatives[t]) if t in alternatives else (t, 0.0, ((t, 0.0),))
        for t in ANSWER_TOKENS
    )
    return LLMResponse(
        text="".join(ANSWER_TOKENS),
        logprobs=tokens,
        prompt_tokens=20,
        completion_tokens=7,
        cost_usd=0.0,
        model="openai/gpt-4o-mini",
    )


# By hand: "bill" against its rivals that start an allowed value ("the" starts none, so
# the answer's schema rules it out). Once "bill" is written only "billing" can follow,
# so "ing" decides nothing and its own probability does not count.
EXPECTED_SHARE = P_BILL / (P_BILL + P_TECH + P_ACC)  # 0.6 / 0.95 = 0.6316


def score_of(tokens: list[tuple[str, dict[str, float]]], value: Any, schema: Any) -> float:
    """The logprobs score of an answer spelled by `tokens`, each with its alternatives'
    probabilities (the token's own first)."""
    listed = tuple(
        (
            text,
            math.log(next(iter(alts.values()))),
            tuple((a, math.log(p)) for a, p in alts.items()),
        )
        for text, alts in tokens
    )
    answer = Answer(value, LLMResponse(text="".join(t for t, _ in tokens), logprobs=listed))
    gate = ConfidenceGate(method="logprobs", min=0.5, name="logprobs")
    step = cast(Any, SimpleNamespace(id="s", output_schema=schema))
    scored = LOGPROBS_METHOD.score(cast(Any, None), step, [], answer, gate, {})
    assert scored.score is not None
    return scored.score


def test_logprob_score_is_the_chosen_values_share_against_its_rivals() -> None:
    response = logprobs_response()
    assert response.text == '{"category": "billing"}'
    tokens = [(t[0], dict((a, math.exp(lp)) for a, lp in t[2])) for t in response.logprobs or ()]
    score = score_of(tokens, {"category": "billing"}, CATEGORY)
    assert score == pytest.approx(0.6315789474, abs=1e-9)
    assert score == pytest.approx(EXPECTED_SHARE)


def test_logprob_score_folds_case_and_counts_unlisted_mass_as_a_possible_rival() -> None:
    # "Bill" spells billing too; 0.1 of the mass is not among the alternatives listed.
    tokens = [
        ('{"category": "', {'{"category": "': 1.0}),
        ("bill", {"bill": 0.5, "Bill": 0.2, "tech": 0.2}),
        ('ing"}', {'ing"}': 0.3}),
    ]
    score = score_of(tokens, {"category": "billing"}, CATEGORY)
    assert score == pytest.approx(0.7 / (0.7 + 0.2 + 0.1))


def test_logprob_score_follows_a_value_that_shares_its_start_with_a_rival() -> None:
    # "pay" and "payout" share "pay": the closing quote decides between them.
    schema = {"type": "object", "properties": {"action": {"enum": ["pay", "payout", "refund"]}}}
    tokens = [
        ('{"action": "', {'{"action": "': 1.0}),
        ("pay", {"pay": 0.9, "ref": 0.1}),
        ('"}', {'"}': 0.7, "out": 0.3}),
    ]
    assert score_of(tokens, {"action": "pay"}, schema) == pytest.approx(0.9 * 0.7)


def test_logprob_score_is_the_lowest_field_and_reads_booleans() -> None:
    schema = {
        "type": "object",
        "properties": {
            "category": {"enum": ["billing", "technical"]},
            "urgent": {"type": "boolean"},
        },
    }
    tokens = [
        ('{"category": "', {'{"category": "': 1.0}),
        ("billing", {"billing": 0.9, "technical": 0.1}),
        ('", "urgent": ', {'", "urgent": ': 1.0}),
        ("true", {"true": 0.6, "false": 0.4}),
        ("}", {"}": 1.0}),
    ]
    value = {"category": "billing", "urgent": True}
    assert score_of(tokens, value, schema) == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("minimum", "status", "passed"),
    [
        ("0.6", "completed", True),
        ("0.65", "escalated", False),
    ],
)
def test_logprobs_gate(tmp_path: Path, minimum: str, status: str, passed: bool) -> None:
    llm = FakeLLM({"classify": [logprobs_response()]})
    engine = make_engine(llm)
    result = engine.start(load(tmp_path, LOGPROBS.replace("MIN", minimum)), {"text": "x"})

    assert result.status == status
    assert llm.requests[0].logprobs is True
    (gate,) = events(engine, result, "confidence")
    assert gate.data["method"] == "logprobs"
    assert gate.data["score"] == pytest.approx(EXPECTED_SHARE)
    assert gate.data["min"] == float(minimum)
    assert gate.data["passed"] is passed
    assert gate.data["fields"] == ["category"]
    assert gate.data["detail"]["probabilities"]["category"] == pytest.approx(EXPECTED_SHARE)
    if not passed:
        assert result.reason == "confidence 0.632 below 0.65 (logprobs of category)"


def test_logprobs_gate_without_logprobs_takes_the_error_route(tmp_path: Path) -> None:
    bare = LLMResponse(
        text='{"category": "billing"}',
        logprobs=None,
        prompt_tokens=5,
        completion_tokens=5,
        model="openai/gpt-4o-mini",
    )
    engine = make_engine(FakeLLM({"classify": [bare]}))
    result = engine.start(load(tmp_path, LOGPROBS.replace("MIN", "0.5")), {"text": "x"})

    assert result.status == "failed"
    run = engine.store.run(result.run_id)
    assert run.failed_step == "classify"
    assert run.error["message"] == (
        "model openai/gpt-4o-mini returned no token logprobs, which the logprobs gate of step "
        "classify needs: use a model that gives them, or another confidence method"
    )
    assert events(engine, result, "confidence") == []


AGREEMENT = CLASSIFY.replace(
    "on_error: dead_letter",
    "    confidence: {method: agreement, samples: 5, temperature: 0.9, min: MIN}\n"
    "on_error: dead_letter",
)
SAMPLES = [
    {"category": "billing"},
    {"category": "technical"},
    {"category": "billing"},
    {"category": "account"},
    {"category": "billing"},
]


@pytest.mark.parametrize(
    ("minimum", "status", "passed", "reason"),
    [
        ("0.5", "completed", True, None),
        ("0.7", "escalated", False, "confidence 0.600 below 0.7 (agreement of category)"),
    ],
)
def test_agreement_gate(
    tmp_path: Path, minimum: str, status: str, passed: bool, reason: str | None
) -> None:
    llm = FakeLLM({"classify": [{"category": "billing"}, *SAMPLES]})
    engine = make_engine(llm)
    result = engine.start(load(tmp_path, AGREEMENT.replace("MIN", minimum)), {"text": "x"})

    assert result.status == status
    assert result.reason == reason
    # the answer at the model's temperature, then five samples at the gate's
    assert [r.temperature for r in llm.requests] == [0, 0.9, 0.9, 0.9, 0.9, 0.9]
    (gate,) = events(engine, result, "confidence")
    assert gate.data == {
        "method": "agreement",
        "score": 0.6,
        "min": float(minimum),
        "passed": passed,
        "fields": ["category"],
        "detail": {"samples": 5, "agreeing": 3, "invalid": 0, "temperature": 0.9},
    }
    assert engine.store.checkpoints(result.run_id)[-1].output == {"category": "billing"}
    assert engine.store.run(result.run_id).llm_calls == 6


def test_an_agreement_sample_that_stays_invalid_is_a_dissent(tmp_path: Path) -> None:
    broken = LLMResponse(text="not json", model="openai/gpt-4o-mini")
    answers: list[Any] = [{"category": "billing"}, {"category": "billing"}]
    answers += [broken, broken, broken]  # one sample, repaired twice, stays invalid
    answers += [{"category": "billing"}] * 3
    llm = FakeLLM({"classify": answers})
    engine = make_engine(llm)
    result = engine.start(load(tmp_path, AGREEMENT.replace("MIN", "0.7")), {"text": "x"})

    (gate,) = events(engine, result, "confidence")
    assert gate.data["score"] == pytest.approx(0.8)
    assert gate.data["detail"]["invalid"] == 1
    assert result.status == "completed"


JUDGE = """\
version: 1
name: judged
models:
  default: openai/gpt-4o-mini
  grader: {model: anthropic/grader, temperature: 0}
steps:
  - id: classify
    llm:
      prompt: "Classify: {{ input.text }}"
      output: {type: object, required: [category]}
    confidence: {method: judge, judge: grader, min: 0.5}
on_error: dead_letter
"""


@pytest.mark.parametrize(
    ("score", "status", "passed"),
    [
        (0.2, "escalated", False),
        (0.8, "completed", True),
    ],
)
def test_judge_gate(tmp_path: Path, score: float, status: str, passed: bool) -> None:
    llm = FakeLLM({"classify": [{"category": "billing"}, {"score": score}]})
    engine = make_engine(llm)
    result = engine.start(load(tmp_path, JUDGE), {"text": "x"})

    assert result.status == status
    assert [r.model for r in llm.requests] == ["openai/gpt-4o-mini", "anthropic/grader"]
    judged = llm.requests[1]
    assert "Classify: x" in judged.messages[-1]["content"]
    assert '{"category": "billing"}' in judged.messages[-1]["content"]
    (gate,) = events(engine, result, "confidence")
    assert gate.data == {
        "method": "judge",
        "score": score,
        "min": 0.5,
        "passed": passed,
        "detail": {"judge": "grader"},
    }
    if not passed:
        assert result.reason == "confidence 0.200 below 0.5 (judge)"
    assert [e.data["model"] for e in events(engine, result, "llm_call")] == [
        "openai/gpt-4o-mini",
        "anthropic/grader",
    ]


# -- judge policies ----------------------------------------------------------------------
JUDGE_POLICY = """\
version: 1
name: tone
models:
  default: openai/gpt-4o-mini
  grader: anthropic/grader
policies:
  short: {max_length: 500}
  polite:
    judge: {model: grader, rubric: The reply is polite to the customer.}
steps:
  - id: check
    policies: [polite]
    text: "{{ input.reply }}"
    on_violation: ROUTE
  - id: after
    policies: [short]
    text: "{{ input.reply }}"
on_error: dead_letter
"""


@pytest.mark.parametrize(
    ("route", "status", "position"),
    [
        ("human_review", "escalated", "human_review"),
        ("dead_letter", "failed", "dead_letter"),
    ],
)
def test_judge_policy_violation_takes_the_violation_route(
    tmp_path: Path, route: str, status: str, position: str
) -> None:
    text = JUDGE_POLICY.replace("ROUTE", route)
    llm = FakeLLM({"check": [{"passes": False, "reason": "It calls the customer lazy."}]})
    engine = make_engine(llm)
    result = engine.start(load(tmp_path, text), {"reply": "Read the manual, lazy."})

    assert (result.status, result.position) == (status, position)
    assert result.reason == "policy polite: the judge found: It calls the customer lazy."
    assert [r.model for r in llm.requests] == ["anthropic/grader"]
    request = llm.requests[0].messages[-1]["content"]
    assert request == (
        "Rule: The reply is polite to the customer.\n\nText:\nRead the manual, lazy."
    )
    (policy,) = events(engine, result, "policy")
    assert policy.data == {
        "policy": "polite",
        "rule": "judge",
        "message": "the judge found: It calls the customer lazy.",
    }


def test_judge_policy_pass_continues(tmp_path: Path) -> None:
    text = JUDGE_POLICY.replace("ROUTE", "human_review")
    llm = FakeLLM({"check": [{"passes": True, "reason": "Courteous."}]})
    engine = make_engine(llm)
    result = engine.start(load(tmp_path, text), {"reply": "Happy to help!"})

    assert result.status == "completed"
    assert events(engine, result, "policy") == []
    assert [c.step_id for c in engine.store.checkpoints(result.run_id)] == ["check", "after"]


# -- budgets -----------------------------------------------------------------------------
BUDGET = """\
version: 1
name: budgeted
models:
  default: openai/gpt-4o-mini
budget: BUDGET
steps:
  - id: one
    llm: {prompt: "one {{ input.text }}"}
  - id: two
    llm: {prompt: "two {{ input.text }}"}
  - id: three
    llm: {prompt: "three {{ input.text }}"}
on_error: dead_letter
"""
APOLOGY = """\
    next: done
  - id: apology
    policies: [short]
    text: "Sorry, this took too long."
policies:
  short: {max_length: 100}
on_error: dead_letter
"""


@pytest.mark.parametrize(
    ("budget", "apology", "status", "steps", "last"),
    [
        (
            "{max_llm_calls: 2}",
            "",
            "escalated",
            ["one", "two", "three"],
            ("three", "budget_exceeded", "human_review"),
        ),
        (
            "{max_llm_calls: 2, on_exceeded: dead_letter}",
            "",
            "failed",
            ["one", "two", "three"],
            ("three", "budget_exceeded", "dead_letter"),
        ),
        # the budget route is the only way into `apology`: that makes it reachable
        (
            "{max_llm_calls: 2, on_exceeded: apology}",
            APOLOGY,
            "completed",
            ["one", "two", "three", "apology"],
            ("apology", "ok", "done"),
        ),
        # `apology` also reachable through three's on_error
        (
            "{max_llm_calls: 2, on_exceeded: apology}",
            "    on_error: apology\n" + APOLOGY,
            "completed",
            ["one", "two", "three", "apology"],
            ("apology", "ok", "done"),
        ),
    ],
    ids=["default-human-review", "dead-letter", "step-route", "step-route-also-on-error"],
)
def test_budget_reached_takes_on_exceeded(
    tmp_path: Path,
    budget: str,
    apology: str,
    status: str,
    steps: list[str],
    last: tuple[str, str, str],
) -> None:
    text = BUDGET.replace("BUDGET", budget)
    if apology:
        text = text.replace("on_error: dead_letter\n", apology)
    llm = FakeLLM({"one": ["first"], "two": ["second"], "three": ["third"]})
    engine = make_engine(llm)
    result = engine.start(load(tmp_path, text), {"text": "t"})

    message = "budget reached: 2 model calls used, the limit is 2"
    assert result.status == status
    assert [r.step_id for r in llm.requests] == ["one", "two"]  # step three never asked
    checkpoints = engine.store.checkpoints(result.run_id)
    assert [c.step_id for c in checkpoints] == steps
    assert checkpoints[2].outcome == "budget_exceeded"
    assert (checkpoints[-1].step_id, checkpoints[-1].outcome, checkpoints[-1].route) == last
    assert [(e.step_id, e.data["message"]) for e in events(engine, result, "budget")] == [
        ("three", message)
    ]
    run = engine.store.run(result.run_id)
    assert run.llm_calls == 2
    if status != "completed":
        assert result.reason == message
        assert (run.failed_step, run.reason) == ("three", message)


# -- templates in data -------------------------------------------------------------------
@pytest.mark.parametrize(
    "value", ["{{ 7*7 }}", "{% for x in range(3) %}x{% endfor %}", "{{ env.HOME }}"]
)
def test_template_syntax_in_input_reaches_the_prompt_literally(tmp_path: Path, value: str) -> None:
    llm = FakeLLM({"classify": [{"category": "other"}]})
    engine = make_engine(llm)
    result = engine.start(load(tmp_path, CLASSIFY), {"text": value})

    assert result.status == "completed"
    assert llm.requests[0].messages[-1] == {"role": "user", "content": f"Classify: {value}"}
    assert "49" not in llm.requests[0].messages[-1]["content"]


# -- usage -------------------------------------------------------------------------------
USAGE = """\
version: 1
name: usage
models:
  default: openai/gpt-4o-mini
  big: openai/gpt-4o
steps:
  - id: first
    llm: {prompt: "a {{ input.text }}"}
  - id: second
    llm: {prompt: "b {{ input.text }}", model: big}
on_error: dead_letter
"""


def test_tokens_and_cost_are_recorded_per_call(tmp_path: Path) -> None:
    llm = FakeLLM(
        {
            "first": [
                LLMResponse(
                    text="one",
                    prompt_tokens=120,
                    completion_tokens=30,
                    cost_usd=0.0015,
                    latency_ms=212.34,
                    model="openai/gpt-4o-mini",
                )
            ],
            "second": [
                LLMResponse(
                    text="two",
                    prompt_tokens=400,
                    completion_tokens=80,
                    cost_usd=0.012,
                    latency_ms=950.0,
                    model="openai/gpt-4o",
                )
            ],
        }
    )
    engine = make_engine(llm)
    result = engine.start(load(tmp_path, USAGE), {"text": "t"})

    assert result.status == "completed"
    calls = events(engine, result, "llm_call")
    assert [(e.step_id, e.data) for e in calls] == [
        (
            "first",
            {
                "model": "openai/gpt-4o-mini",
                "attempts": 1,
                "repair": 0,
                "prompt_tokens": 120,
                "completion_tokens": 30,
                "cost_usd": 0.0015,
                "latency_ms": 212.3,
            },
        ),
        (
            "second",
            {
                "model": "openai/gpt-4o",
                "attempts": 1,
                "repair": 0,
                "prompt_tokens": 400,
                "completion_tokens": 80,
                "cost_usd": 0.012,
                "latency_ms": 950.0,
            },
        ),
    ]
    run = engine.store.run(result.run_id)
    assert (run.llm_calls, run.tokens) == (2, 630)
    assert run.cost_usd == pytest.approx(0.0135)


def test_a_model_without_a_price_counts_zero_cost(tmp_path: Path) -> None:
    llm = FakeLLM(
        {
            "first": [
                LLMResponse(text="one", prompt_tokens=10, completion_tokens=2, cost_usd=None)
            ],
            "second": [
                LLMResponse(text="two", prompt_tokens=10, completion_tokens=3, cost_usd=0.5)
            ],
        }
    )
    engine = make_engine(llm)
    result = engine.start(load(tmp_path, USAGE), {"text": "t"})

    assert [e.data["cost_usd"] for e in events(engine, result, "llm_call")] == [None, 0.5]
    run = engine.store.run(result.run_id)
    assert (run.tokens, run.cost_usd) == (25, 0.5)
