"""Fakes that ship with runner, for its own tests and for users' tests of their flows."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runner.runtime.models import LLMRequest, LLMResponse


@dataclass
class FakeClock:
    """A clock that never sleeps: `sleep` moves time forward and records the wait."""

    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeLLM:
    """A deterministic model for tests: scripted answers per step, in order.

    `FakeLLM({"classify": [answer, answer, ...]})`. An answer is text, a JSON-able value
    (sent as its JSON text), an LLMResponse, or an exception to raise (e.g.
    `LLMError("rate limited", "http_429", retry_after=2)`). A step with no answers left
    fails the test loudly. Every request is kept in `requests`.
    """

    def __init__(
        self, script: Mapping[str, Sequence[Any]] | None = None, *, default: Any = None
    ) -> None:
        self.script = {step: list(answers) for step, answers in (script or {}).items()}
        self.default = default
        self.requests: list[LLMRequest] = []

    def complete(self, request: LLMRequest) -> LLMResponse:
        self.requests.append(request)
        queue = self.script.get(request.step_id)
        if queue:
            answer = queue.pop(0)
        elif self.default is not None:
            answer = self.default
        else:
            raise AssertionError(f"FakeLLM has no answer left for step {request.step_id!r}")
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, LLMResponse):
            return answer
        text = answer if isinstance(answer, str) else json.dumps(answer)
        return LLMResponse(
            text=text,
            prompt_tokens=len(str(request.messages)) // 4,
            completion_tokens=max(1, len(text) // 4),
            cost_usd=0.0,
            model=request.model,
            logprobs=_even_logprobs(text),
        )


def _even_logprobs(text: str) -> tuple[tuple[str, float, tuple[tuple[str, float], ...]], ...]:
    """Logprobs of a fully confident model: every token (here, a character) certain."""
    return tuple((char, 0.0, ((char, 0.0),)) for char in text)
