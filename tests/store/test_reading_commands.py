"""Commands that only read the run store never make one: outside a project they say
which database they looked for, and that there is none. Only commands that start runs
make a store."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from runner.cli.main import main

FLOW = """\
version: 1
name: hello
tools:
  echo: {python: "tools.echo:echo"}
steps:
  - {id: greet, tool: echo, args: {text: hello}}
on_error: dead_letter
"""

READERS = [
    ("runs",),
    ("show", "r1"),
    ("resume", "r1"),
    ("review", "list"),
    ("review", "show", "r1"),
    ("dlq", "list"),
]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNNER_DB", raising=False)
    return tmp_path


@pytest.mark.parametrize("command", READERS, ids=" ".join)
def test_a_reading_command_outside_a_project_makes_no_store(
    here: Path, capsys: pytest.CaptureFixture[str], command: tuple[str, ...]
) -> None:
    code, out, err = cli(capsys, *command)
    assert (code, out) == (1, "")
    assert err == (
        f"runner: no run store at .runner/runner.db (here: {here}/.runner/runner.db): "
        "runs are stored where `runner run` ran, or give --db\n"
    )
    assert list(here.iterdir()) == []


def test_a_store_given_with_db_that_is_not_there(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "runs", "--db", "sqlite:///elsewhere/runs.db")
    assert err == (
        f"runner: no run store at elsewhere/runs.db (here: {here}/elsewhere/runs.db): "
        "runs are stored where `runner run` ran, or give --db\n"
    )
    assert (code, list(here.iterdir())) == (1, [])


def test_an_absolute_path_is_named_once(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "runs", "--db", f"sqlite:///{here}/runs.db")
    assert (code, err) == (
        1,
        f"runner: no run store at {here}/runs.db: runs are stored where `runner run` ran, "
        "or give --db\n",
    )


def test_an_empty_file_is_left_empty(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (here / "empty.db").touch()
    code, _, err = cli(capsys, "runs", "--db", "sqlite:///empty.db")
    assert (code, err) == (
        1,
        f"runner: no run store at empty.db (here: {here}/empty.db): "
        "runs are stored where `runner run` ran, or give --db\n",
    )
    assert (here / "empty.db").stat().st_size == 0


def test_another_sqlite_database_gets_no_tables(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = sa.create_engine("sqlite:///other.db")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE notes (text TEXT)"))
    code, _, err = cli(capsys, "runs", "--db", "sqlite:///other.db")
    assert (code, err) == (
        1,
        "runner: no run store in the database at sqlite:///other.db: it has none of "
        "runner's tables. Give the database `runner run` used with --db\n",
    )
    assert sa.inspect(engine).get_table_names() == ["notes"]
    engine.dispose()


@pytest.mark.postgres
def test_an_empty_postgres_database_gets_no_tables(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "review", "list", "--db", postgres_url)
    shown = sa.make_url(postgres_url).render_as_string(hide_password=True)
    assert (code, err) == (
        1,
        f"runner: no run store in the database at {shown}: it has none of runner's "
        "tables. Give the database `runner run` used with --db\n",
    )
    engine = sa.create_engine(postgres_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_run_makes_the_store_and_then_readers_read_it(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (here / "tools").mkdir()
    (here / "tools" / "__init__.py").write_text("")
    (here / "tools" / "echo.py").write_text("def echo(text):\n    return {'text': text}\n")
    (here / "hello.yaml").write_text(FLOW)
    (here / "in.json").write_text("{}")
    code, out, err = cli(capsys, "run", "hello.yaml", "--input", "in.json")
    assert (code, err) == (0, ""), err
    assert (here / ".runner" / "runner.db").is_file()
    code, out, err = cli(capsys, "runs")
    assert (code, err) == (0, "")
    assert out.splitlines()[1].split()[1:3] == ["hello", "completed"]
    assert cli(capsys, "review", "list") == (0, "nothing waiting\n", "")
