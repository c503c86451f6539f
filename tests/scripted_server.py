"""A real HTTP server on 127.0.0.1 that answers from a script: the `http_server`
fixture's server, importable by tests (`from scripted_server import Reply`) for their
tables of replies. It is not in conftest.py because more than one conftest.py exists
(tests/store/ has its own), and `from conftest import ...` gets whichever was loaded last.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Reply:
    """One scripted response: status, headers, body, delay. The body is bytes, text, a
    JSON value, or a function of the request (`Received`) that returns one of those.
    `drop` closes the connection without any response (after the delay)."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False

    def encoded(self, request: Received) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        body = self.body(request) if callable(self.body) else self.body
        if body is None:
            return b"", headers
        if isinstance(body, bytes):
            return body, headers
        if isinstance(body, str):
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            return body.encode("utf-8"), headers
        headers.setdefault("Content-Type", "application/json")
        return json.dumps(body).encode("utf-8"), headers


@dataclass(frozen=True)
class Received:
    """One request the server saw, recorded as it arrived (before any delay)."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]  # names lower-cased
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        return json.loads(self.body)


class ScriptedServer:
    """A real HTTP server on 127.0.0.1 that answers each path from a per-test queue of
    replies and records every request. A path whose queue is empty answers 418."""

    UNSCRIPTED = 418

    def __init__(self) -> None:
        self._scripts: dict[str, deque[Reply]] = {}
        self._lock = threading.Condition()
        self._release = threading.Event()  # set at teardown: delayed replies stop waiting
        self.requests: list[Received] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        host, port = self._httpd.server_address[:2]
        self.url = f"http://{host}:{port}"

    def script(self, path: str, *replies: Reply) -> None:
        """Queue replies for `path` (without query); they are used in order."""
        with self._lock:
            self._scripts.setdefault(path, deque()).extend(replies)

    def requests_to(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def wait_for_requests(
        self, count: int, *, path: str | None = None, timeout: float = 5.0
    ) -> list[Received]:
        """Wait (on a condition, with a deadline) until at least `count` requests came."""

        def seen() -> list[Received]:
            return [r for r in self.requests if path is None or r.path == path]

        with self._lock:
            if not self._lock.wait_for(lambda: len(seen()) >= count, timeout=timeout):
                raise AssertionError(
                    f"expected {count} requests to {path or 'the server'} "
                    f"within {timeout}s; saw {len(seen())}"
                )
            return seen()

    def _next_reply(self, path: str) -> Reply:
        with self._lock:
            queue = self._scripts.get(path)
            if queue:
                return queue.popleft()
        return Reply(self.UNSCRIPTED, f"no scripted reply left for {path}")

    def _record(self, request: Received) -> None:
        with self._lock:
            self.requests.append(request)
            self._lock.notify_all()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                request = Received(self.command, parts.path, parts.query, headers, body)
                server._record(request)
                reply = server._next_reply(parts.path)
                if reply.delay:
                    server._release.wait(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    return
                payload, reply_headers = reply.encoded(request)
                try:
                    self.send_response(reply.status)
                    for name, value in reply_headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up (a timeout): nothing to answer
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
