"""Model calls on litellm: the `LLMClient` of `runner.core.llm` for real models.

litellm is imported only when a flow calls a model (it costs seconds to import), with
`LITELLM_LOCAL_MODEL_COST_MAP=True` unless the user set it, so that importing it never
reaches for the network. Its errors are translated into LLMError with the same `kind`s
as tool errors (timeout, connection, http_429, http_5xx, http_4xx), so one retry policy
language covers both. Model strings `local/<name>` are served in-process by
`runner.runtime.local_models`.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from runner.core.errors import LLMError
from runner.core.llm import LLMClient, LLMRequest, LLMResponse, ToolCallRequest
from runner.runtime.openai_compat import OpenAICompatible, lean_path, pricing

__all__ = ["LLMClient", "LLMRequest", "LLMResponse", "LiteLLMClient", "ToolCallRequest"]

TOP_LOGPROBS = 20  # alternatives per token (the most OpenAI gives): the mass they leave unlisted
# counts against a choice, so the more are listed, the tighter a logprobs score


def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


class LiteLLMClient:
    """Calls any model litellm knows; `local/<name>` goes to an in-process server."""

    def __init__(self, local: Any = None) -> None:
        self.local = local
        self._lean = OpenAICompatible()  # OpenAI-compatible servers: no litellm per call

    def complete(self, request: LLMRequest) -> LLMResponse:
        lean = lean_path(request)
        litellm = None if lean else _litellm()  # the lean path never loads litellm
        try:
            kwargs = self._arguments(litellm, request)
        except OSError as exc:  # a local model that could not be fetched or started
            raise LLMError(f"model {request.model}: {exc}", "connection") from exc
        if lean:
            prices = pricing(request.model, kwargs["model"])
            return cast(
                LLMResponse,
                within(
                    request.timeout_seconds,
                    lambda: self._lean.complete(kwargs, request.model, prices),
                ),
            )
        assert litellm is not None
        started = time.perf_counter()
        try:
            response = within(request.timeout_seconds, lambda: litellm.completion(**kwargs))
        except LLMError:
            raise
        except Exception as exc:
            raise translate_error(litellm, exc, request.model) from exc
        latency = (time.perf_counter() - started) * 1000
        return _response(
            litellm, response, request.model, latency, local=request.model.startswith("local/")
        )

    def _arguments(self, litellm: Any, request: LLMRequest) -> dict[str, Any]:
        messages = [dict(m) for m in request.messages]
        kwargs: dict[str, Any] = {
            "model": request.model,
            "timeout": request.timeout_seconds,
            "num_retries": 0,
            "max_retries": 0,  # runner retries, by the flow's policy; the client must not
        }
        if request.model.startswith("local/"):
            if self.local is None:
                raise LLMError(
                    f"model {request.model}: local models are not enabled here", "http_4xx"
                )
            kwargs.update(
                model="openai/" + request.model[len("local/") :],
                api_key="local",
                api_base=self.local.api_base(request.model[len("local/") :], request.threads),
            )
        if request.api_base:
            kwargs["api_base"] = request.api_base
            kwargs.setdefault("api_key", os.environ.get("OPENAI_API_KEY", "none"))
        for name in ("temperature", "max_tokens"):
            if getattr(request, name) is not None:
                kwargs[name] = getattr(request, name)
        if request.schema is not None:
            kwargs["response_format"] = self._response_format(litellm, request, messages)
        if request.logprobs:
            kwargs.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
        if request.tools:
            kwargs["tools"] = list(request.tools)
        kwargs["messages"] = messages
        return kwargs

    def _response_format(
        self, litellm: Any, request: LLMRequest, messages: list[dict[str, Any]]
    ) -> dict[str, Any]:
        schema = request.schema if isinstance(request.schema, dict) else {}
        native = request.model.startswith("local/")
        if not native and litellm is not None:
            try:
                native = bool(litellm.supports_response_schema(model=request.model))
            except Exception:
                native = False
        if native:
            return {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema, "strict": True},
            }
        # JSON mode, with the schema spelled out where the model will read it.
        messages.insert(
            0,
            {
                "role": "system",
                "content": "Answer with one JSON value that "
                "matches this JSON Schema, and nothing else:\n" + json.dumps(schema),
            },
        )
        return {"type": "json_object"}


def within(seconds: float, call: Callable[[], Any]) -> Any:
    """`call()`'s result, or a timeout LLMError once `seconds` have passed, whatever the
    call does meanwhile (a client's own timeout bounds each read, not the whole call; a
    model served in this process may not answer at all). The call goes on in its thread,
    and its result is dropped."""
    outcome: list[Any] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=work, name="runner-model-call", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise LLMError(f"no answer within {seconds:g} s", "timeout")
    if failure:
        raise failure[0]
    return outcome[0]


def _response(
    litellm: Any, response: Any, model: str, latency: float, *, local: bool
) -> LLMResponse:
    choice = response.choices[0]
    message = choice.message
    calls = tuple(
        ToolCallRequest(c.id, c.function.name, c.function.arguments or "{}")
        for c in (getattr(message, "tool_calls", None) or ())
    )
    logprobs = None
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if content:
        logprobs = tuple(
            (
                t.token,
                float(t.logprob),
                tuple((a.token, float(a.logprob)) for a in (t.top_logprobs or ())),
            )
            for t in content
        )
    usage = getattr(response, "usage", None)
    cost: float | None = 0.0 if local else None
    if not local:
        try:
            cost = float(litellm.completion_cost(completion_response=response))
        except Exception:
            cost = None  # a model without a price in litellm's table
    return LLMResponse(
        text=message.content or "",
        tool_calls=calls,
        logprobs=logprobs,
        prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
        completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
        cost_usd=cost,
        latency_ms=latency,
        model=model,
        raw=response,
    )


_KINDS = (
    ("RateLimitError", "http_429"),
    ("Timeout", "timeout"),
    ("APIConnectionError", "connection"),
    ("ServiceUnavailableError", "http_5xx"),
    ("InternalServerError", "http_5xx"),
    ("BadGatewayError", "http_5xx"),
    ("ContextWindowExceededError", "http_4xx"),
    ("AuthenticationError", "http_4xx"),
    ("BadRequestError", "http_4xx"),
    ("NotFoundError", "http_4xx"),
    ("PermissionDeniedError", "http_4xx"),
    ("UnprocessableEntityError", "http_4xx"),
)


def translate_error(litellm: Any, exc: Exception, model: str) -> LLMError:
    """litellm's exception -> LLMError with a retry class and any Retry-After."""
    kind = "http_5xx" if isinstance(exc, getattr(litellm, "APIError", ())) else "exception"
    for name, mapped in _KINDS:
        if isinstance(exc, getattr(litellm.exceptions, name, ())):
            kind = mapped
            break
    error = LLMError(f"model {model}: {_in_words(exc, kind)}", kind, _retry_after(exc))
    error.detail = f"{type(exc).__name__}: {_first_line(exc)}"  # the library's own words
    return error


