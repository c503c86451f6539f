"""A run whose process stopped: Ctrl-C says which run stopped where and how to continue
it; `runner runs` shows a run nobody runs any more as interrupted (its lease is free),
not as running for ever; `runner resume --all-interrupted` continues every such run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from runner.cli.main import main
from runner.store.leases import owner_id
from runner.store.records import FlowVersion, now
from runner.store.sql import SqlStore
from runner.store.tables import runs

FLOW = """\
version: 1
name: stops
input: {type: object, required: [id]}
tools:
  step: {python: "tools.stopping:step", input: {type: object, required: [name, id]}}
steps:
  - {id: one, tool: step, args: {name: one, id: "{{ input.id }}"}}
  - {id: two, tool: step, args: {name: two, id: "{{ input.id }}"}}
  - {id: three, tool: step, args: {name: three, id: "{{ input.id }}"}}
on_error: dead_letter
"""

TOOL = '''\
"""Logs `<id> <step>`. At STOP_AT's step, once per input id: raise KeyboardInterrupt
(STOP=raise, Ctrl-C as Python sees it), or wait for the signal the test sends."""

import os
import time
from datetime import timedelta
from pathlib import Path


def step(name, id):
    log = Path(os.environ["STOP_LOG"])
    with log.open("a") as file:
        file.write(f"{id} {name}\\n")
    once = log.with_name(f"stopped-{id}")
    if name == os.environ.get("STOP_AT") and not once.exists():
        once.touch()
        if os.environ.get("STOP") == "raise":
            raise KeyboardInterrupt
        time.sleep(120)
    return {"name": name}
'''


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "__init__.py").write_text("")
    (tmp_path / "tools" / "stopping.py").write_text(TOOL)
    (tmp_path / "stops.yaml").write_text(FLOW)
    for name in ("a", "b"):
        (tmp_path / f"{name}.json").write_text(json.dumps({"id": name}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNNER_DB", raising=False)
    monkeypatch.setenv("STOP_LOG", str(tmp_path / "steps.log"))
    monkeypatch.setenv("STOP_AT", "two")
    return tmp_path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def only_run(folder: Path) -> str:
    store = SqlStore(f"sqlite:///{folder / '.runner' / 'runner.db'}")
    try:
        return store.list_runs()[0].id
    finally:
        store.close()


def test_ctrl_c_names_the_run_and_how_to_continue_it(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STOP", "raise")
    code, out, err = cli(capsys, "run", "stops.yaml", "--input", "a.json")
    run = only_run(folder)
    assert (code, out) == (130, "")
    assert err == (
        f"runner: interrupted run {run} at step two; continue it with: runner resume {run}\n"
    )
    store = SqlStore(f"sqlite:///{folder / '.runner' / 'runner.db'}")
    record = store.run(run)
    store.close()
    assert (record.status, record.position, record.steps_run) == ("running", "two", 1)
    assert record.lease_owner is None  # given up: anyone may continue it at once

    code, out, err = cli(capsys, "runs")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[1].split()[:5] == [run, "stops", "interrupted", "two", "1"]
    assert lines[2] == (
        "1 interrupted (no process runs it): continue with `runner resume RUN`, "
        "or `runner resume --all-interrupted`"
    )
    code, out, _ = cli(capsys, "runs", "--format", "json")
    assert [(r["status"], r["interrupted"]) for r in json.loads(out)] == [("running", True)]

    assert cli(capsys, "resume", "--all-interrupted") == (0, f"run {run} completed\n", "")
    assert (folder / "steps.log").read_text().split("\n") == [
        "a one",
        "a two",
        "a two",
        "a three",
        "",
    ]
    assert cli(capsys, "resume", "--all-interrupted") == (0, "no interrupted runs\n", "")


def test_ctrl_c_with_db_names_the_database(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STOP", "raise")
    code, _, err = cli(
        capsys, "run", "stops.yaml", "--input", "a.json", "--db", "sqlite:///runs.db"
    )
    store = SqlStore("sqlite:///runs.db")
    run = store.list_runs()[0].id
    store.close()
    assert (code, err) == (
        130,
        f"runner: interrupted run {run} at step two; continue it with: "
        f"runner resume {run} --db sqlite:///runs.db\n",
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "give the RUN to resume, or --all-interrupted"),
        (("r1", "--all-interrupted"), "--all-interrupted continues every interrupted run: "),
        (("--all-interrupted", "--from", "two"), "--all-interrupted continues every "),
    ],
)
def test_resume_needs_a_run_or_all_interrupted(
    folder: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], says: str
) -> None:
    code, out, err = cli(capsys, "resume", *args)
    assert (code, out) == (2, "")
    assert err.startswith(f"runner: {says}")


def test_a_run_whose_lease_lapsed_shows_as_interrupted(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Held by another host whose lease ran out (a dead holder elsewhere), held by a
    process of an earlier boot of this host, or held by a live process: only the last
    one is running."""
    import socket

    url = "sqlite:///runs.db"
    store = SqlStore(url)
    version = FlowVersion("d" * 64, "stops", "stops.yaml", FLOW)
    host = socket.gethostname()
    store.create_run("r-gone", version, {}, "two", "elsewhere:1:0123456789ab:x")
    store.create_run("r-reboot", version, {}, "two", f"{host}:{os.getpid()}:000000000000:x")
    store.create_run("r-live", version, {}, "two", owner_id())
    with store.engine.begin() as conn:  # the lease of the holder elsewhere ran out
        conn.execute(
            runs.update()
            .where(runs.c.id == "r-gone")
            .values(lease_expires=now() - timedelta(seconds=1))
        )
    store.close()
    code, out, _ = cli(capsys, "runs", "--db", url)
    assert code == 0
    shown = {line.split()[0]: line.split()[2] for line in out.splitlines()[1:4]}
    assert shown == {"r-gone": "interrupted", "r-reboot": "interrupted", "r-live": "running"}


