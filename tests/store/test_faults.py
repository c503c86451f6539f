"""Storage faults, made for real, say what is wrong and what to do, exit 1, and leave
nothing half-written: a corrupt or damaged store, a read-only one, a full disk, a
PostgreSQL server that is not there or goes away mid-run, and a SQLite file deleted
while a run uses it.

Full and read-only disks are tiny tmpfs mounts (root only: skipped elsewhere).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.cli.main import main
from runner.core.errors import StoreError
from runner.lang.load import load_flow
from runner.runtime.engine import Engine
from runner.store.sql import SqlStore

FLOW = """\
version: 1
name: faults
input: {type: object}
tools:
  step: {python: "tools.faulty:step", input: {type: object, required: [name]}}
steps:
  - {id: one, tool: step, args: {name: one}}
  - {id: two, tool: step, args: {name: two}}
  - {id: three, tool: step, args: {name: three}}
on_error: dead_letter
"""

TOOL = '''\
"""Each step may do harm, once, as FAULT says: fill the disk, or delete the store."""

import os
from pathlib import Path


def step(name):
    harm, at, target, once = os.environ.get("FAULT", "none:-:-:-").split(":", 3)
    if at == name and not Path(once).exists():
        Path(once).touch()
        if harm == "fill":
            with open(target, "wb") as filler:
                try:
                    while True:
                        filler.write(b"x" * 65536)
                        filler.flush()
                except OSError:
                    pass
            return {"name": name, "big": "y" * 300_000}
        if harm == "delete":
            for suffix in ("", "-wal", "-shm"):
                Path(target + suffix).unlink(missing_ok=True)
    return {"name": name}
'''


@pytest.fixture
def flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "flow"
    (folder / "tools").mkdir(parents=True)
    (folder / "tools" / "__init__.py").write_text("")
    (folder / "tools" / "faulty.py").write_text(TOOL)
    (folder / "faults.yaml").write_text(FLOW)
    (folder / "in.json").write_text("{}")
    monkeypatch.chdir(folder)
    monkeypatch.delenv("RUNNER_DB", raising=False)
    return folder / "faults.yaml"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


RUN = ("run", "faults.yaml", "--input", "in.json")


def run_flow(capsys: pytest.CaptureFixture[str], db: str) -> tuple[int, str, str]:
    return cli(capsys, *RUN, "--db", db)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts a tmpfs of the given size (e.g. "1m") under tmp_path; skips the test
    where mounting is not allowed."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (root only): {done.stderr.strip()}")
        mounted.append(point)
        return point

    try:
        yield mount
    finally:
        for point in mounted:
            subprocess.run(["umount", "-l", str(point)], check=False)


# -- corrupt and damaged -------------------------------------------------------------------
def _garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 64)


def _damaged(path: Path) -> None:
    """A real run store whose pages after the first are overwritten."""
    SqlStore(f"sqlite:///{path}").close()
    with path.open("r+b") as file:
        file.seek(4096)
        file.write(b"\xa5" * (path.stat().st_size - 4096))


@pytest.mark.parametrize(
    ("damage", "says"),
    [(_garbage, "file is not a database"), (_damaged, "database disk image is malformed")],
)
@pytest.mark.parametrize("command", ["runs", "run"])
def test_a_corrupt_store_is_named_and_left_alone(
    flow: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path], None],
    says: str,
    command: str,
) -> None:
    store = flow.parent / "bad.db"
    damage(store)
    before = store.read_bytes()
    code, out, err = cli(
        capsys, *(["runs"] if command == "runs" else RUN), "--db", "sqlite:///bad.db"
    )
    assert (code, out) == (1, "")
    assert err == (
        f"runner: the run store at bad.db is not a runner database or is damaged: {says}. "
        "Move it aside (keep it for its runs) and start a new one, or give another "
        "database with --db\n"
    )
    assert store.read_bytes() == before


# -- read-only -----------------------------------------------------------------------------
READ_ONLY = (
    "runner: cannot write to the run store at {path}: the file or its folder is "
    "read-only. Make both writable, or give another database with --db\n"
)


def test_a_store_opened_read_only_refuses_a_run(
    flow: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SQLite's own read-only mode (a URI with mode=ro): reading works, a run is refused
    before anything is written."""
    path = flow.parent / "runs.db"
    assert run_flow(capsys, f"sqlite:///{path}")[0] == 0
    url = f"sqlite:///file:{path}?mode=ro&uri=true"
    code, out, err = cli(capsys, "runs", "--db", url)
    assert (code, err) == (0, "")
    assert len(out.splitlines()) == 2
    code, out, err = run_flow(capsys, url)
    assert (code, out, err) == (1, "", READ_ONLY.format(path=path))
    assert len(SqlStore(f"sqlite:///{path}").list_runs()) == 1


