"""Fixtures for every test (a scripted HTTP server, a refused URL), and two guards that
keep the marks honest: a test that kills processes is marked `slow`, a test that uses
PostgreSQL is marked `postgres`."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator

import pytest
from scripted_server import ScriptedServer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test on PostgreSQL (a fixture named *postgres*, or a parameter whose id says
    postgres) carries the `postgres` mark, so that `-m "not postgres"` deselects it."""
    unmarked = [
        item.nodeid
        for item in items
        if _uses_postgres(item) and not item.get_closest_marker("postgres")
    ]
    if unmarked:
        raise pytest.UsageError(
            "these tests use PostgreSQL but are not marked "
            "@pytest.mark.postgres:\n  " + "\n  ".join(unmarked)
        )


def _uses_postgres(item: pytest.Item) -> bool:
    fixtures = getattr(item, "fixturenames", ())
    callspec = getattr(item, "callspec", None)
    return any("postgres" in name for name in fixtures) or (
        callspec is not None and "postgres" in callspec.id
    )


@pytest.fixture
def http_server() -> Iterator[ScriptedServer]:
    """A scripted HTTP server on 127.0.0.1 (port 0), shut down after the test."""
    server = ScriptedServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A URL on 127.0.0.1 where nothing listens: the port is bound, never listened on,
    so a connection is refused for as long as the test runs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.fixture(autouse=True)
def _killing_needs_the_slow_mark(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """A test that signals a process (a crash test, a kill and resume) must be marked
    `slow`, so that `-m "not slow"` stays the fast loop. The signal is still sent (no
    process is left behind); the test errors at teardown. Signal 0 only asks whether a
    process lives, and is allowed everywhere."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    sent: list[str] = []
    kill, killpg = os.kill, os.killpg

    def guarded_kill(pid: int, sig: int) -> None:
        if sig != 0:
            sent.append(f"{signal.Signals(sig).name} to process {pid}")
        kill(pid, sig)

    def guarded_killpg(pgid: int, sig: int) -> None:
        if sig != 0:
            sent.append(f"{signal.Signals(sig).name} to process group {pgid}")
        killpg(pgid, sig)

    monkeypatch.setattr(os, "kill", guarded_kill)
    monkeypatch.setattr(os, "killpg", guarded_killpg)
    yield
    if sent:
        pytest.fail(
            f"{request.node.nodeid} sent {', '.join(sent)}: a test that kills "
            "processes is marked @pytest.mark.slow",
            pytrace=False,
        )
