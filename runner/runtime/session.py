"""llm steps: prompts, structured output with repair, retries and fallback models,
confidence gates, budgets, and model-judged policy rules.

Every model call is an `llm_call` event (model, tokens, cost, latency); every gate a
`confidence` event (method, score, threshold, pass or fail), whatever its result.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runner.core import templates
from runner.core.errors import LLMError, StepError
from runner.runtime.models import LLMRequest, LLMResponse
from runner.lang.model import Budget, ConfidenceGate, Flow, LlmStep, Model, Policy, Step
from runner.store.records import Event
from runner.runtime.retry import Attempt, Retrier, RetriesExhaustedError
from runner.lang.schema import instance_problems

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
JUDGE_SCHEMA = {"type": "object", "required": ["score"],
                "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1}}}
RUBRIC_SCHEMA = {"type": "object", "required": ["passes", "reason"],
                 "properties": {"passes": {"type": "boolean"}, "reason": {"type": "string"}}}


class BudgetExceededError(StepError):
    """A run reached one of its flow's budget limits before a model call."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "budget_exceeded")


@dataclass
class Usage:
    """Model use of one run so far (what budgets are checked against)."""

    llm_calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0

    def exceeded(self, budget: Budget | None) -> str | None:
        if budget is None:
            return None
        limits = (("model calls", self.llm_calls, budget.max_llm_calls),
                  ("tokens", self.tokens, budget.max_tokens),
                  ("cost in USD", self.cost_usd, budget.max_cost_usd))
        for what, used, limit in limits:
            if limit is not None and used >= limit:
                return f"budget reached: {used:g} {what} used, the limit is {limit:g}"
        return None


@dataclass(frozen=True)
class Answer:
    """A model answer that passed its schema: the value and the response it came in."""

    value: Any
    response: LLMResponse


@dataclass
class Session:
    """Model calls made for one step: retries, fallbacks, repairs, usage and events."""

    flow: Flow
    step: Step
    client: Any
    retrier: Callable[[Any, Callable[[Attempt], None]], Retrier]
    usage: Usage
    environ: Mapping[str, str] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)

    def model(self, name: str | None) -> Model:
        """A named model of the flow, or a model string used directly."""
        name = name or "default"
        return self.flow.models.get(name) or Model(name=name, model=name)

    def api_base(self, model: Model) -> str | None:
        if model.api_base is None:
            return None
        return str(templates.render(model.api_base, {"env": self.environ}))

    def ask(self, messages: Sequence[Mapping[str, Any]], schema: Any, *, model: str | None,
            repairs: int, logprobs: bool = False, temperature: float | None = None,
            tools: Sequence[Mapping[str, Any]] = ()) -> Answer:
        """Ask until the answer fits `schema`, sending each invalid one back with its
        validation error, at most `repairs` times."""
        conversation = list(messages)
        problem = ""
        for repair in range(repairs + 1):
            # With tools on offer the model must be free to ask for them: the schema is
            # then checked on the final answer only, not imposed on every turn.
            response = self.call(conversation, None if tools else schema, model=model,
                                 logprobs=logprobs,
                                 temperature=temperature, tools=tools, repair=repair)
            if response.tool_calls:
                return Answer(None, response)
            value, problem = parse_answer(response.text, schema)
            if not problem:
                return Answer(value, response)
            self.events.append(Event("llm_invalid", self.step.id,
                                     {"repair": repair, "problem": problem}))
            conversation += [{"role": "assistant", "content": response.text},
                             {"role": "user", "content": f"That answer is not valid: {problem}"
                              ". Reply again with only the corrected JSON."}]
        raise LLMError(f"the answer stayed invalid after {repairs} repair"
                       f"{'s' * (repairs != 1)}: {problem}", "invalid_output")

    def call(self, messages: Sequence[Mapping[str, Any]], schema: Any, *,
             model: str | None, logprobs: bool = False, temperature: float | None = None,
             tools: Sequence[Mapping[str, Any]] = (), repair: int = 0) -> LLMResponse:
        """One answer, with the model's retries, then each fallback model in turn."""
        primary = self.model(model)
        failure: RetriesExhaustedError | None = None
        for candidate in [primary, *(self.model(n) for n in primary.fallbacks)]:
            reached = self.usage.exceeded(self.flow.budget)
            if reached:
                raise BudgetExceededError(reached)
            request = LLMRequest(
                model=candidate.model, messages=messages, schema=schema,
                temperature=candidate.temperature if temperature is None else temperature,
                max_tokens=candidate.max_tokens,
                timeout_seconds=self.step.timeout_seconds or candidate.timeout_seconds,
                logprobs=logprobs, tools=tools, step_id=self.step.id,
                api_base=self.api_base(candidate))
            failed: list[Attempt] = []

            def attempt(request: LLMRequest = request) -> LLMResponse:
                response: LLMResponse = self.client.complete(request)
                return response

            try:
                response = self.retrier(self.step.retry or candidate.retry,
                                        failed.append).call(attempt)
            except RetriesExhaustedError as exc:
                self._failed(candidate, exc.attempts)
                failure = exc
                continue
            self._failed(candidate, failed)
            self._record(candidate, response, len(failed) + 1, repair)
            return response
        assert failure is not None
        raise failure

    def _failed(self, model: Model, attempts: list[Attempt]) -> None:
        self.events += [Event("attempt_failed", self.step.id, {
            "model": model.model, "attempt": a.number, "kind": a.kind, "message": a.message,
            "wait": a.wait_seconds}) for a in attempts]
        self.usage.llm_calls += len(attempts)

    def _record(self, model: Model, response: LLMResponse, attempts: int, repair: int) -> None:
        tokens = response.prompt_tokens + response.completion_tokens
        self.usage.llm_calls += 1
        self.usage.tokens += tokens
        self.usage.cost_usd += response.cost_usd or 0.0
        self.events.append(Event("llm_call", self.step.id, {
            "model": model.model, "attempts": attempts, "repair": repair,
            "prompt_tokens": response.prompt_tokens,
            "completion_tokens": response.completion_tokens, "cost_usd": response.cost_usd,
            "latency_ms": round(response.latency_ms, 1)}))


