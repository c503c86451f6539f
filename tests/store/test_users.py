"""The review inbox's accounts and shared keys in the store (revision 0005), on SQLite
and PostgreSQL: a 0004 database gains them when upgraded, accounts keep a hash and no
password, and every server on one store gets the same signing key, made once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from runner.core.errors import StoreError
from runner.store import migrate
from runner.store.sql import SqlStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def test_accounts_are_added_read_changed_and_disabled(store_url: str) -> None:
    store = SqlStore(store_url)
    lena = store.add_user("lena", "$argon2id$hash", "reviewer", ["refund", "replies"], ["finance"])
    assert (lena.flows, lena.groups, lena.disabled_at) == (
        ("refund", "replies"),
        ("finance",),
        None,
    )
    store.add_user("omar", None, "admin")
    with pytest.raises(StoreError, match="an account named lena exists already"):
        store.add_user("lena", "$argon2id$other", "admin")
    assert [u.name for u in store.list_users()] == ["lena", "omar"]
    assert store.user("Lena") is None and store.user("omar").password_hash is None  # type: ignore[union-attr]
    assert store.set_password("lena", "$argon2id$new") and not store.set_password("zed", "x")
    assert store.disable_user("lena") and not store.disable_user("lena")
    changed = store.user("lena")
    assert changed is not None and changed.password_hash == "$argon2id$new"
    assert changed.disabled_at is not None and changed.disabled_at.tzinfo is not None
    store.close()


def test_servers_on_one_store_share_one_key_made_once(store_url: str) -> None:
    stores = [SqlStore(store_url) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    keys: list[str] = []

    def ask(store: SqlStore) -> None:
        barrier.wait()
        keys.append(store.service_key("inbox-session"))

    threads = [threading.Thread(target=ask, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(keys) == 4 and len(set(keys)) == 1 and len(keys[0]) >= 40
    assert stores[0].service_key("another") != keys[0]
    for store in stores:
        store.close()


def test_a_0004_database_gains_accounts_when_upgraded_and_loses_them_when_downgraded(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        migrate.upgrade(conn, "0004")
    assert "users" not in sa.inspect(engine).get_table_names()
    store = SqlStore(url)  # SQLite is upgraded when opened
    store.add_user("lena", None, "reviewer")
    store.close()
    assert {"users", "service_keys"} <= set(sa.inspect(engine).get_table_names())
    with engine.begin() as conn:
        migrate.downgrade(conn, "0004")
        assert conn.execute(sa.text("SELECT value FROM runner_meta")).scalar() == "0004"
    assert not {"users", "service_keys"} & set(sa.inspect(engine).get_table_names())
    engine.dispose()