# -- real processes -----------------------------------------------------------------------
@pytest.mark.slow
def test_sigint_and_sigkill_then_resume_all(folder: Path) -> None:
    """`runner run` gets SIGINT (Ctrl-C) in step two, another `runner run` SIGKILL
    there: both show as interrupted, and `runner resume --all-interrupted` finishes
    both, a line each."""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    procs = {}
    for name in ("a", "b"):
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "runner", "run", "stops.yaml", "--input", f"{name}.json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for_line(folder / "steps.log", f"{name} two", procs[name])
    try:
        procs["a"].send_signal(signal.SIGINT)
        procs["b"].send_signal(signal.SIGKILL)
        _, err_a = procs["a"].communicate(timeout=60)
        procs["b"].wait(60)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    runs = _runs(env)
    assert (procs["a"].returncode, procs["b"].returncode) == (130, -signal.SIGKILL)
    a = next(str(r["run"]) for r in runs if str(r["run"]) in err_a)
    assert err_a.endswith(
        f"runner: interrupted run {a} at step two; continue it with: runner resume {a}\n"
    )
    assert [(r["status"], r["position"], r["interrupted"]) for r in runs] == [
        ("running", "two", True)
    ] * 2
    done = subprocess.run(
        [sys.executable, "-m", "runner", "resume", "--all-interrupted"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    oldest_first = [r["run"] for r in reversed(runs)]
    assert done.stdout.splitlines() == [f"run {run} completed" for run in oldest_first]
    assert [r["status"] for r in _runs(env)] == ["completed", "completed"]


def _runs(env: dict[str, str]) -> list[dict[str, object]]:
    listed = subprocess.run(
        [sys.executable, "-m", "runner", "runs", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    runs: list[dict[str, object]] = json.loads(listed.stdout)
    return runs


def _wait_for_line(log: Path, line: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not (log.exists() and line in log.read_text().splitlines()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no {line!r} in {log} within 60 s"
        time.sleep(0.02)