_SAID = {
    "http_429": "the model service is limiting requests (429)",
    "timeout": "the model service did not answer in time",
    "connection": "cannot reach the model service",
    "http_5xx": "the model service failed ({status}, a server error)",
    "http_4xx": "the model service refused the request ({status})",
}
_REFUSALS = {401: "the API key was not accepted (401)", 403: "access denied (403)",
             404: "no such model at the service (404)"}  # fmt: skip
_PREFIX = re.compile(r"^(?:litellm\.)?\w+(?:Error|Exception)(?::| -)\s*", re.IGNORECASE)


def _in_words(exc: Exception, kind: str) -> str:
    """What went wrong, for a person: `the model service failed (500, a server error):
    upstream failed`, without the library's class names."""
    status = getattr(exc, "status_code", None)
    said = _REFUSALS.get(status or 0, "") if kind == "http_4xx" else ""
    said = said or _SAID.get(kind, "the model call failed").format(status=status or "error")
    detail = _first_line(exc)
    while (cut := _PREFIX.sub("", detail, count=1)) != detail:
        detail = cut  # `InternalServerError: litellm.InternalServerError: ...`, peeled
    return f"{said}: {detail}" if detail else said


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or getattr(exc, "headers", None) or {}
    value = headers.get("retry-after") if hasattr(headers, "get") else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
