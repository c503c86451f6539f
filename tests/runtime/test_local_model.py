"""Integration with the real in-process model `local/smollm2`, through litellm over HTTP
to llama.cpp's OpenAI-compatible server. Plumbing only, never labels: a tiny model's
choices are not what is under test, the path from a flow to the model and back is.

The model file (~90 MB) is fetched once into RUNNER_MODEL_CACHE (default
~/.cache/runner/models). Deselect with `-m "not local_model"`.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.kinds.confidence.logprobs import value_probability
from runner.kinds.confidence.scores import choices
from runner.lang.load import load_flow
from runner.lang.schema import instance_problems
from runner.runtime.engine import Engine
from runner.runtime.local_models import LocalModels
from runner.runtime.models import LiteLLMClient, LLMRequest, LLMResponse
from runner.runtime.session import parse_answer
from runner.store.sql import SqlStore

pytestmark = pytest.mark.local_model

MODEL = "local/smollm2"
MAX_TOKENS = 40
SCHEMA = {
    "type": "object",
    "required": ["category"],
    "additionalProperties": False,
    "properties": {"category": {"enum": ["billing", "technical", "account", "other"]}},
}
PROMPT = (
    "Classify this support ticket as billing, technical, account or other.\n"
    "Ticket: I was charged twice for my subscription this month."
)


@pytest.fixture(scope="module")
def client() -> Iterator[LiteLLMClient]:
    local = LocalModels()
    try:
        yield LiteLLMClient(local)
    finally:
        local.close()


@pytest.fixture(scope="module")
def answer(client: LiteLLMClient) -> LLMResponse:
    """One schema-constrained answer with logprobs, shared by the plumbing checks."""
    return client.complete(
        LLMRequest(
            model=MODEL,
            messages=[{"role": "user", "content": PROMPT}],
            schema=SCHEMA,
            temperature=0,
            max_tokens=MAX_TOKENS,
            timeout_seconds=120,
            logprobs=True,
            step_id="classify",
        )
    )


def test_a_schema_constrained_answer_parses_and_validates(answer: LLMResponse) -> None:
    value, problem = parse_answer(answer.text, SCHEMA)
    assert problem == "", answer.text
    assert instance_problems(SCHEMA, value) == []
    assert answer.tool_calls == ()
    assert answer.model == MODEL


def test_logprobs_come_back_and_score_in_the_unit_interval(answer: LLMResponse) -> None:
    assert answer.logprobs, "the local model returned no logprobs"
    # llama.cpp may strip a ``` fence from the content that the tokens still spell
    assert answer.text.strip() in "".join(token for token, _, _ in answer.logprobs)
    for token, logprob, alternatives in answer.logprobs:
        assert isinstance(token, str)
        assert math.isfinite(logprob) and logprob <= 0.0
        assert alternatives, f"no alternatives for token {token!r}"
        assert all(math.isfinite(lp) and lp <= 0.0 for _, lp in alternatives)
    value, _ = parse_answer(answer.text, SCHEMA)
    (choice,) = choices(SCHEMA)
    score = value_probability(answer.logprobs, choice, value["category"])
    assert isinstance(score, float)
    assert 0.0 <= score <= 1.0


def test_usage_is_counted(answer: LLMResponse) -> None:
    assert answer.prompt_tokens > 0
    assert 0 < answer.completion_tokens <= MAX_TOKENS
    assert answer.cost_usd == 0.0  # a local model costs nothing
    assert answer.latency_ms > 0


FLOW = f"""\
version: 1
name: local
models:
  default: {{model: {MODEL}, temperature: 0, max_tokens: {MAX_TOKENS}, timeout_seconds: 120}}
steps:
  - id: classify
    llm:
      prompt: |
        Classify this support ticket as billing, technical, account or other.
        Ticket: {{{{ input.ticket }}}}
      output:
        type: object
        required: [category]
        additionalProperties: false
        properties:
          category: {{enum: [billing, technical, account, other]}}
    confidence: {{method: logprobs, min: 0}}
on_error: dead_letter
"""


def test_a_flow_with_a_logprobs_gate_runs_on_the_local_model(
    tmp_path: Path, client: LiteLLMClient
) -> None:
    path = tmp_path / "local.yaml"
    path.write_text(textwrap.dedent(FLOW), encoding="utf-8")
    engine = Engine(SqlStore.memory(), llm=client)
    result = engine.start(load_flow(path), {"ticket": "The app crashes when I log in."})

    assert result.status == "completed", (result.reason, result.error)
    (checkpoint,) = engine.store.checkpoints(result.run_id)
    assert instance_problems(SCHEMA, checkpoint.output) == []
    events = engine.store.events(result.run_id)
    (gate,) = [e.data for e in events if e.kind == "confidence"]
    assert gate["method"] == "logprobs"
    assert 0.0 <= gate["score"] <= 1.0
    assert (gate["min"], gate["passed"]) == (0, True)
    calls = [e.data for e in events if e.kind == "llm_call"]
    assert [c["model"] for c in calls] == [MODEL]
    assert calls[0]["prompt_tokens"] > 0 and calls[0]["completion_tokens"] > 0
    run = engine.store.run(result.run_id)
    assert run.llm_calls == 1
    assert run.tokens == calls[0]["prompt_tokens"] + calls[0]["completion_tokens"]


SHARED = {
    "type": "object",
    "required": ["request"],
    "additionalProperties": False,
    "properties": {"request": {"enum": ["password reset", "password change", "other"]}},
}


def test_a_multi_token_value_scores_its_whole_sequence(client: LiteLLMClient) -> None:
    """Two allowed values share their first token ("password"), so the choice is made at
    a later token: the score is the product of the shares of every deciding token of the
    value, not the first token's probability."""
    response = client.complete(
        LLMRequest(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": "What does the customer want: password reset, password change "
                    "or other?\nTicket: I forgot my password and the reset link never came.",
                }
            ],
            schema=SHARED,
            temperature=0,
            max_tokens=MAX_TOKENS,
            timeout_seconds=120,
            logprobs=True,
            step_id="classify",
        )
    )
    value, problem = parse_answer(response.text, SHARED)
    assert problem == "", response.text
    chosen = value["request"]
    assert response.logprobs
    text = "".join(t for t, _, _ in response.logprobs)
    start = text.index(f'"{chosen}"') + 1
    spelled, shares, position = "", [], 0
    for token, logprob, alternatives in response.logprobs:
        begins, position = position, position + len(token)
        if begins < start or begins >= start + len(chosen) + 1:
            continue
        live = [v for v in SHARED["properties"]["request"]["enum"] if v != chosen]
        live = [v for v in live if (v + '"').startswith(spelled)]
        if live:  # a rival is still possible: this token decides
            probability = {a: math.exp(lp) for a, lp in alternatives}
            probability.setdefault(token, math.exp(logprob))
            mine = sum(p for a, p in probability.items() if _fits(chosen + '"', spelled + a))
            theirs = sum(
                p
                for a, p in probability.items()
                if not _fits(chosen + '"', spelled + a)
                and any(_fits(v + '"', spelled + a) for v in live)
            )
            shares.append(mine / (mine + theirs + max(0.0, 1 - sum(probability.values()))))
        spelled += token
    assert chosen.startswith("password")
    assert len(shares) >= 2, response.logprobs  # the choice is made over several tokens
    (choice,) = choices(SHARED)
    score = value_probability(response.logprobs, choice, chosen)
    assert score == pytest.approx(math.prod(shares), rel=1e-9)
    assert score < shares[0]  # a later token of the value weighed in


def _fits(target: str, written: str) -> bool:
    return target.startswith(written) or written.startswith(target)
