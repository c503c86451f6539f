"""`python` tools: a function in the flow's repository, `module:function`.

The module is found beside the flow or in a folder above it, up to the repository root
(`runner.kinds.tools.python_target`, which `runner validate` uses without importing
anything). At run time each folder's modules are imported as a package of their own, so
two flow folders that both have `tools/orders.py` never get each other's module.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import importlib
import inspect
import signal
import sys
import threading
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from runner.core.errors import ToolError
from runner.core.vocabulary import ErrorKind
from runner.kinds.base import Call, Checks, ToolCall
from runner.kinds.tools.python_target import locate_python_target, module_root
from runner.lang.model import Tool

_IMPORT_LOCK = threading.Lock()  # imports change sys.modules, which every thread shares


class Python:
    """The `python` tool kind: its spec is the target, `module:function`."""

    name = "python"
    calls_out = False

    def build(self, raw: Any) -> Any:
        return raw

    def check(self, checks: Checks, tool: Tool) -> None:
        message = locate_python_target(Path(checks.flow.document.file), tool.spec)[1]
        if message:
            checks.add((*tool.path, "python"), message)

    def request(self, tool: Tool, ctx: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return None

    def connect(self, tool: Tool, *, flow_file: Path, http_transport: Any = None) -> ToolCall:
        return PythonTool(tool, flow_file=flow_file)


class PythonTool:
    """Calls `module:function` with the arguments as keyword arguments, under the
    step's timeout.

    On the main thread the call runs in place and a timer signal interrupts it when its
    time is up (handing every call to another thread costs more than most tools take).
    Elsewhere (batches run runs on worker threads) it runs on a pooled thread; a call
    that times out there cannot be stopped and is left to finish on its own.
    """

    def __init__(self, tool: Tool, *, flow_file: Path) -> None:
        self.tool = tool
        self.flow_file = flow_file
        self._function: Callable[..., Any] | None = None
        # Calls run on pooled threads so the timeout holds without a thread per call.
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=8, thread_name_prefix=f"tool-{tool.name}"
        )

    def function(self) -> Callable[..., Any]:
        """Import the target once (imports are process-wide, so under a lock)."""
        if self._function is None:
            assert self.tool.spec is not None
            module, _, name = self.tool.spec.partition(":")
            root = module_root(self.flow_file, module)
            if root is None:
                raise ToolError(
                    f"cannot find module {module} for tool {self.tool.name}", ErrorKind.EXCEPTION
                )
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
            raise ToolError(
                f"no result after {call.timeout_seconds:g}s", ErrorKind.TIMEOUT, maybe_sent=True
            ) from exc
        except ToolError:
            raise
        except TimeoutError as exc:
            raise ToolError(f"timed out: {exc}", ErrorKind.TIMEOUT, maybe_sent=True) from exc
        except ConnectionError as exc:
            raise ToolError(f"connection failed: {exc}", ErrorKind.CONNECTION) from exc
        except Exception as exc:
            raise ToolError(f"{type(exc).__name__}: {exc}", ErrorKind.EXCEPTION) from exc


class _AlarmError(Exception):
    """Raised inside a python tool whose time ran out (BaseException would escape the
    tool's own `except Exception`, but tools that swallow everything are rare and then
    merely finish late)."""


def _can_alarm() -> bool:
    return (
        hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    )


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
    """A package of its own for each folder that tools are imported from.
    sys.path is never touched: a tool module imports its neighbours relatively
    (`from .common import x`)."""
    name = "_runner_tools_" + hashlib.sha256(str(root).encode()).hexdigest()[:12]
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [str(root)]
        sys.modules[name] = package
    return name


def _accepts(function: Callable[..., Any], name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


KIND = Python()
