"""What the API's requests do, as plain synchronous functions over the store, the flow
library and the review desk. The routes run them in a worker thread (`in_thread`): the
store is synchronous SQLAlchemy, and the event loop must never wait on it.

Errors are turned into HTTP refusals here, where it is known what they mean: an unknown
run is a 404, a run someone else decided first a 409, an input the flow refuses a 422.
A StoreError caused by the database itself (unreachable, locked too long, disk full) is
a 503 wherever it happens: the request may work later, and the client did nothing wrong.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool

from runner.core.errors import InputError, StoreError, UsageError
from runner.core.vocabulary import RunStatus
from runner.review.desk import Desk
from runner.review.proposals import proposal_json
from runner.service.api_http import ApiError
from runner.service.intake import Submitted, submit
from runner.service.library import FlowLibrary
from runner.service.tokens import TokenCheck
from runner.store.base import Store
from runner.store.records import Checkpoint, RunRecord

log = logging.getLogger("runner.serve")
T = TypeVar("T")
STORE_DOWN = "the run store cannot be used right now; the server's log says why"


def refused(exc: StoreError, status: int) -> ApiError:
    """`exc` as a refusal with `status`, unless the database failed (503)."""
    if isinstance(exc.__cause__, sa.exc.DBAPIError) or status == 503:
        log.error("the run store failed: %s", exc)
        return ApiError(503, STORE_DOWN)
    return ApiError(status, str(exc))


async def in_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`function(*args, **kwargs)` in a worker thread; a StoreError that nothing
    turned into a refusal means the store cannot be used (503)."""
    try:
        return await run_in_threadpool(function, *args, **kwargs)
    except StoreError as exc:
        raise refused(exc, 503) from None


@dataclass
class Service:
    """Everything a request may use: the store, the flows, the tokens, the desk."""

    store: Store
    library: FlowLibrary
    tokens: TokenCheck
    desk: Desk
    max_body_bytes: int

    def submit(self, name: str, value: Any, key: str | None) -> Submitted:
        """Queue a run of flow `name`; a repeat of `key` gets its first run back."""
        flow = self.library.find(name)
        if flow is None:
            raise ApiError(404, unknown_flow(name, self.library.names()))
        try:
            done = submit(self.store, flow, value, key=key, max_input_bytes=self.max_body_bytes)
        except InputError as exc:
            raise ApiError(422, str(exc)) from None
        except UsageError as exc:
            raise ApiError(400, str(exc)) from None
        if done.conflict:
            raise ApiError(
                409,
                f"idempotency key {key!r} was used for run {done.run.id} with another "
                "input; a new input needs a new key",
            )
        return done

    def existing(self, run_id: str) -> RunRecord:
        """The run with exactly this id (no prefixes: a URL names one run)."""
        try:
            record = self.store.run(run_id)
        except StoreError as exc:
            raise refused(exc, 404) from None
        if record.id != run_id:
            raise ApiError(404, f"no run {run_id}")
        return record

    def detail(self, run_id: str) -> tuple[RunRecord, list[Checkpoint], dict[str, Any] | None]:
        """The run, its finished steps and, while it waits for review, what it proposes
        (with the hash an approval names)."""
        record = self.existing(run_id)
        proposal = None
        if record.status == RunStatus.ESCALATED:
            proposal = proposal_view(proposal_json(self.desk.proposal(record.id, record)))
        return record, self.store.checkpoints(record.id), proposal

    def page(
        self, status: str | None, flow: str | None, limit: int, before: tuple[datetime, str] | None
    ) -> tuple[list[RunRecord], bool]:
        """A page of runs, and whether more follow it."""
        found = self.store.list_runs(status=status, flow=flow, limit=limit + 1, before=before)
        return found[:limit], len(found) > limit

    def decide(self, run_id: str, act: Callable[[Desk, str], object]) -> RunRecord:
        """Make a decision on the run (`act(desk, run_id)`); the run after it."""
        record = self.existing(run_id)
        try:
            act(self.desk, record.id)
        except StoreError as exc:  # not waiting for this decision, or decided meanwhile
            raise refused(exc, 409) from None
        except (InputError, UsageError) as exc:
            raise ApiError(422, str(exc)) from None
        return self.store.run(record.id)

    def health(self) -> tuple[list[str], dict[str, list[str]]]:
        """The flows and the flow files' problems, after a query that shows the store
        answers (StoreError if it does not)."""
        self.store.list_runs(limit=1)
        problems = {path: list(found) for path, found in self.library.problems().items()}
        return self.library.names(), problems


RUN_FIELDS = ("run", "flow", "status", "reason", "error", "input", "updated_at", "due_at")


def proposal_view(data: dict[str, Any]) -> dict[str, Any]:
    """A proposal as the API shows it: without what the run itself shows."""
    return {k: v for k, v in data.items() if k not in RUN_FIELDS}


def unknown_flow(name: str, known: list[str]) -> str:
    """`no flow X here`, with what there is and the closest name."""
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    listed = ", ".join(known) if known else "none (/healthz lists files that do not compile)"
    return f"no flow {name!r} here{hint}; the flows here are: {listed}"
