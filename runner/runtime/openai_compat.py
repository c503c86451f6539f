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
else it is unknown (None), as for a self-hosted model. litellm itself is never imported
on this path (it costs seconds of CPU per process): the price table is read from the
file it ships.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import json
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from runner.core.errors import LLMError
from runner.core.llm import LLMRequest, LLMResponse, ToolCallRequest

CLIENTS = 16  # HTTP clients (connection pools) shared by every call, in turn

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


def lean_path(request: LLMRequest) -> bool:
    """Whether a call goes to an OpenAI-compatible server: runner's local models, and
    `openai/<name>` models with an `api_base`. (A structured answer is then asked for
    as JSON with the schema spelled out, as for any server litellm does not know to
    take JSON Schema, except runner's own local models, which take it natively.)"""
    if request.model.startswith("local/"):
        return True
    return bool(request.api_base) and request.model.startswith("openai/")


def pricing(model: str, sent: str) -> Callable[[int, int], float | None]:
    """What a call's tokens cost: nothing for runner's local models, by litellm's price
    table for a model it knows, unknown (None) for any other."""
    if model.startswith("local/"):
        return lambda prompt, completion: 0.0
    entry = _read_prices().get(sent.removeprefix("openai/")) or {}
    per_in, per_out = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
    if per_in is None or per_out is None:
        return lambda prompt, completion: None
    return lambda prompt, completion: prompt * float(per_in) + completion * float(per_out)


@functools.cache
def _read_prices() -> dict[str, Any]:
    """litellm's table of model prices, read once from the file litellm ships (the one
    it reads itself with LITELLM_LOCAL_MODEL_COST_MAP), without importing litellm."""
    spec = importlib.util.find_spec("litellm")  # finds the package; does not import it
    folders = list(spec.submodule_search_locations or ()) if spec else []
    for folder in folders:
        path = Path(folder) / "model_prices_and_context_window_backup.json"
        try:
            found: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return found
        except (OSError, ValueError):
            continue
    return {}


class OpenAICompatible:
    """Chat completions over one shared, pooled httpx client (thread-safe)."""

    def __init__(self) -> None:
        self._clients: list[Any] = []
        self._tls: Any = None
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def client(self) -> Any:
        """One of CLIENTS clients, in turn. httpx's connection pool looks at each of its
        connections for every request, so one pool serving hundreds of calls at once
        costs quadratic CPU (it was most of a batch's CPU at 200 at a time); split in
        CLIENTS pools it costs that much less."""
        with self._lock:
            if len(self._clients) < CLIENTS:
                import httpx

                if not self._clients:  # one TLS context for all: each costs milliseconds
                    self._tls = httpx.create_ssl_context()
                limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
                client = httpx.Client(limits=limits, follow_redirects=False, verify=self._tls)
                self._clients.append(client)
                return client
            return self._clients[next(self._turn) % CLIENTS]

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
