"""`runner serve` as a test's real process: waiting until it says where it listens."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

START_SECONDS = 60.0  # a busy machine imports Starlette and SQLAlchemy slowly


def listening(process: subprocess.Popen[bytes], out: Path, err: Path) -> str:
    """The address `runner serve` prints once it listens; the test fails, with the
    server's stderr, if it exits first or says nothing in START_SECONDS."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        for line in out.read_text().splitlines():
            if line.startswith("runner serve: listening on "):
                return line.split()[4]
        if process.poll() is not None:
            pytest.fail(f"runner serve exited {process.returncode}:\n{err.read_text()}")
        time.sleep(0.02)
    process.kill()
    pytest.fail(f"runner serve did not say where it listens in {START_SECONDS:g} s")
