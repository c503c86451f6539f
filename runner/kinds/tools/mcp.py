"""`mcp` tools: a tool served by an MCP server, called with the official SDK (`mcp`),
started with `command` (stdio, in the flow's folder) or at a `url` (streamable HTTP).

The server belongs to the tool, not to a call: `command`, `url`, `env` (stdio) and
`headers` (http) are templates that read only `env` and `secret`, rendered at each call,
never stored. A stdio server gets the SDK's default environment (PATH, HOME, ...) and
`env`; its stderr is runner's. `runner validate` starts no server.

The SDK runs on a private event loop thread; a call waits at most `timeout_seconds`,
from connecting to the result. A session opens at the first call to a server and serves
every call to it, from any thread, until a timeout or a lost connection retires it (it
closes once no call uses it). It reads the server's tool listing: without the flow's
`input` schema, arguments that do not match the listed one are refused before the call
(invalid_input); an effect's key goes as the argument `idempotency_key` if declared.

The result is the structured content if there is one, else the one text part (parsed if
it is JSON), else the content parts as JSON. isError fails as `exception` (never retried,
as a python tool's exception); failing to reach the server is `connection`; any other
error it answers, `error` (`invalid_input` for invalid params). A failure may have
reached the server (`maybe_sent`) only once the call started to go out.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import hashlib
import json
import sys
import threading
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.core import templates
from runner.core.errors import ToolError
from runner.core.vocabulary import ErrorKind
from runner.kinds.base import Call, Checks, ToolCall
from runner.lang.model import Tool
from runner.lang.schema import instance_problems

SERVER_ROOTS = ("env", "secret")  # what the server's templates read: not args, not input
COMMAND_ROOTS = ("env",)  # a command line is shown (`ps`): no secret in it
_MESSAGE, _PAGES = 500, 50  # characters of a server's error kept; pages of a listing read
# JSON-RPC errors of a request the server refused before acting on it, and their kinds
_REFUSED = {-32600: ErrorKind.ERROR, -32601: ErrorKind.ERROR, -32602: ErrorKind.INVALID_INPUT}


@dataclass(frozen=True, kw_only=True)
class McpServer:
    """Where an mcp tool's server is, and its name of the tool; strings are templates."""

    command: tuple[str, ...] = ()
    url: str | None = None
    tool: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    def where(self) -> str:
        """The server, as its unrendered command or URL (no secret in it)."""
        return f"`{' '.join(self.command)}`" if self.command else f"at {self.url}"


class Mcp:
    """The `mcp` tool kind."""

    name = "mcp"
    calls_out = True

    def build(self, raw: Any) -> Any:
        return McpServer(
            command=tuple(raw.get("command", ())),
            url=raw.get("url"),
            tool=raw.get("tool"),
            env=dict(raw.get("env", {})),
            headers=dict(raw.get("headers", {})),
        )

    def check(self, checks: Checks, tool: Tool) -> None:
        server, base = tool.spec, (*tool.path, "mcp")
        for i, part in enumerate(server.command):
            checks.template((*base, "command", i), part, COMMAND_ROOTS)
        if server.url is not None:
            checks.template((*base, "url"), server.url, SERVER_ROOTS)
        for part in ("env", "headers"):
            for name, value in getattr(server, part).items():
                checks.template((*base, part, name), value, SERVER_ROOTS)
        if server.env and not server.command:
            checks.add((*base, "env"), "`env` is for a server started with `command`", key=True)
        if server.headers and server.url is None:
            checks.add((*base, "headers"), "`headers` are for a server at a `url`", key=True)

    def request(self, tool: Tool, ctx: Mapping[str, Any]) -> Mapping[str, Any] | None:
        server: McpServer = tool.spec

        def render(values: Mapping[Any, str]) -> dict[Any, str]:
            return {k: str(templates.render(v, ctx)) for k, v in values.items()}

        if server.url is not None:
            return {"url": render({"": server.url})[""], "headers": render(server.headers)}
        command = list(render(dict(enumerate(server.command))).values())
        return {"command": command, "env": render(server.env)}

    def connect(self, tool: Tool, *, flow_file: Path, http_transport: Any = None) -> ToolCall:
        return McpTool(tool, folder=flow_file.parent)


