"""API tokens: `runner tokens add|list|revoke` in-process, what the store keeps (a hash,
never the secret), and `TokenCheck`: scopes, refusals, and how long a revoked token is
still taken from the cache (a clock of the test's own, so no test waits)."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import pytest

from runner.cli import serve
from runner.cli.main import main
from runner.core.errors import UsageError
from runner.service import tokens
from runner.service.tokens import ScopeError, TokenCheck, TokenError, new_token
from runner.store.sql import SqlStore
from runner.store.tables import api_tokens

TOKEN = re.compile(r"rnr_([a-z0-9]{12})_([A-Za-z0-9_-]{43})")


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(args), out=out)
    return code, out.getvalue()


def test_a_token_is_shown_once_and_only_its_hash_is_stored(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = cli("tokens", "add", "ci", "--scope", "submit", "--scope", "review", "--db", db)
    assert code == 0
    found = TOKEN.fullmatch(out.strip())
    assert found, out
    token_id, secret = found.groups()
    assert capsys.readouterr().err == (
        f"token {token_id} (ci, review, submit): this is the only time it is shown; keep it now\n"
    )
    store = SqlStore(db)
    with store.engine.connect() as conn:
        row = conn.execute(api_tokens.select()).one()
    assert (row.id, row.name, row.scopes) == (token_id, "ci", "review,submit")
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    store.close()
    assert secret.encode() not in (tmp_path / "runs.db").read_bytes()


def test_tokens_are_listed_without_their_secrets_and_revoked(db: str) -> None:
    _, first = cli("tokens", "add", "ci", "--scope", "submit", "--db", db)
    _, second = cli("tokens", "add", "Lena (finance)", "--scope", "review", "--db", db)
    first_id, second_id = (TOKEN.fullmatch(t.strip()).group(1) for t in (first, second))  # type: ignore[union-attr]
    assert cli("tokens", "revoke", first_id, "--db", db) == (0, f"token {first_id} (ci) revoked\n")
    assert cli("tokens", "revoke", first_id, "--db", db) == (
        0,
        f"token {first_id} (ci) was revoked already\n",
    )
    code, listed = cli("tokens", "list", "--db", db)
    assert code == 0
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    rows = [re.split(r"\s{2,}", re.sub(stamp, "T", line)) for line in listed.splitlines()]
    assert rows == [
        ["ID", "NAME", "SCOPES", "CREATED", "REVOKED"],
        [first_id, "ci", "submit", "T", "T"],
        [second_id, "Lena (finance)", "review", "T", "-"],
    ]
    assert first.strip().split("_", 2)[2] not in listed
    _, as_json = cli("tokens", "list", "--db", db, "--format", "json")
    shown = json.loads(as_json)
    assert [(t["id"], t["scopes"], t["revoked_at"] is None) for t in shown] == [
        (first_id, ["submit"], False),
        (second_id, ["review"], True),
    ]
    assert all(set(t) == {"id", "name", "scopes", "created_at", "revoked_at"} for t in shown)


def test_revoking_no_token_says_so(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    SqlStore(db).close()
    assert cli("tokens", "revoke", "nope", "--db", db) == (1, "")
    assert capsys.readouterr().err == (
        "runner: no API token nope (`runner tokens list` shows them)\n"
    )


def test_a_token_needs_a_scope_the_api_knows(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("tokens", "add", "ci", "--scope", "everything")[0] == 2
    assert "invalid choice: 'everything'" in capsys.readouterr().err
    assert serve.SCOPES == tokens.SCOPES  # the command line lists them without importing


@pytest.mark.parametrize(
    ("name", "scopes"), [("", ["submit"]), ("x" * 197, ["submit"]), ("ci", []), ("ci", ["root"])]
)
def test_a_bad_name_or_scope_is_refused(name: str, scopes: list[str]) -> None:
    with pytest.raises(UsageError):
        new_token(SqlStore.memory(), name, scopes)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("scopes", "allowed"),
    [
        (["submit"], {"submit", None}),
        (["review"], {"review", None}),
        (["submit", "review"], {"submit", "review", None}),
        (["admin"], {"submit", "review", "admin", None}),
    ],
)
def test_a_token_may_do_what_its_scopes_say_and_admin_everything(
    scopes: list[str], allowed: set[str | None]
) -> None:
    store = SqlStore.memory()
    token, record = new_token(store, "ci", scopes)
    check = TokenCheck(store)
    for scope in ("submit", "review", "admin", None):
        if scope in allowed:
            assert check.caller(f"Bearer {token}", scope) == record
        else:
            with pytest.raises(ScopeError):
                check.caller(f"Bearer {token}", scope)


def test_a_revoked_token_is_refused_once_the_cache_time_is_over() -> None:
    store, clock = SqlStore.memory(), Clock()
    token, record = new_token(store, "ci", ["submit"])
    check = TokenCheck(store, ttl=2.0, clock=clock)
    assert check.caller(f"bearer {token}", "submit") == record  # the scheme in any case
    store.revoke_token(record.id)
    clock.now += 1.9
    assert check.caller(f"Bearer {token}", "submit") == record  # still remembered
    clock.now += 0.2
    with pytest.raises(TokenError, match=f"API token {record.id} was revoked; ask for a new one"):
        check.caller(f"Bearer {token}", "submit")


def test_a_wrong_secret_is_refused_even_from_the_cache() -> None:
    store = SqlStore.memory()
    token, _ = new_token(store, "ci", ["submit"])
    check = TokenCheck(store)
    check.caller(f"Bearer {token}", None)
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(TokenError, match="not valid here"):
        check.caller(f"Bearer {forged}", None)
