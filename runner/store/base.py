"""What runner asks of a run store: the `Store` protocol.

A store keeps each run's pinned flow version, its status and position, the lease that
says which process may advance it, its checkpoints, its audit events, people's
decisions, and the effect ledger. Every write below is one transaction: it happens
whole or not at all. Writes that advance a run are fenced: they succeed only for the
lease's owner, or only while the run is exactly as the caller last read it.

`SqlStore` (runner.store.sql) implements it on SQLite and PostgreSQL; tests/store runs
one contract suite against every implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from runner.store.records import (
    Checkpoint,
    Decision,
    Effect,
    Event,
    FlowVersion,
    RunRecord,
    StepCommit,
)

if TYPE_CHECKING:  # runner.store.tokens loads SQLAlchemy; this module must not
    from runner.store.tokens import TokenRecord
    from runner.store.users import UserRecord


@runtime_checkable
class Store(Protocol):
    """Durable state of runs. Errors are StoreError (runner.core.errors)."""

    url: str
    """Where the store is, as a database URL."""

    lease_seconds: float
    """How long a lease lasts unless it is renewed (runner.store.leases)."""

    def create_run(
        self, run_id: str, version: FlowVersion, input_value: Any, first_step: str, owner: str
    ) -> None:
        """Pin `version` (stored once per digest, never changed after) and create the run
        at `first_step`, status running, leased to `owner`, with a `run_started` event;
        one transaction."""
        ...

    def submit_run(
        self,
        run_id: str,
        version: FlowVersion,
        input_value: Any,
        first_step: str,
        *,
        due_at: datetime | None = None,
    ) -> tuple[RunRecord, bool]:
        """Queue a new run (status queued, unleased, a `run_queued` event) unless a run
        with this id exists: (the run, whether this call made it). Of processes
        submitting one id at once, exactly one makes it (runner.store.queue)."""
        ...

    def claim_queued(self, owners: Sequence[str], *, flows: Sequence[str] = ()) -> list[RunRecord]:
        """Claim up to one run per owner token, oldest first: queued runs that are due
        and interrupted runs; each is set running, leased to its token. Concurrent
        claims never take the same run."""
        ...

    def park(
        self,
        run_id: str,
        owner: str,
        due_at: datetime,
        reason: str | None = None,
        events: Sequence[Event] = (),
    ) -> bool:
        """Queue a running run again, due at `due_at`, with `reason` and `events`, if
        `owner` or nobody holds it; False, with nothing written, otherwise."""
        ...

    def set_aside_effect(self, key: str, run_id: str, owner: str | None) -> None:
        """Mark the run's started effect `key` failed, to start again later (fenced by
        `owner`'s lease when given)."""
        ...

    def queue_depth(self, at: datetime | None = None) -> tuple[int, datetime | None]:
        """How many runs wait to be claimed, and when the oldest of them was made."""
        ...

    def flow_version(self, digest: str) -> FlowVersion:
        """The pinned flow version with this digest; StoreError if there is none."""
        ...

    def run(self, run_id: str) -> RunRecord:
        """The run with this id, or the only run whose id starts with it; StoreError if
        there is none or the prefix is ambiguous."""
        ...

    def list_runs(
        self,
        *,
        status: str | None = None,
        flow: str | None = None,
        limit: int = 50,
        before: tuple[datetime, str] | None = None,
    ) -> list[RunRecord]:
        """Runs newest first (created_at, then id, both descending), at most `limit`,
        optionally of one status and one flow. With `before` = (created_at, id) of a
        run, only the runs after it in that order: the next page of a listing."""
        ...

    def claim(
        self,
        run_id: str,
        owner: str,
        *,
        statuses: Sequence[str] = ("running",),
        reopen_at: str | None = None,
    ) -> RunRecord:
        """Lease the run to `owner` and return it as claimed. The run must be in one of
        `statuses`. A live lease is respected (StoreError); an expired one, or one held
        by a dead process on this host, is taken over. With `reopen_at` the run is set
        running at that step, its reason and error cleared. Of two processes claiming at
        once exactly one succeeds; a `run_resumed` event is written with the claim."""
        ...

    def repin(self, run_id: str, owner: str, version: FlowVersion) -> None:
        """Move a run that `owner` holds the lease of to another version of its flow,
        pinning that version, and record the move in its audit trail."""
        ...

    def release(self, run_id: str, owner: str) -> None:
        """Give up `owner`'s lease on the run; nothing happens if `owner` does not hold it."""
        ...

    def renew_lease(self, run_id: str, owner: str) -> bool:
        """Extend `owner`'s lease on the run to `lease_seconds` from now (the heartbeat
        of a running step); False, with nothing written, if `owner` no longer holds it."""
        ...

    def commit_step(self, run_id: str, owner: str, commit: StepCommit) -> None:
        """Write a finished step in one transaction: its checkpoint, the run's new
        status, position and model use, the effect row it finished and its events.
        Fenced by the lease: StoreError, and nothing written, unless `owner` holds it.
        A step that ends the run (status not running) also gives the lease up."""
        ...

    def checkpoints(self, run_id: str) -> list[Checkpoint]:
        """The run's finished steps, in the order they finished (by `seq`)."""
        ...

    def events(self, run_id: str) -> list[Event]:
        """The run's audit trail, oldest first: each event as its typed record
        (runner.core.events.parse), a kind this release does not know as UnknownEvent."""
        ...

    def add_events(self, run_id: str, batch: Sequence[Event]) -> None:
        """Append events to the run's audit trail, in one transaction."""
        ...

    def decide(
        self,
        record: RunRecord,
        decision: Decision,
        *,
        status: str,
        position: str,
        owner: str | None = None,
        checkpoint: Checkpoint | None = None,
        effect: tuple[str, str, Any] | None = None,
        due_at: datetime | None = None,
    ) -> None:
        """Record a person's decision and move the run to `status` at `position`, with an
        optional checkpoint and finished effect `(key, status, result)`, in one
        transaction, and only if the run is unleased and still as `record` shows it
        (same status and step count): of two people deciding at once, one wins and the
        other gets a StoreError. With `owner` the run is leased to it; `due_at` is when
        the run's next review expires (None: it does not)."""
        ...

    def due_runs(self, at: datetime, limit: int = 100) -> list[RunRecord]:
        """Runs waiting for review whose review expired by `at`, the oldest due first."""
        ...

    def decisions(self, run_id: str) -> list[Decision]:
        """The decisions made on the run, oldest first."""
        ...

    def effect(self, key: str) -> Effect | None:
        """The effect ledger's row for `key`, if any."""
        ...

    def start_effect(
        self, key: str, run_id: str, step_id: str, tool: str, owner: str | None = None
    ) -> Effect | None:
        """Record, durably and before it runs, that an effect is starting: None once a
        new `started` row is written (a `failed` row is started again); the existing row,
        with nothing written, if the key is already in the ledger. Of processes starting
        one key at once, one gets None and the others the row or a StoreError. With
        `owner`, fenced by the run's lease: StoreError unless `owner` holds it."""
        ...

    # -- the API tokens of `runner serve` (runner.store.tokens) ---------------------------
    def add_token(
        self, token_id: str, name: str, secret_hash: str, scopes: Sequence[str]
    ) -> TokenRecord:
        """Store a new API token: the sha256 of its secret, never the secret."""
        ...

    def token(self, token_id: str) -> TokenRecord | None:
        """The API token with this id, revoked or not; None if there is none."""
        ...

    def list_tokens(self) -> list[TokenRecord]:
        """Every API token, revoked ones too, oldest first."""
        ...

    def revoke_token(self, token_id: str) -> bool:
        """Revoke an API token now; False if there is none or it was revoked already."""
        ...

    # -- the review inbox's accounts and shared keys (runner.store.users) -----------------
    def add_user(
        self,
        name: str,
        password_hash: str | None,
        role: str,
        flows: Sequence[str] = (),
        groups: Sequence[str] = (),
    ) -> UserRecord:
        """Store a new inbox account (a password hash, never a password); StoreError if
        one with this name exists."""
        ...

    def user(self, name: str) -> UserRecord | None:
        """The inbox account with exactly this name, disabled or not; None if none."""
        ...

    def list_users(self) -> list[UserRecord]:
        """Every inbox account, disabled ones too, by name."""
        ...

    def set_password(self, name: str, password_hash: str) -> bool:
        """Replace an account's password hash; False if there is no such account."""
        ...

    def disable_user(self, name: str) -> bool:
        """Disable an account now; False if there is none or it was disabled already."""
        ...

    def service_key(self, name: str) -> str:
        """The secret called `name` that every server on the store shares, made once."""
        ...

    def close(self) -> None:
        """Let go of the store's connections."""
        ...