class McpTool:
    """Calls one tool of an MCP server through a session on the private loop (`_LOOP`),
    shared with every other tool of that server."""

    def __init__(self, tool: Tool, *, folder: Path) -> None:
        self.tool = tool
        self.folder = folder
        self.name: str = tool.spec.tool or tool.name

    def __call__(self, call: Call) -> Any:
        headers: Mapping[str, str] = (call.request or {}).get("headers", {})
        bad = [k for k, v in headers.items() if not (v.isascii() and v.isprintable())]
        if bad:  # named, never quoted: a value may hold a secret (often with a newline)
            message = f"header `{bad[0]}` holds a line break or a character HTTP cannot carry"
            raise ToolError(message, ErrorKind.INVALID_INPUT)
        attempt = _Attempt()
        future = asyncio.run_coroutine_threadsafe(self._call(call, attempt), _LOOP.get())
        try:
            return future.result(timeout=call.timeout_seconds)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError) as exc:
            future.cancel()
            timeout = isinstance(exc, concurrent.futures.TimeoutError)
            message = f"no answer within {call.timeout_seconds:g}s" if timeout else "closed"
            kind = ErrorKind.TIMEOUT if timeout else ErrorKind.CONNECTION
            sent = attempt.abandon()
            raise ToolError(f"MCP tool {self.name}: {message}", kind, maybe_sent=sent) from None

    async def _call(self, call: Call, attempt: _Attempt) -> Any:
        session = _LOOP.acquire(dict(call.request or {}), self.folder)
        retire = False
        try:
            client = await _ready(session, self.tool.spec)
            args = self._arguments(session, call)
            if not attempt.start():
                raise asyncio.CancelledError
            result = await client.call_tool(self.name, args)
        except (ToolError, asyncio.CancelledError) as exc:
            retire = not isinstance(exc, ToolError) or exc.kind == ErrorKind.CONNECTION
            raise
        except Exception as exc:
            failure = _call_failure(exc, self.name, sent=attempt.sending)
            retire = failure.kind in (ErrorKind.CONNECTION, ErrorKind.TIMEOUT)
            raise failure from exc
        finally:
            session.release(retire=retire)
        return _value(result, self.name)

    def _arguments(self, session: _Session, call: Call) -> dict[str, Any]:
        """The call's arguments, checked against the server's listing of the tool when
        the flow gives no input schema, with an effect's key if the tool takes one."""
        if self.name not in session.tools:
            listed = ", ".join(sorted(session.tools)) or "none"
            where = self.tool.spec.where()
            message = f"the MCP server {where} has no tool `{self.name}` (it has: {listed})"
            raise ToolError(message, ErrorKind.ERROR)
        args = dict(call.args)
        schema = session.tools[self.name]
        declared = schema.get("properties") if isinstance(schema, dict) else None
        if call.idempotency_key is not None and "idempotency_key" in (declared or {}):
            args.setdefault("idempotency_key", call.idempotency_key)
        if self.tool.input_schema is True and isinstance(schema, dict):
            try:
                problems = instance_problems(schema, args)
            except Exception:  # not a schema runner can check: the server checks them
                problems = []
            if problems:
                found = "; ".join(problems)
                message = f"arguments do not match the input schema the server lists: {found}"
                raise ToolError(message, ErrorKind.INVALID_INPUT)
        return args


class _Attempt:
    """Whether a call started to go out, and whether its caller gave up (then it never
    goes out): `start` on the loop's thread, `abandon` on the caller's."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sending = self.abandoned = False

    def start(self) -> bool:
        with self.lock:
            self.sending = not self.abandoned
            return self.sending

    def abandon(self) -> bool:
        with self.lock:
            self.abandoned = True
            return self.sending


class _Session:
    """One connection to a server, owned by a task of its own (the SDK's task groups
    must be entered and left by one task): it connects, lists the tools, then waits
    until it is closed. `ready` is the SDK's session once it has connected."""

    def __init__(self, key: str, request: dict[str, Any], folder: Path) -> None:
        loop = asyncio.get_running_loop()
        self.key, self.users, self.retired = key, 0, False
        self.tools: dict[str, Any] = {}  # the server's tools: name -> input schema
        self.ready: asyncio.Future[Any] = loop.create_future()
        self.ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.closing = asyncio.Event()
        self.task = loop.create_task(self._own(request, folder))

    def release(self, *, retire: bool) -> None:
        """A call is done with the session; `retire`: it must take no more calls."""
        self.users -= 1
        if retire or self.retired:
            self.retire()

    def retire(self) -> None:
        """Take no new calls; close once no call uses the session."""
        self.retired = True
        if self.users <= 0:
            self.closing.set()
            if not self.ready.done():
                self.task.cancel()

    async def _own(self, request: dict[str, Any], folder: Path) -> None:
        try:
            async with AsyncExitStack() as stack:
                session = await _open(stack, request, folder)
                self.tools = await _listing(session)
                self.ready.set_result(session)
                await self.closing.wait()
        except BaseException as exc:  # the task is ours: nothing awaits it
            if not self.ready.done():
                failed = exc if isinstance(exc, Exception) else ConnectionError("closed")
                self.ready.set_exception(failed)
        finally:
            self.retired = True
            _LOOP.sessions.discard(self)


async def _open(stack: AsyncExitStack, request: dict[str, Any], folder: Path) -> Any:
    """An initialized SDK session with the server `request` says."""
    from mcp import ClientSession

    if "url" in request:
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        http = httpx2.AsyncClient(headers=request["headers"], timeout=httpx2.Timeout(30, read=300))
        await stack.enter_async_context(http)
        streams = streamable_http_client(request["url"], http_client=http)
    else:
        from mcp.client.stdio import StdioServerParameters, stdio_client

        cmd = request["command"]
        params = StdioServerParameters(command=cmd[0], args=cmd[1:], env=request["env"], cwd=folder)
        streams = stdio_client(params, errlog=sys.__stderr__ or sys.stderr)
    read, write = await stack.enter_async_context(streams)
    session = await stack.enter_async_context(ClientSession(read, write))
    await session.initialize()
    return session


