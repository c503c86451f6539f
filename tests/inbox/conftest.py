"""Fixtures of the review inbox's browser tests (see inbox_support)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from inbox_support import CHROMIUM, Served, WorkerThread, need_chromium, serve
from scripted_server import Reply, ScriptedServer


@pytest.fixture(scope="module")
def payments() -> Iterator[ScriptedServer]:
    """A real HTTP server on 127.0.0.1 that takes payments (and counts them)."""
    server = ScriptedServer()
    server.script("/pay", *[Reply(200, {"paid": True})] * 50)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def inbox(tmp_path_factory: pytest.TempPathFactory, payments: ScriptedServer) -> Iterator[Served]:
    """`runner serve` for the module, with a worker that runs approved runs."""
    served = serve(tmp_path_factory.mktemp("inbox"), payments.url)
    worker = WorkerThread(served.db)
    try:
        yield served
    finally:
        worker.stop()
        served.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, driven by Playwright (it cannot fetch a browser of its own)."""
    need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Path:
    from inbox_support import SCREENSHOTS

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
