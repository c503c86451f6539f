"""Who is asking: signed session cookies, CSRF tokens, and the limit on failed logins.

Sessions. The cookie holds the account's name, a fingerprint of its password hash (a
new password ends every session of the account) and the session's CSRF token, signed
with itsdangerous (HMAC-SHA256, with the time it was signed); it is refused once it is
older than the session's lifetime (SESSION_SECONDS, 8 h). It is HttpOnly, SameSite=Lax,
and Secure when the inbox's public URL is https (then also named `__Host-...`). The key
is the store's service key `inbox-session`: every server on one store takes the cookies
of every other. Each request reads the account again: a disabled account is signed out
at its next request.

CSRF. Every form carries its session's token; a POST without it, or with another, is
refused (403). The login form has a session of its own, without an account, for that.

With `--auth header NAME`, the person is whoever the reverse proxy's header names; the
cookie then only carries the CSRF token, bound to that name.

Failed logins: at most MAX_FAILURES per account name and per client address within
WINDOW_SECONDS, then 429 until the oldest failure leaves the window. Each server process
counts in its own memory: behind a load balancer with n servers, an attacker gets up to
n times as many tries (rate-limit logins in the proxy as well if that matters), and a
restart forgets them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from itsdangerous import BadData, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from runner.store.users import UserRecord

SESSION_SECONDS = 8 * 3600
MAX_FAILURES = 5
WINDOW_SECONDS = 15 * 60
MAX_COUNTED = 10_000  # names and addresses whose failures are remembered at once
KEY_NAME = "inbox-session"  # the store's service key that signs the cookies


@dataclass(frozen=True)
class AuthSettings:
    """How the inbox knows people: passwords (header None) or a proxy's header."""

    header: str | None = None
    public_url: str | None = None
    session_seconds: float = SESSION_SECONDS

    @property
    def secure(self) -> bool:
        """Whether the inbox is reached over https (its cookies are then Secure)."""
        return (self.public_url or "").lower().startswith("https://")


@dataclass(frozen=True)
class Session:
    """A signed cookie's content: the account (None before login), the fingerprint of
    its password hash, and the CSRF token of the session's forms."""

    user: str | None
    key: str
    csrf: str


def fingerprint(user: UserRecord | None) -> str:
    """What a session keeps of the account's password hash: a new password ends it."""
    hashed = (user.password_hash or "") if user is not None else ""
    return hashlib.sha256(hashed.encode()).hexdigest()[:16]


def new_session(user: UserRecord | None = None, name: str | None = None) -> Session:
    """A session with a new CSRF token, for `user` (or, by header, `name`)."""
    owner = user.name if user is not None else name
    return Session(owner, fingerprint(user), secrets.token_urlsafe(24))


def same_token(session: Session | None, given: str | None) -> bool:
    """Whether a form's CSRF token is its session's."""
    if session is None or not given:
        return False
    return hmac.compare_digest(session.csrf.encode(), given.encode())


class SessionCookies:
    """Reads and writes the session cookie."""

    def __init__(self, secret: str, settings: AuthSettings) -> None:
        self.settings = settings
        self.name = "__Host-runner_inbox" if settings.secure else "runner_inbox"
        self._serializer = URLSafeTimedSerializer(
            secret, salt="runner-inbox-session", signer_kwargs={"digest_method": hashlib.sha256}
        )

    def read(self, request: Request) -> Session | None:
        """The request's session; None without a cookie, or with one that is not ours,
        was changed, or is older than the session's lifetime."""
        raw = request.cookies.get(self.name)
        if not raw or len(raw) > 4096:
            return None
        try:
            user, key, csrf = self._serializer.loads(
                raw, max_age=int(self.settings.session_seconds)
            )
        except (BadData, ValueError, TypeError):
            return None
        if not all(isinstance(v, str) for v in (key, csrf)) or not isinstance(user, str | None):
            return None
        return Session(user, key, csrf)

    def write(self, response: Response, session: Session) -> None:
        response.set_cookie(
            self.name,
            self._serializer.dumps([session.user, session.key, session.csrf]),
            max_age=int(self.settings.session_seconds),
            path="/",
            secure=self.settings.secure,
            httponly=True,
            samesite="lax",
        )

    def clear(self, response: Response) -> None:
        response.delete_cookie(
            self.name, path="/", secure=self.settings.secure, httponly=True, samesite="lax"
        )


class LoginLimiter:
    """Counts failed logins per key (a name, an address) over a sliding window.
    Thread-safe; in this process's memory only (see the module's docstring)."""

    def __init__(
        self,
        failures: int = MAX_FAILURES,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.failures = failures
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, deque[float]] = {}

    def attempt(self, keys: Sequence[str]) -> float:
        """Count a sign-in against each of `keys` before its password is checked (so
        that tries made at once count at once), unless one of them has to wait: the
        seconds it has to (0: go on)."""
        at = self.clock()
        with self._lock:
            wait = max((self._wait(key, at) for key in keys), default=0.0)
            if wait > 0:
                return wait
            if len(self._seen) >= MAX_COUNTED:
                self._forget_old(at)
            for key in keys:
                self._seen.setdefault(key, deque(maxlen=self.failures)).append(at)
        return 0.0

    def succeeded(self, keys: Sequence[str]) -> None:
        """The sign-in counted by `attempt` was right: it does not count."""
        with self._lock:
            for key in keys:
                times = self._seen.get(key)
                if times:
                    times.pop()

    def _wait(self, key: str, at: float) -> float:
        times = self._seen.get(key)
        if times is None:
            return 0.0
        while times and times[0] <= at - self.window:
            times.popleft()
        if len(times) < self.failures:
            return 0.0
        return times[-self.failures] + self.window - at

    def _forget_old(self, at: float) -> None:
        self._seen = {k: t for k, t in self._seen.items() if t and t[-1] > at - self.window}
        while len(self._seen) >= MAX_COUNTED:  # still full: the oldest keys go first
            del self._seen[next(iter(self._seen))]
