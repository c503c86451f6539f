"""The language of model calls: a request, a response, and the client protocol that
answers one. Step kinds and the engine speak it; `runner.runtime.models` implements it
on litellm, and `runner.testing` fakes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ToolCallRequest:
    """A model asking to call a tool: the call id, the tool name, its JSON arguments."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class LLMRequest:
    """One model call."""

    model: str
    messages: Sequence[Mapping[str, Any]]
    schema: Any = None
    temperature: float | None = None
    max_tokens: int | None = None
    timeout_seconds: float = 60.0
    logprobs: bool = False
    tools: Sequence[Mapping[str, Any]] = ()
    step_id: str = ""
    api_base: str | None = None
    threads: int | None = None  # a local model's CPU threads


@dataclass(frozen=True)
class LLMResponse:
    """A model's answer, with what it cost."""

    text: str
    tool_calls: tuple[ToolCallRequest, ...] = ()
    # Per answer token: (token, logprob, the most likely alternatives as (token, logprob)).
    logprobs: tuple[tuple[str, float, tuple[tuple[str, float], ...]], ...] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float = 0.0
    model: str = ""
    raw: Any = field(default=None, repr=False, compare=False)


class LLMClient(Protocol):
    """What the engine needs from a model provider."""

    def complete(self, request: LLMRequest) -> LLMResponse: ...


class Embedder(Protocol):
    """Text embeddings (the `similarity` gate's): unit-length vectors, one per text."""

    def embed(
        self,
        model: str,
        texts: Sequence[str],
        *,
        api_base: str | None = None,
        timeout_seconds: float | None = None,
        keep: bool = True,
    ) -> list[list[float]]:
        """Vectors for `texts`; with `keep` False, texts not cached already are computed
        and not kept (a run's input: the cache holds what is kept in git)."""


@dataclass(frozen=True)
class Answer:
    """A model answer that passed its schema: the value and the response it came in."""

    value: Any
    response: LLMResponse
