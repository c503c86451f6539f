"""API tokens: who may call `runner serve`, and what they may do.

A token reads `rnr_<id>_<secret>`: `id` is 12 random lowercase letters and digits (it
names the token in `runner tokens list` and in logs), `secret` is 32 random bytes,
url-safe base64. The store keeps the sha256 of the secret, never the secret: a random
secret of 256 bits needs no slow password hash, and a stolen database gives no token.
Secrets are compared with `hmac.compare_digest`.

Scopes: `submit` queues runs, `review` decides on escalated and failed runs, `admin`
may do both (and whatever a later scope adds). Reading runs needs a valid token of any
scope.

`TokenCheck` caches each token it found for CACHE_SECONDS: a revoked token is refused
within that time by every server on the store, without a database query per request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import threading
import time
from collections.abc import Callable, Sequence

from runner.core.errors import RunnerError, UsageError
from runner.store.base import Store
from runner.store.tokens import TokenRecord

SCOPES = ("submit", "review", "admin")
ADMIN = "admin"
PREFIX = "rnr"
ID_LENGTH = 12
CACHE_SECONDS = 2.0
MAX_CACHED = 1024  # distinct tokens remembered; the cache starts over beyond
MAX_NAME_LENGTH = 196  # decisions record `api:<name>` in 200 characters
_ID_ALPHABET = string.ascii_lowercase + string.digits
_TOKEN = re.compile(rf"{PREFIX}_([a-z0-9]{{{ID_LENGTH}}})_([A-Za-z0-9_-]{{20,100}})")


class TokenError(RunnerError):
    """A request without a valid token: none given, not one of ours, or revoked."""


class ScopeError(RunnerError):
    """A valid token whose scopes do not allow what the request asks."""


def secret_hash(secret: str) -> str:
    """What the store keeps of a secret: its sha256, in hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(store: Store, name: str, scopes: Sequence[str]) -> tuple[str, TokenRecord]:
    """Make and store a token: (the token, to be shown once, and its record)."""
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise UsageError(f"a token's name is 1 to {MAX_NAME_LENGTH} printable characters")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise UsageError(f"scopes are {', '.join(SCOPES)}; got {', '.join(scopes) or 'none'}")
    token_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LENGTH))
    secret = secrets.token_urlsafe(32)
    record = store.add_token(token_id, name, secret_hash(secret), sorted(set(scopes)))
    return f"{PREFIX}_{token_id}_{secret}", record


def allows(record: TokenRecord, scope: str | None) -> bool:
    """Whether the token may do what needs `scope` (None: any valid token may)."""
    return scope is None or scope in record.scopes or ADMIN in record.scopes


def bearer(header: str | None) -> tuple[str, str]:
    """(id, secret) of the token in an `Authorization: Bearer ...` header."""
    if not header:
        raise TokenError(
            "this needs an API token: send `Authorization: Bearer <token>` "
            "(an administrator makes one with `runner tokens add`)"
        )
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("the Authorization header must read `Bearer <token>`")
    found = _TOKEN.fullmatch(token.strip())
    if found is None:
        raise TokenError("that is not a runner API token (they read rnr_<id>_<secret>)")
    return found.group(1), found.group(2)


class TokenCheck:
    """Finds the token of a request and checks its scope. Thread-safe; each token read
    from the store is remembered for `ttl` seconds (so a revocation takes that long at
    most to reach this process)."""

    def __init__(
        self,
        store: Store,
        *,
        ttl: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, TokenRecord]] = {}

    def caller(self, header: str | None, scope: str | None) -> TokenRecord:
        """The token the header carries: TokenError unless it is a valid token,
        ScopeError unless it allows `scope`."""
        token_id, secret = bearer(header)
        record = self._record(token_id)
        if record is None or not hmac.compare_digest(secret_hash(secret), record.secret_hash):
            raise TokenError("the API token is not valid here (unknown, or from another store)")
        if record.revoked_at is not None:
            raise TokenError(f"API token {record.id} was revoked; ask for a new one")
        if not allows(record, scope):
            raise ScopeError(
                f"API token {record.id} ({record.name}) has scope "
                f"{', '.join(record.scopes)}; this needs scope {scope} (or {ADMIN})"
            )
        return record

    def _record(self, token_id: str) -> TokenRecord | None:
        at = self._clock()
        with self._lock:
            hit = self._cache.get(token_id)
        if hit is not None and at - hit[0] < self.ttl:
            return hit[1]
        record = self.store.token(token_id)
        if record is not None:
            with self._lock:
                if len(self._cache) >= MAX_CACHED:
                    self._cache.clear()
                self._cache[token_id] = (at, record)
        return record
