"""Tool kinds: a python callable in the flow's repository, or an HTTP request.

Each kind turns its failures into a ToolError whose `kind` the retry rules understand
(timeout, connection, http_429, http_5xx, http_4xx, invalid_output, exception). httpx
is imported only when an http tool is called.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import inspect
import json
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol

from runner.errors import ToolError
from runner.model import Tool
from runner.python_target import search_roots

_IMPORT_LOCK = threading.Lock()


@dataclass(frozen=True)
class Call:
    """One call of a tool: rendered arguments (and request, for http) and its context."""

    args: Mapping[str, Any]
    timeout_seconds: float
    idempotency_key: str | None
    request: Mapping[str, Any] | None = None


class ToolKind(Protocol):
    """What a tool kind does: make one call, or raise ToolError."""

    def __call__(self, call: Call) -> Any: ...


class PythonTool:
    """Calls `module:function` with the arguments as keyword arguments.

    The callable runs in a worker thread so that the step's timeout holds; a call that
    times out cannot be stopped and is left to finish on its own.
    """

    def __init__(self, tool: Tool, *, flow_file: Path, http_transport: Any = None) -> None:
        self.tool = tool
        self.flow_file = flow_file
        self._function: Callable[..., Any] | None = None
        # Calls run on pooled threads so the timeout holds without a thread per call.
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=8, thread_name_prefix=f"tool-{tool.name}")

    def function(self) -> Callable[..., Any]:
        """Import the target once (imports are process-wide, so under a lock)."""
        if self._function is None:
            assert self.tool.python is not None
            module, _, name = self.tool.python.partition(":")
            with _IMPORT_LOCK:
                for root in reversed(search_roots(self.flow_file)):
                    if str(root) not in sys.path:
                        sys.path.insert(0, str(root))
                self._function = getattr(importlib.import_module(module), name)
        return self._function

    def __call__(self, call: Call) -> Any:
        function = self.function()
        kwargs = dict(call.args)
        if call.idempotency_key is not None and _accepts(function, "idempotency_key"):
            kwargs["idempotency_key"] = call.idempotency_key
        try:
            return self._pool.submit(function, **kwargs).result(timeout=call.timeout_seconds)
        except concurrent.futures.TimeoutError as exc:
            raise ToolError(f"no result after {call.timeout_seconds:g}s", "timeout",
                            maybe_sent=True) from exc
        except ToolError:
            raise
        except TimeoutError as exc:
            raise ToolError(f"timed out: {exc}", "timeout", maybe_sent=True) from exc
        except ConnectionError as exc:
            raise ToolError(f"connection failed: {exc}", "connection") from exc
        except Exception as exc:
            raise ToolError(f"{type(exc).__name__}: {exc}", "exception") from exc


def _accepts(function: Callable[..., Any], name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


class HttpTool:
    """Sends the rendered request with httpx; an effect's key goes as `Idempotency-Key`."""

    def __init__(self, tool: Tool, *, flow_file: Path, http_transport: Any = None) -> None:
        self.tool = tool
        self.transport = http_transport

    def __call__(self, call: Call) -> Any:
        import httpx

        request = dict(call.request or {})
        headers = dict(request.get("headers") or {})
        if call.idempotency_key is not None:
            headers.setdefault("Idempotency-Key", call.idempotency_key)
        try:
            with httpx.Client(transport=self.transport, timeout=call.timeout_seconds) as client:
                response = client.request(
                    request["method"], request["url"], headers=headers,
                    params=request.get("query") or None, json=request.get("json"),
                    content=request.get("body"),
                )
        except httpx.TimeoutException as exc:
            sent = not isinstance(exc, httpx.ConnectTimeout)
            raise ToolError(f"timed out after {call.timeout_seconds:g}s", "timeout",
                            maybe_sent=sent) from exc
        except httpx.TransportError as exc:
            sent = not isinstance(exc, httpx.ConnectError)
            raise ToolError(f"connection failed: {exc or type(exc).__name__}", "connection",
                            maybe_sent=sent) from exc
        return _response_value(response)


def _response_value(response: Any) -> Any:
    status = response.status_code
    if 300 <= status < 400:
        where = response.headers.get("Location", "elsewhere")
        raise ToolError(f"HTTP {status} redirect to {where}: runner does not follow "
                        "redirects; point the tool at the final URL", "http_3xx")
    if status >= 400:
        kind = "http_429" if status == 429 else ("http_5xx" if status >= 500 else "http_4xx")
        retry_after = _retry_after(response.headers.get("Retry-After"))
        body = response.text[:200]
        raise ToolError(f"HTTP {status}: {body}", kind, retry_after)
    if not response.content:
        return None
    if "json" in response.headers.get("Content-Type", ""):
        try:
            return json.loads(response.content)
        except ValueError as exc:
            raise ToolError(f"malformed JSON in the response: {exc}", "invalid_output") from exc
    return response.text


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        import datetime

        when = parsedate_to_datetime(value)
        return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


# Tool kinds -> implementation; the schema's tool kinds must equal these keys.
TOOL_KINDS: dict[str, Callable[..., ToolKind]] = {"python": PythonTool, "http": HttpTool}
