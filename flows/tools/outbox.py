"""A local outbox for the support flow: replies land in a JSON-lines file, once each.

The file is `$RUNNER_OUTBOX`, else `.runner/outbox.jsonl` under the working directory.
Like a real mail or helpdesk API, the outbox honours the idempotency key: a reply whose
key it has seen is not added again.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path


def send(ticket_id: str, body: str, idempotency_key: str = "") -> dict[str, str]:
    """Append the reply to the outbox unless its key is already there."""
    path = Path(os.environ.get("RUNNER_OUTBOX", ".runner/outbox.jsonl"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="utf-8") as outbox:
        fcntl.flock(outbox, fcntl.LOCK_EX)
        outbox.seek(0)
        for line in outbox:
            if line.strip() and json.loads(line)["key"] == idempotency_key:
                return {"status": "duplicate", "key": idempotency_key}
        outbox.write(json.dumps({"key": idempotency_key, "ticket": ticket_id,
                                 "body": body}) + "\n")
        outbox.flush()
        os.fsync(outbox.fileno())
    return {"status": "sent", "key": idempotency_key}