def test_a_store_on_a_read_only_disk(
    flow: Path, capsys: pytest.CaptureFixture[str], tmpfs: Callable[[str], Path]
) -> None:
    disk = tmpfs("1m")
    path = disk / "runs.db"
    SqlStore(f"sqlite:///{path}").close()
    remount = subprocess.run(
        ["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True, check=False
    )
    assert remount.returncode == 0, remount.stderr
    for args in (("runs",), RUN):
        code, out, err = cli(capsys, *args, "--db", f"sqlite:///{path}")
        assert (code, out, err) == (1, "", READ_ONLY.format(path=path)), args


# -- a full disk ---------------------------------------------------------------------------
def test_a_full_disk_stops_the_run_at_its_last_checkpoint(
    flow: Path,
    capsys: pytest.CaptureFixture[str],
    tmpfs: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Step two fills the disk, so its checkpoint cannot be written: the command says
    so and exits 1; the run is still at step two with one checkpoint; once there is
    room again, `runner resume` finishes it."""
    disk = tmpfs("1m")
    path, filler = disk / "runs.db", disk / "filler"
    monkeypatch.setenv("FAULT", f"fill:two:{filler}:{flow.parent / 'filled'}")
    done = subprocess.run(  # a process of its own: it exits holding the run's lease
        [sys.executable, "-m", "runner", *RUN, "--db", f"sqlite:///{path}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    code, out, err = done.returncode, done.stdout, done.stderr
    assert (code, out) == (1, "")
    assert err == (
        f"runner: cannot write to the run store at {path}: the disk is full. Nothing of "
        "the last write was kept: free some space, then continue any interrupted run "
        "with `runner resume RUN`\n"
    )
    filler.unlink()
    store = SqlStore(f"sqlite:///{path}")
    [record] = store.list_runs()
    assert (record.status, record.position, record.steps_run) == ("running", "two", 1)
    assert [c.step_id for c in store.checkpoints(record.id)] == ["one"]
    code, out, err = cli(capsys, "resume", record.id, "--db", f"sqlite:///{path}")
    assert (code, err) == (0, ""), err
    assert [c.step_id for c in store.checkpoints(record.id)] == ["one", "two", "three"]
    store.close()


# -- a SQLite file deleted mid-run --------------------------------------------------------
def test_a_store_deleted_mid_run_is_noticed(
    flow: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step two deletes the store's files: its commit is refused, the run is not
    reported completed, and no empty store is left in their place."""
    path = flow.parent / "runs.db"
    monkeypatch.setenv("FAULT", f"delete:two:{path}:{flow.parent / 'deleted'}")
    code, out, err = run_flow(capsys, "sqlite:///runs.db")
    assert (code, out) == (1, "")
    assert err == (
        "runner: the run store at runs.db was deleted or replaced while runner was using "
        f"it ({path}); nothing more was written to it. Restore the file to keep its runs, "
        "or start them again with `runner run`\n"
    )
    assert not path.exists()


# -- PostgreSQL that is not there -----------------------------------------------------------
def test_a_server_that_does_not_answer(
    refused_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "postgresql+psycopg://runner@" + refused_url.removeprefix("http://") + "/runs"
    for args in (["runs"], ["show", "r1"], ["review", "list"]):
        code, out, err = cli(capsys, *args, "--db", url)
        assert (code, out) == (1, ""), args
        assert err.startswith(f"runner: cannot reach the database server at {url}: "), err
        assert err.endswith(
            ". Check that it is running and that the URL (--db or RUNNER_DB) is right\n"
        )
        assert "Connection refused" in err


class Proxy:
    """A TCP proxy on 127.0.0.1 to the PostgreSQL server: `stop` cuts every connection
    and refuses new ones, as a server that went down."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass

    def stop(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.mark.postgres
def test_a_server_that_goes_away_mid_run(postgres_url: str, flow: Path) -> None:
    """The server goes away while step two runs: its commit fails with a message that
    names the server, and the run is at step two when the server is back."""
    import sqlalchemy as sa

    real = sa.make_url(postgres_url)
    proxy = Proxy(real.host or "127.0.0.1", real.port or 5432)
    through = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    store = SqlStore(through, lease_seconds=1)  # the commit is tried again for 1 s, not 60

    def two(call: Any) -> Any:
        if call.args["name"] == "two":
            proxy.stop()
        return {"name": call.args["name"]}

    with pytest.raises(StoreError) as stopped:
        Engine(store, tools={"step": two}).start(load_flow(str(flow)), {})
    shown = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=True)
    assert str(stopped.value).startswith(f"cannot reach the database server at {shown}: ")
    store.close()
    again = SqlStore(postgres_url)
    [record] = again.list_runs()
    assert (record.status, record.position, record.steps_run) == ("running", "two", 1)
    again.close()
