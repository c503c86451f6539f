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
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol

from runner.core.errors import ToolError
from runner.lang.model import Tool
from runner.kinds.tools.python_target import module_root

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
    """Calls `module:function` with the arguments as keyword arguments, under the
    step's timeout.

    On the main thread the call runs in place and a timer signal interrupts it when its
    time is up (handing every call to another thread costs more than most tools take).
    Elsewhere (batches run runs on worker threads) it runs on a pooled thread; a call
    that times out there cannot be stopped and is left to finish on its own.
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
            root = module_root(self.flow_file, module)
            if root is None:
                raise ToolError(f"cannot find module {module} for tool {self.tool.name}",
                                "exception")
            with _IMPORT_LOCK:
                package = _flow_package(root)
                self._function = getattr(importlib.import_module(f"{package}.{module}"), name)
        return self._function

    def __call__(self, call: Call) -> Any:
        function = self.function()
        kwargs = dict(call.args)
        if call.idempotency_key is not None and _accepts(function, "idempotency_key"):
            kwargs["idempotency_key"] = call.idempotency_key
        try:
            if _can_alarm():
                return _with_alarm(function, kwargs, call.timeout_seconds)
            return self._pool.submit(function, **kwargs).result(timeout=call.timeout_seconds)
        except (concurrent.futures.TimeoutError, _AlarmError) as exc:
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


class _AlarmError(Exception):
    """Raised inside a python tool whose time ran out (BaseException would escape the
    tool's own `except Exception`, but tools that swallow everything are rare and then
    merely finish late)."""


def _can_alarm() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is \
        threading.main_thread() and signal.getitimer(signal.ITIMER_REAL)[0] == 0


def _with_alarm(function: Callable[..., Any], kwargs: dict[str, Any], seconds: float) -> Any:
    def ring(signum: int, frame: Any) -> None:
        raise _AlarmError()

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return function(**kwargs)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _flow_package(root: Path) -> str:
    """A package of its own for each folder that tools are imported from, so that two
    flow folders that both have `tools/orders.py` never get each other's module.
    The folder also goes on sys.path, for the tools' own imports of their neighbours."""
    import hashlib
    import types

    name = "_runner_tools_" + hashlib.sha256(str(root).encode()).hexdigest()[:12]
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [str(root)]
        sys.modules[name] = package
        if str(root) not in sys.path:
            sys.path.append(str(root))
    return name


def _accepts(function: Callable[..., Any], name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


class HttpTool:
    """Sends the rendered request with httpx; an effect's key goes as `Idempotency-Key`."""

    def __init__(self, tool: Tool, *, flow_file: Path, http_transport: Any = None) -> None:
        import httpx  # here, not at the call: an effect's in-doubt window stays short

        self.tool = tool
        self.transport = http_transport
        self.httpx = httpx

    def __call__(self, call: Call) -> Any:
        httpx = self.httpx
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


class SmtpTool:
    """Sends one plain-text email with smtplib. An effect's Message-ID is derived from
    its idempotency key, so a message sent again is recognisably the same one."""

    def __init__(self, tool: Tool, *, flow_file: Path, http_transport: Any = None) -> None:
        self.tool = tool

    def __call__(self, call: Call) -> Any:
        import smtplib
        import ssl
        from email.message import EmailMessage

        mail = dict(call.request or {})
        tls = mail.get("tls") or {465: "ssl", 587: "starttls"}.get(mail.get("port", 25), "none")
        port = int(mail.get("port") or {"ssl": 465, "starttls": 587}.get(tls, 25))
        message = EmailMessage()
        message["From"], message["To"] = mail["from"], mail["to"]
        message["Subject"] = mail["subject"]
        message["Message-ID"] = message_id(call.idempotency_key, mail["from"])
        message.set_content(mail["body"])
        connected = False
        try:
            client_class = smtplib.SMTP_SSL if tls == "ssl" else smtplib.SMTP
            with client_class(mail["host"], port, timeout=call.timeout_seconds) as client:
                connected = True
                if tls == "starttls":
                    client.starttls(context=ssl.create_default_context())
                if mail.get("username"):
                    client.login(mail["username"], mail.get("password", ""))
                refused = client.send_message(message)
        except smtplib.SMTPResponseException as exc:
            kind = "smtp_4xx" if 400 <= exc.smtp_code < 500 else "smtp_5xx"
            raise ToolError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", kind) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            raise ToolError(f"every recipient was refused: {exc.recipients}", "smtp_5xx") from exc
        except (TimeoutError, OSError, smtplib.SMTPException) as exc:
            kind = "timeout" if isinstance(exc, TimeoutError) else "connection"
            raise ToolError(f"SMTP {type(exc).__name__}: {exc}", kind,
                            maybe_sent=connected) from exc
        return {"message_id": message["Message-ID"],
                "refused": sorted(refused) if refused else []}


def message_id(key: str | None, sender: str) -> str:
    """A Message-ID that depends only on the idempotency key (random without one)."""
    import hashlib
    import uuid

    domain = sender.rpartition("@")[2].strip(" >") or "runner.invalid"
    token = hashlib.sha256(key.encode()).hexdigest()[:40] if key else uuid.uuid4().hex
    return f"<{token}@{domain}>"


# Tool kinds -> implementation; the schema's tool kinds must equal these keys.
TOOL_KINDS: dict[str, Callable[..., ToolKind]] = {
    "python": PythonTool, "http": HttpTool, "smtp": SmtpTool}
