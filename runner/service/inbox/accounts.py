"""The inbox's people: their accounts and passwords, and what each may see and decide.

Passwords are hashed with argon2id (argon2-cffi's `PasswordHasher`, its defaults); the
store keeps the hash only. A password has at least MIN_PASSWORD characters. Signing in
with a name that has no account (or a disabled one) costs the same hash as a wrong
password, and fails with the same words: a failure never tells whether a name exists.

A name is 1 to 64 letters, digits and `._@-`: no spaces and no parentheses, so that no
name can pass for a reviewer group in the desk's `Name (group)` syntax.

What an account sees: an admin every flow; a reviewer the flows its account lists (none
listed: every flow). A run of a flow an account may not see does not exist for it: its
pages answer 404, as for a run that is not there, so that names do not leak.

Who decides: an admin any run it sees. A reviewer a run it sees whose stopped step names
no `reviewers`, or names the account, or one of the account's groups. The decision is
recorded as the account's name, with the group it decided for in parentheses when it
decided as a group's member (`lena (finance)`: the desk's syntax, which the desk checks
again); never as a name a form gives.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from runner.core.errors import UsageError
from runner.review.proposals import Proposal
from runner.store.base import Store
from runner.store.users import UserRecord

ROLES = ("reviewer", "admin")
ADMIN = "admin"
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # hashing is slow on purpose; a megabyte of password is not a password
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_HASHER = PasswordHasher()


def check_name(name: str) -> str:
    """`name` if it can name an account; UsageError saying what a name is otherwise."""
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"{name[:80]!r} cannot name an account: use 1 to 64 letters, digits and . _ @ -, "
            "starting with a letter or digit (no spaces or parentheses)"
        )
    return name


def listed(text: str | None, what: str) -> tuple[str, ...]:
    """A comma-separated list of flows or groups (`a,b`), each name checked."""
    names = tuple(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip()))
    for name in names:
        if len(name) > 200 or not name.isprintable() or "(" in name or ")" in name:
            raise UsageError(f"{what} {name[:80]!r}: a name of up to 200 characters, no ( )")
    return names


def hash_password(password: str) -> str:
    """The argon2id hash of a new password; UsageError if it is too short."""
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"a password has at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UsageError(f"a password has at most {MAX_PASSWORD} characters")
    return _HASHER.hash(password)


def new_user(
    store: Store,
    name: str,
    password: str | None,
    role: str,
    flows: Sequence[str] = (),
    groups: Sequence[str] = (),
) -> UserRecord:
    """Make an account (without a password: it signs in through a proxy's header only)."""
    if role not in ROLES:
        raise UsageError(f"a role is {' or '.join(ROLES)}, not {role!r}")
    if role == ADMIN and flows:
        raise UsageError("an admin sees every flow: --flows is for reviewers")
    hashed = hash_password(password) if password is not None else None
    return store.add_user(check_name(name), hashed, role, flows, groups)


def verify(store: Store, name: str, password: str) -> UserRecord | None:
    """The account `name` if `password` is its password and it is enabled; else None,
    after the same work either way. A hash made with older settings is made again."""
    user = store.user(name) if _NAME.fullmatch(name) else None
    if user is None or user.disabled_at is not None or not user.password_hash:
        _matches(_dummy_hash(), password)  # as long as for an account: names do not leak
        return None
    if not _matches(user.password_hash, password):
        return None
    if _HASHER.check_needs_rehash(user.password_hash):
        store.set_password(user.name, _HASHER.hash(password))
        return store.user(user.name)
    return user


def _matches(hashed: str, password: str) -> bool:
    try:
        return _HASHER.verify(hashed, password[:MAX_PASSWORD])
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    """A hash no password matches, verified for names that have no usable account."""
    return _HASHER.hash("runner: no such account, and this is not a password")


def sees(user: UserRecord, flow: str) -> bool:
    """Whether the account may see (and so decide) runs of `flow`."""
    return user.role == ADMIN or not user.flows or flow in user.flows


def decider(user: UserRecord, proposal: Proposal) -> str | None:
    """Who a decision on the proposal is recorded as, or None if the account may not
    decide it (see the module's docstring)."""
    allowed = proposal.reviewers
    if not sees(user, proposal.run.flow_name):
        return None
    if user.role == ADMIN or not allowed or user.name in allowed:
        return user.name
    group = next((g for g in user.groups if g in allowed), None)
    return f"{user.name} ({group})" if group is not None else None
