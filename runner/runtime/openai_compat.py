"""The lean path for OpenAI-compatible servers: a model named `openai/<name>` with an
`api_base` (a self-hosted server, a gateway, runner's own local models) is called with
one POST to `<api_base>/chat/completions` on a shared httpx client, instead of through
litellm.

Why: litellm spends about 8 ms of CPU on each call (building its request objects,
logging hooks, cost lookups), which caps a worker at a little over a hundred model calls
a second per core; this path spends a fraction of a millisecond, so a worker's CPU goes
to the work itself (bench/fleet.py measures both). Providers with their own APIs
(Anthropic, Bedrock, Vertex...) still go through litellm, which speaks them all.

The request is the one litellm would send (runner.runtime.models builds it), and errors
get the same retry classes: 429 (with its Retry-After), 5xx, other 4xx, timeouts and
refused connections. Cost comes from litellm's price table when it knows the model,
else it is unknown (None), as for a self-hosted model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from runner.core.errors import LLMError
from runner.core.llm import LLMResponse, ToolCallRequest

# What litellm's completion() takes that the server reads; the rest is litellm's own.
_FORWARDED = (
    "messages",
    "temperature",
    "max_tokens",
    "response_format",
    "logprobs",
    "top_logprobs",
    "tools",
)


def takes(kwargs: Mapping[str, Any]) -> bool:
    """Whether a call (litellm's arguments) goes to an OpenAI-compatible server."""
    return bool(kwargs.get("api_base")) and str(kwargs.get("model", "")).startswith("openai/")


class OpenAICompatible:
    """Chat completions over one shared, pooled httpx client (thread-safe)."""

    def __init__(self) -> None:
        self._client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import httpx

                limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
                self._client = httpx.Client(limits=limits, follow_redirects=False)
            return self._client

    def complete(self, kwargs: Mapping[str, Any], model: str, prices: Any) -> LLMResponse:
        """The answer to a call given as litellm's arguments; LLMError when it fails."""
        import httpx

        body = {name: kwargs[name] for name in _FORWARDED if name in kwargs}
        body["model"] = str(kwargs["model"]).removeprefix("openai/")
        url = str(kwargs["api_base"]).rstrip("/") + "/chat/completions"
        headers = {"Authorization": f"Bearer {kwargs.get('api_key') or 'none'}"}
        started = time.perf_counter()
        try:
            response = self.client().post(
                url, json=body, headers=headers, timeout=float(kwargs["timeout"])
            )
        except httpx.TimeoutException as exc:
            raise LLMError(
                f"model {model}: the model service did not answer in time", "timeout"
            ) from exc
        except httpx.TransportError as exc:
            raise LLMError(
                f"model {model}: cannot reach the model service: {exc}", "connection"
            ) from exc
        if response.status_code >= 400:
            raise refusal(model, response)
        latency = (time.perf_counter() - started) * 1000
        try:
            data = response.json()
            return answer(data, model, latency, prices)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LLMError(
                f"model {model}: the model service answered with something that is not "
                f"a chat completion: {response.text[:200]!r}",
                "http_5xx",
            ) from exc


def refusal(model: str, response: Any) -> LLMError:
    """An HTTP error answer as LLMError: its retry class and any Retry-After."""
    status = response.status_code
    if status == 429:
        kind, said = "http_429", "the model service is limiting requests (429)"
    elif status >= 500:
        kind, said = "http_5xx", f"the model service failed ({status}, a server error)"
    else:
        words = {401: "the API key was not accepted (401)", 403: "access denied (403)",
                 404: "no such model at the service (404)"}  # fmt: skip
        kind, said = (
            "http_4xx",
            words.get(status, f"the model service refused the request ({status})"),
        )
    detail = " ".join(response.text[:300].split())
    error = LLMError(
        f"model {model}: {said}: {detail}" if detail else f"model {model}: {said}",
        kind,
        _retry_after(response),
    )
    error.detail = f"HTTP {status}: {detail}"
    return error


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def answer(data: Mapping[str, Any], model: str, latency: float, prices: Any) -> LLMResponse:
    """A chat completion's JSON as an LLMResponse."""
    choice = data["choices"][0]
    message = choice["message"]
    calls = tuple(
        ToolCallRequest(c["id"], c["function"]["name"], c["function"].get("arguments") or "{}")
        for c in message.get("tool_calls") or ()
    )
    logprobs = None
    content = (choice.get("logprobs") or {}).get("content")
    if content:
        logprobs = tuple(
            (
                t["token"],
                float(t["logprob"]),
                tuple((a["token"], float(a["logprob"])) for a in t.get("top_logprobs") or ()),
            )
            for t in content
        )
    usage = data.get("usage") or {}
    prompt, completion = (
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
    )
    return LLMResponse(
        text=message.get("content") or "",
        tool_calls=calls,
        logprobs=logprobs,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=prices(prompt, completion),
        latency_ms=latency,
        model=model,
        raw=data,
    )
