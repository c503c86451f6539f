"""Crash reports: an internal error's traceback goes to a folder of
the store (`.runner/crashes/` here, beside a SQLite `--db` file, or the user's cache
for other databases), only the newest 20 are kept, and no secret is written into one."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import pytest

from runner.cli import runs, validate
from runner.cli.main import main

SECRET = "tok-9f3c2a7b51e4"
KEPT = 20


def crash(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, message: str) -> None:
    """Make the command `module.name` fail with a bug whose message is `message`."""

    def broken(args: Any, out: Any) -> int:
        raise RuntimeError(message)

    monkeypatch.setattr(module, name, broken)


def report_of(capsys: pytest.CaptureFixture[str]) -> Path:
    err = capsys.readouterr().err
    found = re.fullmatch(
        r"runner: internal error \(RuntimeError\); this is a bug in runner\. "
        r"The traceback is in (\S+)\n",
        err,
    )
    assert found, err
    return Path(found.group(1))


@pytest.fixture(autouse=True)
def _here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNNER_DB", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_report_goes_under_the_default_store_folder_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHOP_API_TOKEN", SECRET)
    monkeypatch.setenv("DB_PASSWORD", "hunter2hunter2")
    monkeypatch.setenv("RUNNER_DSN", "postgresql://ann:pa55word-xyz@db.test/runs")
    crash(
        monkeypatch,
        validate,
        "cmd_validate",
        f"sent {SECRET!r} and {b'hunter2hunter2'!r} to pa55word-xyz",
    )

    assert main(["validate", "flow.yaml"], out=io.StringIO()) == 3

    report = report_of(capsys)
    assert report.parent == tmp_path / ".runner" / "crashes"
    text = report.read_text(encoding="utf-8")
    assert "Traceback" in text and "RuntimeError: sent" in text
    for secret in (SECRET, "hunter2hunter2", "pa55word-xyz"):
        assert secret not in text
    assert "[secret SHOP_API_TOKEN]" in text and "[secret DB_PASSWORD]" in text


def test_report_leaves_out_the_secrets_the_flow_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hook = "https://chat.test/hooks/T0KEN-abcdef"  # a name that does not look secret
    monkeypatch.setenv("SALES_WEBHOOK", hook)
    flow = tmp_path / "flow.yaml"
    flow.write_text('steps: [{id: a, args: {u: "{{ secret.SALES_WEBHOOK }}"}}]\n')
    crash(monkeypatch, runs, "cmd_run", f"cannot post to {hook}")

    code = main(["run", str(flow), "--input", "in.json"], out=io.StringIO())

    assert code == 3
    text = report_of(capsys).read_text(encoding="utf-8")
    assert "T0KEN-abcdef" not in text
    assert "cannot post to [secret SALES_WEBHOOK]" in text


@pytest.mark.parametrize(
    ("db", "folder"),
    [
        ("sqlite:///{tmp}/store/runs.db", "{tmp}/store/crashes"),
        ("sqlite:///store/runs.db", "{tmp}/store/crashes"),
        ("postgresql+psycopg://ann@db.test/runs", "{tmp}/cache/runner/crashes"),
        ("sqlite://", "{tmp}/cache/runner/crashes"),
    ],
    ids=["sqlite-file", "sqlite-relative-file", "database-server", "sqlite-memory"],
)
def test_report_goes_beside_the_store_the_command_uses(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    db: str,
    folder: str,
) -> None:
    crash(monkeypatch, runs, "cmd_runs", "boom")

    assert main(["runs", "--db", db.format(tmp=tmp_path)], out=io.StringIO()) == 3

    report = report_of(capsys)
    assert report.parent.resolve() == Path(folder.format(tmp=tmp_path)).resolve()


def test_runner_db_names_the_store_when_no_db_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RUNNER_DB", f"sqlite:///{tmp_path}/elsewhere/runs.db")
    crash(monkeypatch, runs, "cmd_runs", "boom")

    assert main(["runs"], out=io.StringIO()) == 3

    assert report_of(capsys).parent == tmp_path / "elsewhere" / "crashes"


def test_only_the_newest_reports_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / ".runner" / "crashes"
    folder.mkdir(parents=True)
    old = []
    for n in range(KEPT + 5):
        path = folder / f"crash-old-{n:02}.txt"
        path.write_text("old")
        os.utime(path, (1_000_000 + n, 1_000_000 + n))
        old.append(path)
    (folder / "notes.txt").write_text("not a crash report")
    crash(monkeypatch, validate, "cmd_validate", "boom")

    assert main(["validate", "flow.yaml"], out=io.StringIO()) == 3

    report = report_of(capsys)
    kept = sorted(p for p in folder.iterdir() if p.name.startswith("crash-"))
    assert len(kept) == KEPT
    assert report in kept
    assert sorted(set(old) & set(kept)) == old[-(KEPT - 1) :]
    assert (folder / "notes.txt").exists()
