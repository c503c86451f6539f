"""A small MCP server for the `mcp` tool kind's tests (tests/kinds/test_mcp.py), written
with the SDK's MCPServer (FastMCP in mcp 1.x).

Run as a stdio server (`python tests/mcp_server.py`), or served over streamable HTTP
from a test's own thread (`http_app()`: a new app each time, for uvicorn). Its tools:
structured data, text, JSON as text, an error, a stall longer than any test's timeout,
an environment variable, a request header, an exit without an answer (once), and a side
effect (a line appended to a file relative to the server's working directory).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError


def get_order(order_id: str, quantity: int = 1) -> dict[str, Any]:
    """An order, as structured content."""
    return {"id": order_id, "quantity": quantity, "status": "shipped"}


def greet(name: str) -> str:
    """A greeting, as plain text."""
    return f"hello {name}"


def totals(count: int) -> str:
    """JSON, written as text."""
    return f'{{"count": {count}, "items": []}}'


def refuse(reason: str) -> str:
    """Always fails: the result carries isError."""
    raise ToolError(f"refused: {reason}")


async def stall(seconds: float) -> str:
    """Answers after `seconds`: longer than the caller waits."""
    await asyncio.sleep(seconds)
    return "late"


def read_env(name: str) -> str:
    """The server's environment variable `name` (empty when unset)."""
    return os.environ.get(name, "")


def read_header(name: str, ctx: Context) -> str:
    """The HTTP request header `name` (empty when unset, or not over HTTP)."""
    headers = ctx.headers or {}
    return str(headers.get(name.lower(), ""))


def exit_once(marker: str) -> str:
    """Exits the server without an answer unless `marker` exists (which it creates)."""
    if not Path(marker).exists():
        Path(marker).touch()
        os._exit(3)
    return "back"


def append_line(file: str, line: str, idempotency_key: str = "") -> dict[str, Any]:
    """Appends `key line` to `file` (relative to the working directory): a side effect
    that a test counts."""
    path = Path(file)
    with path.open("a", encoding="utf-8") as out:
        out.write(f"{idempotency_key} {line}\n")
    return {"lines": len(path.read_text(encoding="utf-8").splitlines())}


STRUCTURED = (get_order, refuse, stall, append_line)
TEXT = (greet, totals, read_env, read_header, exit_once)  # results as text content only


def make_server() -> MCPServer:
    """A server with every tool above."""
    server = MCPServer("runner-test-server")
    for function in STRUCTURED:
        server.add_tool(function)
    for function in TEXT:
        server.add_tool(function, structured_output=False)
    return server


def http_app() -> Any:
    """A new server as a streamable HTTP app at /mcp, for uvicorn."""
    return make_server().streamable_http_app()


if __name__ == "__main__":
    make_server().run()
    # Gone as soon as stdin closes: the interpreter's own shutdown can outlast the SDK's
    # grace period on a busy machine, and then the client signals the server's group.
    os._exit(0)
