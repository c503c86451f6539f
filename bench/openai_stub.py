"""A fake OpenAI-compatible model for benchmarks: every POST to /v1/chat/completions is
answered after exactly `--latency-ms`, with a valid chat-completion body (a short text
answer and its usage), whatever the request asks.

    .venv/bin/python bench/openai_stub.py [--port 0] [--latency-ms 200]

One asyncio process (aiohttp, no access log), so hundreds of requests wait at once at
the cost of one timer each. Once it listens it prints one line to stdout,
`listening on http://127.0.0.1:PORT`; GET /stats gives what it served: requests,
the most in flight at once, and the server's own seconds from request to answer (so a
client can tell the model's delay from its own). Stop it with SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

COMPLETIONS = "/v1/chat/completions"


@dataclass
class Stats:
    """What the server served: requests, peak concurrency, its own time per request."""

    requests: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    seconds: list[float] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        ordered = sorted(self.seconds) or [0.0]
        return {
            "requests": self.requests,
            "peak_in_flight": self.peak_in_flight,
            "server_p50_ms": ordered[len(ordered) // 2] * 1000,
            "server_max_ms": ordered[-1] * 1000,
        }


def completion(number: int, model: str) -> dict[str, Any]:
    """A chat-completion body: a short plain-text answer, with usage."""
    return {
        "id": f"chatcmpl-stub-{number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"Answer {number}."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }


def make_app(latency: float, stats: Stats) -> web.Application:
    """The server: chat completions after `latency` seconds, and /stats."""

    async def complete(request: web.Request) -> web.Response:
        started = time.perf_counter()
        stats.requests += 1
        stats.in_flight += 1
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        try:
            body = await request.json()
            number = stats.requests
            await asyncio.sleep(latency - (time.perf_counter() - started))
            return web.json_response(completion(number, str(body.get("model", "stub"))))
        finally:
            stats.in_flight -= 1
            stats.seconds.append(time.perf_counter() - started)

    async def report(_request: web.Request) -> web.Response:
        return web.json_response(stats.as_json())

    app = web.Application()
    app.router.add_post(COMPLETIONS, complete)
    app.router.add_get("/stats", report)
    return app


async def serve(port: int, latency: float) -> None:
    """Listen on 127.0.0.1:`port` (0: any free port), say where, serve until a signal."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(4096)  # a fleet opens hundreds of connections at once
    runner = web.AppRunner(make_app(latency, Stats()), access_log=None)
    await runner.setup()
    await web.SockSite(runner, listener, backlog=4096).start()
    print(f"listening on http://127.0.0.1:{listener.getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.latency_ms / 1000))


if __name__ == "__main__":
    main()
