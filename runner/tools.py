"""Tool kinds: a python callable in the flow's repository, or an HTTP request.

Each kind turns its failures into a ToolError whose `kind` the retry rules understand
(timeout, connection, http_429, http_5xx, http_4xx, invalid_output, exception). httpx
is imported only when an http tool is called.
"""

from __future__ import annotations

import ast
import concurrent.futures
import difflib
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


def search_roots(flow_file: Path) -> list[Path]:
    """Where python tool modules are looked for: the flow's folder, then each parent up
    to the root of its git repository (or only the flow's folder outside a repository)."""
    folder = flow_file.resolve().parent
    roots = [folder, *folder.parents]
    for i, root in enumerate(roots):
        if (root / ".git").exists():
            return roots[: i + 1]
    return [folder]


def locate_python_target(flow_file: Path, target: str) -> tuple[Path | None, str | None]:
    """Find `module:function` without importing it: (file, None) or (None, problem)."""
    module, _, name = target.partition(":")
    relative = Path(*module.split("."))
    for root in search_roots(flow_file):
        for candidate in (root / relative.with_suffix(".py"), root / relative / "__init__.py"):
            if candidate.is_file():
                return candidate, _defines(candidate, name, module)
    return None, (f"cannot find module `{module}`: no {relative}.py beside the flow or "
                  "in a folder above it, up to the repository root")


def _defines(file: Path, name: str, module: str) -> str | None:
    try:
        tree = ast.parse(file.read_bytes(), str(file))
    except (SyntaxError, ValueError) as exc:
        return f"module `{module}` does not parse: {exc}"
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    if name in names:
        return None
    close = difflib.get_close_matches(name, sorted(names), n=1)
    hint = f"; did you mean `{close[0]}`?" if close else ""
    return f"module `{module}` ({file.name}) defines no `{name}`{hint}"


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
