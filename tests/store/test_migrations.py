"""The run store's schema revisions: release 0.1's database upgrades and goes on, a
migrated database equals a new one, and what is not this runner's to use is refused."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from runner.cli.main import main
from runner.core.errors import StoreError
from runner.core.events import RunStarted
from runner.store import migrate
from runner.store.revisions import HEAD, REVISIONS
from runner.store.sql import SqlStore

WAITING_AT_LIMIT = "20261129-200214-53dc1d9e"  # order A-2, amount 300


def _sqlite(path: Path) -> str:
    return f"sqlite:///{path}"


def _by_order(store: SqlStore) -> dict[str, Any]:
    return {r.input["order"]: r for r in store.list_runs()}


def _schema(url: str, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Tables, columns (type, nullability, default), keys and indexes, as reflected."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        return {
            name: _table(inspector, engine.dialect, name)
            for name in sorted(inspector.get_table_names())
            if name not in skip
        }
    finally:
        engine.dispose()


def _table(inspector: Any, dialect: sa.Dialect, name: str) -> dict[str, Any]:
    pk = inspector.get_pk_constraint(name)
    return {
        "columns": [
            (c["name"], c["type"].compile(dialect=dialect), c["nullable"], c.get("default"))
            for c in inspector.get_columns(name)
        ],
        "primary_key": (pk.get("name"), pk["constrained_columns"]),
        "foreign_keys": sorted(
            (tuple(fk["constrained_columns"]), fk["referred_table"], tuple(fk["referred_columns"]))
            for fk in inspector.get_foreign_keys(name)
        ),
        "indexes": sorted(
            (ix["name"], tuple(ix["column_names"]), bool(ix["unique"]))
            for ix in inspector.get_indexes(name)
        ),
    }


def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(query))]
    finally:
        engine.dispose()


def _migrate(url: str, target: str) -> None:
    """Run the migrations up to `target` on `url` (from nothing, for a new database)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            migrate.upgrade(conn, target)
    finally:
        engine.dispose()


