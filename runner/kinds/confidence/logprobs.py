"""`logprobs` confidence: how likely the model was to make the choices it made, from the
probabilities of the tokens it wrote.

For each enum or boolean field the gate scores, the score is the probability of the
chosen value as a whole token sequence, against the other allowed values: at each token
of the value, the probability mass of the alternatives that still spell the chosen value
(case folded: `Billing` counts for `billing`) against those that spell another allowed
value, and against the mass the model's top alternatives leave unlisted (which might be
a rival). Where the value written so far can only become the chosen value, the token
decides nothing and counts 1, so a label the tokenizer splits into many small tokens
scores what its deciding tokens say. The gate's score is the lowest of its fields.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from runner.core.errors import LLMError
from runner.core.llm import Answer
from runner.core.vocabulary import ErrorKind
from runner.kinds.base import Checks, ModelSession, Scored
from runner.kinds.confidence.scores import ANSWER, Choice, check_fields, gate_choices, value_at
from runner.lang.model import ConfidenceGate, ModelStep

Token = tuple[str, float, Sequence[tuple[str, float]]]  # text, logprob, top alternatives


class Logprobs:
    """The answer is asked for with token logprobs; each scored field's value gets the
    probability of its whole token sequence (`value_probability`)."""

    name = "logprobs"
    logprobs = True

    def check(self, checks: Checks, step: ModelStep, gate: ConfidenceGate) -> None:
        check_fields(checks, step, gate, needed=True)

    def score(
        self,
        session: ModelSession,
        step: ModelStep,
        messages: Sequence[Mapping[str, Any]],
        answer: Answer,
        gate: ConfidenceGate,
        ctx: Mapping[str, Any],
    ) -> Scored:
        tokens = answer.response.logprobs
        if not tokens:
            raise LLMError(
                f"model {answer.response.model} returned no token logprobs, which the "
                f"logprobs gate of step {step.id} needs: use a model that gives them, or "
                "another confidence method",
                ErrorKind.HTTP_4XX,
            )
        found: dict[str, float] = {}
        for choice in gate_choices(gate, step.output_schema):
            present, value = value_at(answer.value, choice.path)
            if present:
                found[choice.path or "answer"] = value_probability(tokens, choice, value)
        if not found:
            return Scored(None, (), {"problem": "the answer has none of the fields scored"})
        return Scored(min(found.values()), tuple(found), {"probabilities": found})


def literal(value: Any) -> str:
    """How a value is written in JSON, without the quotes of a string."""
    written = json.dumps(value, ensure_ascii=False)
    return written[1:-1] if isinstance(value, str) else written


def value_probability(tokens: Sequence[Token], choice: Choice, value: Any) -> float:
    """The probability that the model writes `value` rather than another allowed value
    of `choice`, from the logprobs of the answer's tokens."""
    text = "".join(t[0] for t in tokens)
    start = _value_start(text, choice.path, value)
    quote = '"' if isinstance(value, str) else ""
    target = (literal(value) + quote).casefold()
    rivals = [
        (literal(v) + ('"' if isinstance(v, str) else "")).casefold()
        for v in choice.allowed
        if v != value
    ]
    probability, position = 1.0, 0
    for token in tokens:
        begins, position = position, position + len(token[0])
        if position <= start or begins >= start + len(target):
            continue
        lead = text[begins:start] if begins < start else ""
        written = text[start : max(begins, start)].casefold()
        probability *= _share(token, lead, written, target, rivals)
    return probability


def _share(token: Token, lead: str, written: str, target: str, rivals: list[str]) -> float:
    """The chance, at this token, of staying on the chosen value rather than turning to
    a rival (1 when no rival is still possible)."""
    live = [r for r in rivals if _fits(r, written)]
    if not live:
        return 1.0
    alternatives = dict(token[2])
    alternatives.setdefault(token[0], token[1])
    chosen = rival = listed = 0.0
    for text, logprob in alternatives.items():
        mass = math.exp(logprob)
        listed += mass
        if not text.startswith(lead):
            continue  # another way of writing what comes before the value
        going = written + text[len(lead) :].casefold()
        if _fits(target, going):
            chosen += mass
        elif any(_fits(r, going) for r in live):
            rival += mass
    unlisted = max(0.0, 1.0 - listed)
    total = chosen + rival + unlisted
    return chosen / total if total > 0 else 0.0


def _fits(target: str, written: str) -> bool:
    """Whether text written so far can still be (or already is) `target`."""
    return target.startswith(written) or written.startswith(target)


def _value_start(text: str, path: str, value: Any) -> int:
    """Where the value at `path` begins in the answer's text (after a string's quote)."""
    position = 0
    for name in path.split(".") if path != ANSWER else ():
        key = re.compile(re.escape(json.dumps(name)) + r"\s*:\s*")
        found = key.search(text, position)
        if found is None:
            raise _not_found(path)
        position = found.end()
    written = json.dumps(value, ensure_ascii=False)
    at = text.find(written, position)
    if at < 0 or (path != ANSWER and text[position:at].strip()):
        raise _not_found(path)
    return at + 1 if isinstance(value, str) else at


def _not_found(path: str) -> LLMError:
    return LLMError(
        f"cannot find the value of {path or 'the answer'} in the tokens the model wrote",
        ErrorKind.INVALID_OUTPUT,
    )


KIND = Logprobs()
