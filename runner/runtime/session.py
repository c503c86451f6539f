"""A step's model session: structured output with repair, retries and fallback models,
and the run's budget.

Every model call is an `llm_call` event (model, tokens, cost, latency), every failed
attempt an `attempt_failed` event and every invalid answer an `llm_invalid` event.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.core import templates
from runner.core.errors import Attempt, BudgetExceededError, LLMError, RetriesExhaustedError
from runner.core.events import ANSWER_LIMIT, AnswerInvalid, AttemptFailed, Event, ModelCalled
from runner.core.llm import Answer, Embedder, LLMClient, LLMRequest, LLMResponse
from runner.core.vocabulary import ErrorKind
from runner.lang.model import Budget, Flow, Model, Step
from runner.lang.schema import instance_problems
from runner.runtime.retry import Retrier

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


@dataclass
class Usage:
    """Model use of one run so far (what budgets are checked against)."""

    llm_calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0

    def exceeded(self, budget: Budget | None) -> str | None:
        if budget is None:
            return None
        limits = (
            ("model calls", self.llm_calls, budget.max_llm_calls),
            ("tokens", self.tokens, budget.max_tokens),
            ("cost in USD", self.cost_usd, budget.max_cost_usd),
        )
        for what, used, limit in limits:
            if limit is not None and used >= limit:
                return f"budget reached: {used:g} {what} used, the limit is {limit:g}"
        return None


@dataclass
class Session:
    """Model calls made for one step: retries, fallbacks, repairs, usage and events."""

    flow: Flow
    step: Step
    client: LLMClient
    retrier: Callable[[Any, Callable[[Attempt], None]], Retrier]
    usage: Usage
    environ: Mapping[str, str] = field(default_factory=dict)
    embedder: Callable[[], Embedder] | None = None  # made on first use
    events: list[Event] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return Path(self.flow.document.file).parent

    def _located(self, model: str) -> str:
        """`local/<path>.gguf` with a relative path reads it from the flow's folder (as
        `runner validate` does), whatever the working directory."""
        path = Path(model[len("local/") :]).expanduser()
        if model.startswith("local/") and path.suffix == ".gguf" and not path.is_absolute():
            return f"local/{self.folder / path}"
        return model

    def embed(self, model: str, texts: Sequence[str], *, keep: bool = True) -> list[list[float]]:
        """Embeddings from a named model of the flow or a model string (local/minilm)."""
        if self.embedder is None:
            raise LLMError("embeddings are not available here", ErrorKind.HTTP_4XX)
        chosen = self.model(model)
        return self.embedder().embed(
            chosen.model,
            texts,
            api_base=self.api_base(chosen),
            timeout_seconds=self.step.timeout_seconds or chosen.timeout_seconds,
            keep=keep,
        )

    def model(self, name: str | None) -> Model:
        """A named model of the flow, or a model string used directly."""
        name = name or "default"
        return self.flow.models.get(name) or Model(name=name, model=name)

    def api_base(self, model: Model) -> str | None:
        if model.api_base is None:
            return None
        return str(templates.render(model.api_base, {"env": self.environ}))

    def ask(
        self,
        messages: Sequence[Mapping[str, Any]],
        schema: Any,
        *,
        model: str | None,
        repairs: int,
        logprobs: bool = False,
        temperature: float | None = None,
        tools: Sequence[Mapping[str, Any]] = (),
    ) -> Answer:
        """Ask until the answer fits `schema`, sending each invalid one back with its
        validation error, at most `repairs` times."""
        conversation = list(messages)
        problem = ""
        for repair in range(repairs + 1):
            # With tools on offer the model must be free to ask for them: the schema is
            # then checked on the final answer only, not imposed on every turn.
            response = self.call(
                conversation,
                None if tools else schema,
                model=model,
                logprobs=logprobs,
                temperature=temperature,
                tools=tools,
                repair=repair,
            )
            if response.tool_calls:
                return Answer(None, response)
            value, problem = parse_answer(response.text, schema)
            if not problem:
                return Answer(value, response)
            conversation += self._send_back(response, repair, problem)
        raise LLMError(
            f"the answer stayed invalid after {repairs} repair{'s' * (repairs != 1)}: {problem}",
            ErrorKind.INVALID_OUTPUT,
        )

    def _send_back(self, response: LLMResponse, repair: int, problem: str) -> list[Any]:
        """Record an invalid answer; the messages that ask the model to repair it."""
        self.events.append(
            AnswerInvalid(
                step_id=self.step.id,
                repair=repair,
                problem=problem,
                answer=response.text[:ANSWER_LIMIT],
            )
        )
        return [
            {"role": "assistant", "content": response.text},
            {
                "role": "user",
                "content": f"That answer is not valid: {problem}"
                ". Reply again with only the corrected JSON.",
            },
        ]

    def call(
        self,
        messages: Sequence[Mapping[str, Any]],
        schema: Any,
        *,
        model: str | None,
        logprobs: bool = False,
        temperature: float | None = None,
        tools: Sequence[Mapping[str, Any]] = (),
        repair: int = 0,
    ) -> LLMResponse:
        """One answer, with the model's retries, then each fallback model in turn."""
        primary = self.model(model)
        failure: RetriesExhaustedError | None = None
        for candidate in [primary, *(self.model(n) for n in primary.fallbacks)]:
            reached = self.usage.exceeded(self.flow.budget)
            if reached:
                raise BudgetExceededError(reached)
            request = LLMRequest(
                model=self._located(candidate.model),
                messages=messages,
                schema=schema,
                temperature=candidate.temperature if temperature is None else temperature,
                max_tokens=candidate.max_tokens,
                timeout_seconds=self.step.timeout_seconds or candidate.timeout_seconds,
                logprobs=logprobs,
                tools=tools,
                step_id=self.step.id,
                api_base=self.api_base(candidate),
                threads=candidate.threads,
            )
            try:
                return self._attempt(candidate, request, repair)
            except RetriesExhaustedError as exc:
                failure = exc
        assert failure is not None
        raise failure

    def _attempt(self, model: Model, request: LLMRequest, repair: int) -> LLMResponse:
        """The model's answer under its retry policy, each attempt recorded."""
        failed: list[Attempt] = []

        def attempt() -> LLMResponse:
            response: LLMResponse = self.client.complete(request)
            return response

        try:
            response = self.retrier(self.step.retry or model.retry, failed.append).call(attempt)
        except RetriesExhaustedError as exc:
            self._failed(model, exc.attempts)
            raise
        self._failed(model, failed)
        self._record(model, response, len(failed) + 1, repair)
        return response

    def _failed(self, model: Model, attempts: list[Attempt]) -> None:
        self.events += [
            AttemptFailed(
                step_id=self.step.id,
                model=model.model,
                attempt=a.number,
                error_kind=a.kind,
                message=a.message,
                wait=a.wait_seconds,
            )
            for a in attempts
        ]
        self.usage.llm_calls += len(attempts)

    def _record(self, model: Model, response: LLMResponse, attempts: int, repair: int) -> None:
        tokens = response.prompt_tokens + response.completion_tokens
        self.usage.llm_calls += 1
        self.usage.tokens += tokens
        self.usage.cost_usd += response.cost_usd or 0.0
        self.events.append(
            ModelCalled(
                step_id=self.step.id,
                model=model.model,
                attempts=attempts,
                repair=repair,
                prompt_tokens=response.prompt_tokens,
                completion_tokens=response.completion_tokens,
                cost_usd=response.cost_usd,
                latency_ms=round(response.latency_ms, 1),
            )
        )


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