def parse_answer(text: str, schema: Any) -> tuple[Any, str]:
    """(value, "") for an answer that fits the schema, else (None, what is wrong)."""
    if schema is None:
        return text, ""
    fenced = _FENCE.match(text)
    body = fenced.group(1) if fenced else text.strip()
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        return None, f"it is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    problems = instance_problems(schema, value)
    if problems:
        return None, "it does not match the JSON Schema: " + "; ".join(problems[:5])
    return value, ""


def messages_for(system: str | None, prompt: str, ctx: Mapping[str, Any]) -> list[dict[str, str]]:
    """The conversation a step starts with: its system prompt and its prompt, rendered."""
    rendered = [] if system is None else [{"role": "system",
                                           "content": str(templates.render(system, ctx))}]
    return [*rendered, {"role": "user", "content": str(templates.render(prompt, ctx))}]


# -- confidence ----------------------------------------------------------------------------
def run_llm_step(session: Session, step: LlmStep,
                 ctx: Mapping[str, Any]) -> tuple[str, Any, str | None]:
    """(outcome, output, reason) of an llm step: ok, or low_confidence below its gate."""
    messages = messages_for(step.system, step.prompt, ctx)
    gate = step.confidence
    score: float | None
    if gate is not None and gate.method == "agreement":
        output, score = _agreement(session, step, messages, gate)
    else:
        logprobs = gate is not None and gate.method == "logprobs"
        answer = session.ask(messages, step.output_schema, model=step.model,
                             repairs=step.repairs, logprobs=logprobs)
        output = answer.value
        score = None if gate is None else _score(session, step, gate, answer, messages, ctx)
    if gate is None:
        return "ok", output, None
    passed = score is not None and score >= gate.min
    session.events.append(Event("confidence", step.id, {
        "method": gate.method, "score": score, "min": gate.min, "passed": passed}))
    if passed:
        return "ok", output, None
    shown = "no valid score" if score is None else f"confidence {score:.3f}"
    return "low_confidence", output, f"{shown} below {gate.min:g} ({gate.method})"


def _score(session: Session, step: LlmStep, gate: ConfidenceGate, answer: Answer,
           messages: Sequence[Mapping[str, Any]], ctx: Mapping[str, Any]) -> float | None:
    if gate.method == "field":
        value = templates.render(gate.score or "", {**ctx, "output": answer.value})
        return _unit(value)
    if gate.method == "logprobs":
        return logprob_score(answer.response, answer.value, step.output_schema)
    judged = session.ask(
        [{"role": "system", "content": "You grade answers. Reply with JSON: {\"score\": a "
          "number from 0 to 1, how likely the answer is correct and appropriate}."},
         {"role": "user", "content": f"Task:\n{messages[-1]['content']}\n\nAnswer:\n"
          f"{json.dumps(answer.value, ensure_ascii=False)}"}],
        JUDGE_SCHEMA, model=gate.judge, repairs=1)
    return _unit(judged.value["score"])