def _set_revision(url: str, revision: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": revision})
    finally:
        engine.dispose()


def test_the_revisions_runner_knows_are_the_migration_scripts() -> None:
    assert migrate.revisions() == list(REVISIONS)
    assert REVISIONS[-1] == HEAD


# -- the database release 0.1 wrote ---------------------------------------------------
def test_release_0_1_database_upgrades_on_open_and_keeps_every_run(release_0_1: Path) -> None:
    url = _sqlite(release_0_1 / "runner-0.1.db")
    store = SqlStore(url)
    runs = _by_order(store)
    assert {order: r.status for order, r in runs.items()} == {
        "A-1": "completed",
        "A-2": "escalated",
        "A-3": "failed",
        "A-4": "escalated",
        "A-5": "rejected",
        "A-6": "completed",
    }
    assert (runs["A-2"].id, runs["A-2"].failed_step, runs["A-2"].input) == (
        WAITING_AT_LIMIT,
        "limit",
        {"order": "A-2", "amount": 300},
    )
    assert (runs["A-4"].failed_step, runs["A-4"].reason) == (
        "note",
        "policy no_promise: no guarantees in a refund note",
    )
    assert runs["A-3"].failed_step == "share" and "ZeroDivisionError" in runs["A-3"].reason
    (rejected,) = store.decisions(runs["A-5"].id)
    assert (rejected.decision, rejected.decided_by, rejected.step_id, rejected.note) == (
        "rejected",
        "Lena (finance)",
        "limit",
        "over the yearly limit",
    )
    (approved,) = store.decisions(runs["A-6"].id)
    assert (approved.decision, approved.decided_by, approved.note) == (
        "approved",
        "Lena (finance)",
        "known customer",
    )
    assert store.checkpoints(runs["A-6"].id)[-1].output == {"paid": 250, "order": "A-6"}
    effect = store.effect("pay-A-1")
    assert effect is not None and (effect.status, effect.result) == (
        "done",
        {"paid": 50, "order": "A-1"},
    )
    version = store.flow_version(runs["A-1"].flow_digest)
    assert (
        version.name,
        version.path,
        version.git_commit,
        version.abs_path,
        version.git_root,
        version.repo_path,
    ) == ("refund_limit", "refund_limit.yaml", None, None, None, None)
    started = store.events(runs["A-1"].id)[0]
    assert isinstance(started, RunStarted) and started.flow == "refund_limit"
    assert [e.kind for e in store.events(runs["A-5"].id)][-1] == "decision"
    store.close()
    assert _rows(url, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    assert _rows(url, "SELECT key, value FROM runner_meta") == [("schema", HEAD)]


def test_the_run_release_0_1_left_waiting_is_approved_and_completes(
    release_0_1: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(release_0_1)  # 0.1 kept the flow's path as given: refund_limit.yaml
    url = _sqlite(release_0_1 / "runner-0.1.db")
    code = main(["review", "approve", WAITING_AT_LIMIT, "--as", "Tester", "--db", url])
    assert code == 0
    store = SqlStore(url)
    assert store.run(WAITING_AT_LIMIT).status == "completed"
    pay = store.checkpoints(WAITING_AT_LIMIT)[-1]
    assert (pay.step_id, pay.output) == ("pay", {"paid": 300, "order": "A-2"})
    assert [d.decided_by for d in store.decisions(WAITING_AT_LIMIT)] == ["Tester"]
    store.close()


def test_processes_opening_release_0_1_database_at_once_upgrade_it_once(release_0_1: Path) -> None:
    url = _sqlite(release_0_1 / "runner-0.1.db")
    barrier = threading.Barrier(4)
    opened: list[object] = []

    def open_it() -> None:
        barrier.wait()
        try:
            store = SqlStore(url)
            opened.append(len(store.list_runs()))
            store.close()
        except Exception as exc:  # reported below, with the others
            opened.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert opened == [6, 6, 6, 6]
    assert _rows(url, "SELECT version_num FROM alembic_version") == [(HEAD,)]


# -- migrated databases equal new ones ------------------------------------------------
def test_revision_0001_is_exactly_the_schema_release_0_1_made(
    tmp_path: Path, release_0_1: Path
) -> None:
    url = _sqlite(tmp_path / "baseline.db")
    _migrate(url, "0001")
    release = _sqlite(release_0_1 / "runner-0.1.db")
    assert _schema(url, skip=("alembic_version",)) == _schema(release)
    query = (
        "SELECT type, name, sql FROM sqlite_master "
        "WHERE tbl_name != 'alembic_version' ORDER BY name"
    )
    assert _rows(url, query) == _rows(release, query)
    assert _rows(url, "SELECT key, value FROM runner_meta") == [("schema", "1")]


def test_upgraded_release_0_1_database_has_the_schema_of_a_new_one(
    tmp_path: Path, release_0_1: Path
) -> None:
    upgraded, new = _sqlite(release_0_1 / "runner-0.1.db"), _sqlite(tmp_path / "new.db")
    SqlStore(upgraded).close()
    SqlStore(new).close()
    assert _schema(upgraded) == _schema(new)
    assert "abs_path" in {c[0] for c in _schema(new)["flow_versions"]["columns"]}
    for query in ("SELECT key, value FROM runner_meta", "SELECT * FROM alembic_version"):
        assert _rows(upgraded, query) == _rows(new, query)


def test_every_migration_from_nothing_gives_the_schema_of_a_new_database(tmp_path: Path) -> None:
    migrated, new = _sqlite(tmp_path / "migrated.db"), _sqlite(tmp_path / "new.db")
    _migrate(migrated, "head")
    SqlStore(new).close()
    assert _schema(migrated) == _schema(new)


def test_a_downgrade_to_0001_gives_release_0_1_schema_back(release_0_1: Path) -> None:
    url = _sqlite(release_0_1 / "runner-0.1.db")
    before = _schema(url)
    SqlStore(url).close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        migrate.downgrade(conn, "0001")
    engine.dispose()
    assert _schema(url, skip=("alembic_version",)) == before
    assert _rows(url, "SELECT value FROM runner_meta") == [("1",)]


@pytest.mark.postgres
@pytest.mark.parametrize("stamped", [True, False], ids=["at-0001", "release-0.1"])
def test_postgres_at_0001_is_refused_until_runner_db_upgrade(
    postgres_url: str, another_postgres_url: str, stamped: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    _migrate(postgres_url, "0001")
    if not stamped:  # as release 0.1 left it: no alembic_version at all
        engine = sa.create_engine(postgres_url)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE alembic_version"))
        engine.dispose()
    with pytest.raises(StoreError) as refused:
        SqlStore(postgres_url)
    shown = "0001" if stamped else "0001 (release 0.1)"
    assert str(refused.value) == (
        f"the run store at {postgres_url} is at schema revision {shown}; this runner "
        f"needs {HEAD}: run `runner db upgrade --db {postgres_url}`"
    )
    assert main(["db", "upgrade", "--db", postgres_url]) == 0
    assert capsys.readouterr().out == f"upgraded {postgres_url} from {shown} to {HEAD}\n"
    SqlStore(postgres_url).close()
    SqlStore(another_postgres_url).close()
    assert _schema(postgres_url) == _schema(another_postgres_url)
    for query in ("SELECT key, value FROM runner_meta", "SELECT * FROM alembic_version"):
        assert _rows(postgres_url, query) == _rows(another_postgres_url, query)


@pytest.mark.postgres
def test_every_migration_on_postgres_gives_the_schema_of_a_new_database(
    postgres_url: str, another_postgres_url: str
) -> None:
    _migrate(postgres_url, "head")
    SqlStore(another_postgres_url).close()
    assert _schema(postgres_url) == _schema(another_postgres_url)


# -- refused ----------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def new_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return _sqlite(tmp_path / "runs.db")
    url: str = request.getfixturevalue("postgres_url")
    return url


def test_a_database_at_a_newer_revision_is_refused(new_store_url: str) -> None:
    SqlStore(new_store_url).close()
    _set_revision(new_store_url, "0999")
    with pytest.raises(StoreError) as refused:
        SqlStore(new_store_url)
    assert str(refused.value) == (
        f"the run store at {new_store_url} is at schema revision 0999, which this runner "
        f"does not know (it knows revisions up to {HEAD}): a newer runner has upgraded "
        "it. Use that runner, or another database (--db or RUNNER_DB)"
    )
    assert main(["db", "upgrade", "--db", new_store_url]) == 1


def test_a_database_of_a_runner_before_release_0_1_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE runs (id TEXT PRIMARY KEY)")
    old.commit()
    old.close()
    with pytest.raises(StoreError) as refused:
        SqlStore(_sqlite(path))
    assert str(refused.value) == (
        f"the run store at sqlite:///{path} has runner's tables but no schema revision "
        "(a runner older than release 0.1 made it): keep it aside with the runner that "
        "made it, or start a new one (--db or RUNNER_DB)"
    )


# -- runner db --------------------------------------------------------------------------
def _db(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["db", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_db_current_on_new_old_and_missing_databases(
    tmp_path: Path, release_0_1: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new, old = _sqlite(tmp_path / "new.db"), _sqlite(release_0_1 / "runner-0.1.db")
    SqlStore(new).close()
    assert _db(["current", "--db", new], capsys) == (0, f"{new}: {HEAD} (head)\n", "")
    assert _db(["current", "--db", old], capsys) == (
        0,
        f"{old}: 0001 (release 0.1), behind head {HEAD}: run `runner db upgrade --db {old}`\n",
        "",
    )
    missing = tmp_path / "nowhere" / "runs.db"
    assert _db(["current", "--db", _sqlite(missing)], capsys) == (
        1,
        "",
        f"runner: no run store at {_sqlite(missing)}: {missing} does not exist\n",
    )
    assert not missing.parent.exists()
    assert _rows(old, "SELECT value FROM runner_meta") == [("1",)]  # current only looks


def test_db_current_as_json(
    tmp_path: Path, release_0_1: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _sqlite(release_0_1 / "runner-0.1.db")
    code, out, _ = _db(["current", "--db", old, "--format", "json"], capsys)
    assert code == 0
    assert json.loads(out) == {
        "url": old,
        "revision": "0001",
        "head": HEAD,
        "at_head": False,
        "known": True,
        "stamped": False,
    }
    assert _db(["upgrade", "--db", old], capsys)[0] == 0
    assert json.loads(_db(["current", "--db", old, "--format", "json"], capsys)[1]) == {
        "url": old,
        "revision": HEAD,
        "head": HEAD,
        "at_head": True,
        "known": True,
        "stamped": True,
    }


def test_db_upgrade_says_what_it_did(
    tmp_path: Path, release_0_1: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _sqlite(release_0_1 / "runner-0.1.db")
    assert _db(["upgrade", "--db", old], capsys) == (
        0,
        f"upgraded {old} from 0001 (release 0.1) to {HEAD}\n",
        "",
    )
    assert _db(["upgrade", "--db", old], capsys) == (0, f"{old} is up to date ({HEAD})\n", "")
    missing = tmp_path / "runs.db"
    assert _db(["upgrade", "--db", _sqlite(missing)], capsys) == (
        1,
        "",
        f"runner: no run store at {_sqlite(missing)}: {missing} does not exist\n",
    )


@pytest.mark.postgres
def test_db_commands_on_an_empty_postgres_database(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _db(["current", "--db", postgres_url], capsys) == (
        0,
        f"{postgres_url}: empty, no run store yet (a store is created at {HEAD} when "
        "first opened)\n",
        "",
    )
    assert _db(["upgrade", "--db", postgres_url], capsys) == (
        0,
        f"created the run store at {postgres_url} at schema revision {HEAD}\n",
        "",
    )
    assert _db(["current", "--db", postgres_url], capsys)[1] == f"{postgres_url}: {HEAD} (head)\n"
