"""The review inbox's accounts, as the store keeps them (runner.service.inbox.accounts
makes and checks them), and the secrets that every `runner serve` on one store shares.

An account has a name, the argon2 hash of its password (never the password; none for an
account that signs in only through a reverse proxy's header), a role (`reviewer` or
`admin`), the flows it may see (none listed: every flow) and the reviewer groups it
decides for. A disabled account keeps its row, with the time it was disabled, so that
decisions it made still name someone `runner users list` shows.

A service key is made once, by the first server that asks for it, and read by every
other: of servers asking at once, one writes it and the others read what it wrote.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from runner.core.errors import StoreError
from runner.store.records import aware, now
from runner.store.tables import service_keys, users


@dataclass(frozen=True)
class UserRecord:
    """An inbox account as stored. `flows` empty: it may see every flow."""

    name: str
    password_hash: str | None
    role: str
    flows: tuple[str, ...]
    groups: tuple[str, ...]
    created_at: datetime
    disabled_at: datetime | None = None


class UserStore:
    """Account and service-key operations of `SqlStore` (a mixin: it uses the store's
    transactions)."""

    _begin: Callable[[], contextlib.AbstractContextManager[sa.Connection]]
    _connect: Callable[[], contextlib.AbstractContextManager[sa.Connection]]

    def add_user(
        self,
        name: str,
        password_hash: str | None,
        role: str,
        flows: Sequence[str] = (),
        groups: Sequence[str] = (),
    ) -> UserRecord:
        """Store a new account; StoreError if one with this name exists."""
        row = {
            "name": name,
            "password_hash": password_hash,
            "role": role,
            "flows": ",".join(flows),
            "groups": ",".join(groups),
            "created_at": now(),
            "disabled_at": None,
        }
        try:
            with self._begin() as conn:
                conn.execute(users.insert().values(row))
        except IntegrityError as exc:
            raise StoreError(f"an account named {name} exists already") from exc
        return _user_of(row)

    def user(self, name: str) -> UserRecord | None:
        """The account with exactly this name, disabled or not; None if there is none."""
        with self._connect() as conn:
            row = conn.execute(users.select().where(users.c.name == name)).first()
        return None if row is None else _user_of(row._asdict())

    def list_users(self) -> list[UserRecord]:
        """Every account, disabled ones too, by name."""
        with self._connect() as conn:
            rows = conn.execute(users.select().order_by(users.c.name))
            return [_user_of(row._asdict()) for row in rows]

    def set_password(self, name: str, password_hash: str) -> bool:
        """Replace the account's password hash; False if there is no such account."""
        with self._begin() as conn:
            moved = conn.execute(
                users.update().where(users.c.name == name).values(password_hash=password_hash)
            )
            return moved.rowcount == 1

    def disable_user(self, name: str) -> bool:
        """Disable the account now; False, with nothing written, if there is no such
        account or it was disabled already."""
        with self._begin() as conn:
            moved = conn.execute(
                users.update()
                .where(users.c.name == name, users.c.disabled_at.is_(None))
                .values(disabled_at=now())
            )
            return moved.rowcount == 1

    def service_key(self, name: str) -> str:
        """The shared secret called `name`, made (256 random bits) the first time."""
        query = sa.select(service_keys.c.secret).where(service_keys.c.name == name)
        with self._connect() as conn:
            found = conn.execute(query).scalar()
        if found is not None:
            return str(found)
        secret = secrets.token_urlsafe(32)
        try:
            with self._begin() as conn:
                conn.execute(
                    service_keys.insert().values(name=name, secret=secret, created_at=now())
                )
        except IntegrityError:  # another server made it first: use theirs
            with self._connect() as conn:
                return str(conn.execute(query).scalar_one())
        return secret


def _user_of(row: dict[str, Any]) -> UserRecord:
    created, disabled = row["created_at"], row["disabled_at"]
    assert isinstance(created, datetime)
    return UserRecord(
        name=str(row["name"]),
        password_hash=row["password_hash"],
        role=str(row["role"]),
        flows=tuple(f for f in str(row["flows"]).split(",") if f),
        groups=tuple(g for g in str(row["groups"]).split(",") if g),
        created_at=aware(created) or created,
        disabled_at=aware(disabled),
    )
