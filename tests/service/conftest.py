"""Fixtures of the HTTP intake's tests: `runner serve` as a real process on a free port
of 127.0.0.1 (it is started with `--port 0` and says which port it took), over a SQLite
file and a folder of flows that need no model:

- greet: a person signs off a greeting (an `approval` step: the run escalates at once),
  then a policy checks it;
- screen: a policy checks the input's text; a rude one sends the run to the dead-letter
  queue (a failed run, for retry and drop);
- pages: one policy step, only ever queued (the paging tests list it alone);
- broken.yaml: a flow that does not compile (the health check reports it).

Runs that must escalate or fail are run in the test process (`Intake.run`), on the same
database the server uses: the server itself only queues runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving import listening

from runner.lang.load import load_flow
from runner.runtime.engine import Engine, RunResult
from runner.service.tokens import new_token
from runner.store.sql import SqlStore

ROOT = Path(__file__).resolve().parents[2]
BODY_LIMIT = 4096  # --max-body-bytes of the servers here: oversize bodies stay small

FLOWS = {
    "greet.yaml": """\
version: 1
name: greet
description: A person signs off a greeting; a policy checks it.
input:
  type: object
  required: [name]
  additionalProperties: false
  properties: {name: {type: string, minLength: 1}}
policies:
  polite: {deny: "(?i)go away", message: greetings are polite}
steps:
  - id: sign_off
    approval:
      title: "Greet {{ input.name }}"
      edit:
        type: object
        required: [greeting]
        properties: {greeting: {type: string, default: "Hello, {{ input.name }}."}}
  - id: check
    policies: [polite]
    text: "{{ steps.sign_off.output.greeting }}"
on_error: dead_letter
""",
    "screen.yaml": """\
version: 1
name: screen
description: A policy screens the input's text; a rude one is a dead letter.
input:
  type: object
  required: [text]
  properties: {text: {type: string}}
policies:
  polite: {deny: "(?i)go away", message: texts are polite}
steps:
  - id: screen
    policies: [polite]
    text: "{{ input.text }}"
    on_violation: dead_letter
on_error: dead_letter
""",
    "pages.yaml": """\
version: 1
name: pages
description: Only ever queued; the paging tests list its runs.
input: {type: object, required: [n], properties: {n: {type: integer}}}
policies:
  short: {deny: "x{50}", message: short}
steps:
  - id: only
    policies: [short]
    text: "{{ input.n }}"
on_error: dead_letter
""",
    "broken.yaml": """\
version: 1
name: broken
steps:
  - id: nothing
""",
}


@dataclass
class Intake:
    """A `runner serve` process, its store (opened here too) and its flow folder."""

    folder: Path
    db: str
    url: str
    process: subprocess.Popen[bytes]
    out: Path
    err: Path
    body_limit: int = BODY_LIMIT
    _store: SqlStore | None = field(default=None, repr=False)

    @property
    def store(self) -> SqlStore:
        if self._store is None:
            self._store = SqlStore(self.db)
        return self._store

    def token(self, name: str, *scopes: str) -> str:
        """A new API token (made straight in the store, as `runner tokens add` does)."""
        return new_token(self.store, name, scopes)[0]

    def client(self, token: str | None = None, **headers: str) -> httpx.Client:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=20)

    def run(self, flow: str, value: Any) -> RunResult:
        """Run a flow of the folder here, on the server's store, until it stops."""
        return Engine(self.store).start(load_flow(self.folder / f"{flow}.yaml"), value)

    def stop(self) -> int:
        """SIGTERM, then the exit code (uvicorn's graceful shutdown)."""
        if self._store is not None:
            self._store.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def log(self) -> str:
        return self.out.read_text() + self.err.read_text()


def flow_folder(root: Path) -> Path:
    folder = root / "flows"
    folder.mkdir(parents=True)
    for name, text in FLOWS.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def start_intake(root: Path, *extra: str) -> Intake:
    """`runner serve` on a free port, once it says where it listens."""
    folder = flow_folder(root)
    db = f"sqlite:///{root / 'runs.db'}"
    SqlStore(db).close()  # made before the server starts: the test process opens it too
    out, err = root / "serve.out", root / "serve.err"
    command = [sys.executable, "-m", "runner", "serve", "--flows", str(folder), "--db", db]
    command += ["--port", "0", "--max-body-bytes", str(BODY_LIMIT), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(command, cwd=root, stdout=stdout, stderr=stderr, env=env)
    url = listening(process, out, err)
    return Intake(folder, db, url, process, out, err)


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Intake]:
    """One server for a test module; stopped (SIGTERM) after its last test."""
    served = start_intake(tmp_path_factory.mktemp("intake"))
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture
def own_intake(tmp_path: Path) -> Iterator[Intake]:
    """A server of the test's own (a test that changes the server or its database);
    tests using it stop a process, so they are marked slow."""
    served = start_intake(tmp_path)
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture
def api_flows(tmp_path: Path) -> Path:
    """The flows above in a folder of the test's own (for an app run in-process)."""
    return flow_folder(tmp_path)
