"""Queueing runs: what `runner submit` and `POST /v1/flows/{flow}/runs` do.

A submission names a flow, gives its input and optionally an idempotency key. The input
is checked against the flow (as `runner run` checks it), the flow's current text and git
commit are pinned, and the run is queued for a worker. With a key, the run's id is made
from the flow's name and the key, so that the same key never makes two runs: a repeat,
from any process and at any time, gets the first run back (and `conflict` says when its
input differs from the first one's).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runner.core.errors import UsageError
from runner.lang.compiler import CompiledFlow
from runner.runtime.inputs import DEFAULT_MAX_INPUT_BYTES, check_input, new_run_id
from runner.runtime.redact import check_environment
from runner.store.base import Store
from runner.store.records import FlowVersion, RunRecord

MAX_KEY_LENGTH = 200


@dataclass(frozen=True)
class Submitted:
    """A submission's run, whether this submission made it, and whether an earlier
    submission with the same key gave another input."""

    run: RunRecord
    created: bool
    conflict: bool = False


def keyed_run_id(flow: str, key: str) -> str:
    """The id of the run submitted to `flow` with idempotency key `key`: the same for the
    same pair, readable as `<flow>-<key>-` followed by a hash."""
    digest = hashlib.sha256(json.dumps([flow, key]).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", key)[:24].strip("_") or "key"
    return f"{re.sub(r'[^A-Za-z0-9_-]+', '_', flow)[:20]}-{slug}-{digest}"


def check_key(key: str | None) -> str | None:
    """The key as given; UsageError for one that is empty or too long."""
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise UsageError(
            f"an idempotency key is 1 to {MAX_KEY_LENGTH} printable characters, not {key[:40]!r}"
        )
    return key


def submit(
    store: Store,
    flow: tuple[CompiledFlow, FlowVersion],
    input_value: Any,
    *,
    key: str | None = None,
    run_id: str | None = None,
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
    environ: Any = None,
    due_at: datetime | None = None,
) -> Submitted:
    """Queue a run of the flow on `input_value` (InputError if the flow refuses it). The
    run's id comes from `key`, else is `run_id`, else a new one."""
    compiled, version = flow
    check_input(compiled, input_value, max_input_bytes)
    if environ is not None:
        check_environment(compiled, environ)
    key = check_key(key)
    run_id = keyed_run_id(compiled.flow.name, key) if key else run_id or new_run_id()
    record, created = store.submit_run(run_id, version, input_value, compiled.first, due_at=due_at)
    return Submitted(record, created, conflict=not created and record.input != input_value)
