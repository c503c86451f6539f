"""The API tokens of `runner serve`, as the store keeps them: each token's id, name,
scopes and the sha256 of its secret, never the secret itself (runner.service.tokens
makes tokens and checks them). A revoked token keeps its row, with the time it was
revoked, so that `runner tokens list` still shows who had access."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from runner.core.errors import StoreError
from runner.store.records import aware, now
from runner.store.tables import api_tokens


@dataclass(frozen=True)
class TokenRecord:
    """An API token as stored: `secret_hash` is the sha256 (hex) of its secret."""

    id: str
    name: str
    secret_hash: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None = None


class TokenStore:
    """API token operations of `SqlStore` (a mixin: it uses the store's transactions)."""

    _begin: Callable[[], contextlib.AbstractContextManager[sa.Connection]]
    _connect: Callable[[], contextlib.AbstractContextManager[sa.Connection]]

    def add_token(
        self, token_id: str, name: str, secret_hash: str, scopes: Sequence[str]
    ) -> TokenRecord:
        """Store a new token; StoreError if one with this id exists."""
        row = {
            "id": token_id,
            "name": name,
            "secret_hash": secret_hash,
            "scopes": ",".join(scopes),
            "created_at": now(),
            "revoked_at": None,
        }
        try:
            with self._begin() as conn:
                conn.execute(api_tokens.insert().values(row))
        except IntegrityError as exc:
            raise StoreError(f"an API token with id {token_id} exists already") from exc
        return _token_of(row)

    def token(self, token_id: str) -> TokenRecord | None:
        """The token with this id, revoked or not; None if there is none."""
        query = api_tokens.select().where(api_tokens.c.id == token_id)
        with self._connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _token_of(row._asdict())

    def list_tokens(self) -> list[TokenRecord]:
        """Every token, revoked ones too, oldest first."""
        query = api_tokens.select().order_by(api_tokens.c.created_at, api_tokens.c.id)
        with self._connect() as conn:
            return [_token_of(row._asdict()) for row in conn.execute(query)]

    def revoke_token(self, token_id: str) -> bool:
        """Revoke the token now; False, with nothing written, if there is no such token
        or it was revoked already."""
        with self._begin() as conn:
            moved = conn.execute(
                api_tokens.update()
                .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now())
            )
            return moved.rowcount == 1


def _token_of(row: dict[str, object]) -> TokenRecord:
    scopes = str(row["scopes"])
    created = row["created_at"]
    revoked = row["revoked_at"]
    assert isinstance(created, datetime)
    assert revoked is None or isinstance(revoked, datetime)
    return TokenRecord(
        id=str(row["id"]),
        name=str(row["name"]),
        secret_hash=str(row["secret_hash"]),
        scopes=tuple(s for s in scopes.split(",") if s),
        created_at=aware(created) or created,
        revoked_at=aware(revoked),
    )