def _unit(value: Any) -> float | None:
    """A score in [0, 1], or None for anything else (which never passes a gate)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0.0 <= number <= 1.0 else None


def _enum_field(value: Any, schema: Any) -> tuple[str, list[str]] | None:
    """The answer's decisive part: (its value, the allowed values) for the first enum
    field (or the answer itself when its schema is an enum of strings)."""
    if isinstance(schema, dict) and "enum" in schema and isinstance(value, str):
        return value, [str(v) for v in schema["enum"]]
    properties = schema.get("properties", {}) if isinstance(schema, dict) else {}
    for name, sub in properties.items():
        if isinstance(sub, dict) and "enum" in sub and isinstance(value, dict) \
                and isinstance(value.get(name), str):
            return str(value[name]), [str(v) for v in sub["enum"]]
    return None


def decisive_value(value: Any, schema: Any) -> str | None:
    """The value of the answer's first enum field, if it has one."""
    found = _enum_field(value, schema)
    return found[0] if found else None


def logprob_score(response: LLMResponse, value: Any, schema: Any) -> float:
    """How sure the model was of its choice. For an enum field: the probability of the
    chosen value's first token against the first tokens of the other allowed values
    (from the token's alternatives), times the probability of the value's remaining
    tokens. Without an enum: the geometric mean probability of all the answer's tokens."""
    tokens = response.logprobs
    if not tokens:
        raise LLMError(f"model {response.model} returned no token logprobs; use another "
                       "confidence method with it", "http_4xx")
    found = _enum_field(value, schema)
    span = _value_tokens(tokens, found[0]) if found else []
    if not found or not span:
        return math.exp(sum(t[1] for t in tokens) / len(tokens))
    first, rest = span[0], span[1:]
    rivals = {alt.strip(): lp for alt, lp in first[2]
              if alt.strip() and any(_starts(option, alt.strip()) for option in found[1])}
    rivals[first[0].strip()] = first[1]
    share = math.exp(first[1]) / sum(math.exp(lp) for lp in rivals.values())
    return share * math.exp(sum(t[1] for t in rest))


def _starts(option: str, token: str) -> bool:
    return option.startswith(token) or token.startswith(option)


def _value_tokens(tokens: Any, chosen: str) -> list[Any]:
    """The tokens that spell the chosen value inside the answer's text."""
    text = "".join(t[0] for t in tokens)
    start = text.find(f'"{chosen}"')
    start = start + 1 if start >= 0 else text.find(chosen)
    if start < 0:
        return []
    end, position, span = start + len(chosen), 0, []
    for token in tokens:
        if position < end and position + len(token[0]) > start:
            span.append(token)
        position += len(token[0])
    return span


def _agreement(session: Session, step: LlmStep, messages: Sequence[Mapping[str, Any]],
               gate: ConfidenceGate) -> tuple[Any, float]:
    """Sample the model; the score is the share of answers that agree with the majority."""
    model = session.model(step.model)
    temperature = model.temperature if model.temperature else 0.8
    answers = [session.ask(messages, step.output_schema, model=step.model,
                           repairs=step.repairs, temperature=temperature).value
               for _ in range(gate.samples)]
    keys = [decisive_value(a, step.output_schema) or json.dumps(a, sort_keys=True)
            for a in answers]
    majority, count = Counter(keys).most_common(1)[0]
    return answers[keys.index(majority)], count / len(answers)


def judge_policy(session: Session, policy: Policy, text: str) -> dict[str, Any] | None:
    """A violation if the judge model finds that `text` breaks the policy's rubric."""
    rubric = policy.value["rubric"]
    answer = session.ask(
        [{"role": "system", "content": "You check texts against a rule. Reply with JSON: "
          "{\"passes\": true or false, \"reason\": one sentence}."},
         {"role": "user", "content": f"Rule: {rubric}\n\nText:\n{text}"}],
        RUBRIC_SCHEMA, model=policy.value.get("model"), repairs=1)
    if answer.value["passes"]:
        return None
    return {"policy": policy.name, "rule": "judge",
            "message": policy.message or f"the judge found: {answer.value['reason']}"}