async def _listing(session: Any) -> dict[str, Any]:
    """The server's tools, by name: their input schemas (every page of the listing)."""
    from mcp.types import PaginatedRequestParams

    tools: dict[str, Any] = {}
    page = await session.list_tools()
    for _ in range(_PAGES):
        for tool in page.tools:
            tools[tool.name] = tool.model_dump(by_alias=True, mode="json").get("inputSchema")
        if page.next_cursor is None:
            break
        page = await session.list_tools(params=PaginatedRequestParams(cursor=page.next_cursor))
    return tools


async def _ready(session: _Session, server: McpServer) -> Any:
    """The session's SDK session once connected; a failure to connect as a ToolError."""
    try:
        return await asyncio.shield(session.ready)
    except Exception as exc:  # not CancelledError: the caller gave up
        message = f"cannot connect to the MCP server {server.where()}: {_cause(exc)[1]}"
        raise ToolError(message, ErrorKind.CONNECTION) from exc


def _call_failure(exc: Exception, name: str, *, sent: bool) -> ToolError:
    """A failed tools/call as a ToolError whose kind the retry rules understand."""
    cause, text = _cause(exc)
    code = getattr(getattr(cause, "error", None), "code", None)
    if isinstance(code, int):
        if code == -32000 or (code == -32600 and "terminated" in text.lower()):
            kind = ErrorKind.CONNECTION  # the connection closed, or the session expired
            sent = sent and code == -32000
        elif code == -32001:
            kind = ErrorKind.TIMEOUT
        else:
            kind = _REFUSED.get(code, ErrorKind.ERROR)
            sent = sent and code not in _REFUSED
        return ToolError(f"MCP tool {name}: the server answered {text}", kind, maybe_sent=sent)
    import anyio

    closed = (OSError, EOFError, anyio.ClosedResourceError, anyio.BrokenResourceError)
    kind = ErrorKind.CONNECTION if isinstance(cause, closed) else ErrorKind.ERROR
    return ToolError(f"MCP tool {name}: {text}", kind, maybe_sent=sent)


def _value(result: Any, name: str) -> Any:
    """A tool's result as runner keeps it, or its error (isError) as a ToolError."""
    data = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    parts = [p for p in data.get("content") or [] if isinstance(p, dict)]
    if data.get("isError"):
        text = " ".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")
        message = f"MCP tool {name} failed: {text.strip()[:_MESSAGE] or 'no message'}"
        raise ToolError(message, ErrorKind.EXCEPTION)
    if data.get("structuredContent") is not None:
        return data["structuredContent"]
    if len(parts) == 1 and parts[0].get("type") == "text":
        text = str(parts[0].get("text", ""))
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            return text
    return parts or None


def _cause(exc: BaseException) -> tuple[BaseException, str]:
    """The first error inside (nested) exception groups, as the SDK's task groups raise
    them, and its words: an MCP error's message, else what it says."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    message = getattr(getattr(exc, "error", None), "message", None)
    text = str(message) if isinstance(message, str) else str(exc)
    return exc, (text or type(exc).__name__)[:_MESSAGE]


class _Loop:
    """The private event loop of every mcp tool, on a daemon thread, and its open
    sessions (closed at exit, so stdio servers stop). A session's key is a digest of
    where its server is and how it is reached: a changed secret opens a new one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.sessions: set[_Session] = set()  # only touched on the loop's thread

    def get(self) -> asyncio.AbstractEventLoop:
        """The loop, started on first use (again after a fork: threads do not survive)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._loop, self.sessions = asyncio.new_event_loop(), set()
                self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
                self._thread.start()
            assert self._loop is not None
            return self._loop

    def acquire(self, request: dict[str, Any], folder: Path) -> _Session:
        """The usable session with this server, opened if there is none; the caller
        releases it."""
        text = json.dumps([str(folder) if "command" in request else "", request], sort_keys=True)
        key = hashlib.sha256(text.encode()).hexdigest()
        usable = (s for s in self.sessions if s.key == key and not s.retired)
        session = next(usable, None) or _Session(key, request, folder)
        self.sessions.add(session)
        session.users += 1
        return session

    def close(self, within: float = 10.0) -> None:
        """Close every session, waiting at most `within` seconds for them to end."""
        with self._lock:
            alive = self._thread is not None and self._thread.is_alive()
        if not alive or self._loop is None:
            return

        async def close_all() -> None:
            for session in self.sessions:
                session.users = 0
                session.retire()
            if self.sessions:
                await asyncio.wait([s.task for s in self.sessions], timeout=within)

        try:
            asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(within + 1)
        except Exception:  # at exit, or a server slow to stop: it is left behind
            return


_LOOP = _Loop()
close_sessions = _LOOP.close  # every open session: at exit, and by tests
atexit.register(close_sessions, 5.0)

KIND = Mcp()
