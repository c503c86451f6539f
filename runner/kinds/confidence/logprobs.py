"""`logprobs` confidence: how sure the model was of its choice, from the probabilities
of the tokens it wrote."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from runner.core.errors import LLMError
from runner.core.llm import LLMResponse
from runner.core.vocabulary import ErrorKind
from runner.kinds.base import Checks, ModelSession
from runner.kinds.confidence.scores import enum_field
from runner.lang.model import ConfidenceGate, ModelStep


class Logprobs:
    """The answer is asked for with token logprobs and scored by `logprob_score`."""

    name = "logprobs"

    def check(self, checks: Checks, step: ModelStep, gate: ConfidenceGate) -> None:
        """The score comes from the model's own answer: nothing to resolve."""

    def answer(
        self,
        session: ModelSession,
        step: ModelStep,
        messages: Sequence[Mapping[str, Any]],
        gate: ConfidenceGate,
        ctx: Mapping[str, Any],
    ) -> tuple[Any, float | None]:
        answer = session.ask(
            messages, step.output_schema, model=step.model, repairs=step.repairs, logprobs=True
        )
        return answer.value, logprob_score(answer.response, answer.value, step.output_schema)


def logprob_score(response: LLMResponse, value: Any, schema: Any) -> float:
    """How sure the model was of its choice. For an enum field: the probability of the
    chosen value's first token against the first tokens of the other allowed values
    (from the token's alternatives), times the probability of the value's remaining
    tokens. Without an enum: the geometric mean probability of all the answer's tokens."""
    tokens = response.logprobs
    if not tokens:
        raise LLMError(
            f"model {response.model} returned no token logprobs; use another "
            "confidence method with it",
            ErrorKind.HTTP_4XX,
        )
    found = enum_field(value, schema)
    span = _value_tokens(tokens, found[0]) if found else []
    if not found or not span:
        return math.exp(sum(t[1] for t in tokens) / len(tokens))
    first, rest = span[0], span[1:]
    rivals = {
        alt.strip(): lp
        for alt, lp in first[2]
        if alt.strip() and any(_starts(option, alt.strip()) for option in found[1])
    }
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


KIND = Logprobs()
