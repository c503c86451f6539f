"""Book supplier invoices into the accounts-payable ledger (a SQLite file).

The invoice flow (examples/invoice.yaml) calls `record` as an effect tool: runner
passes the rendered idempotency key, and the table keeps that key UNIQUE, so even a
call that is repeated by hand books the invoice once and returns the first booking.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

DEFAULT_DATABASE = ".runner/invoices.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS invoices (
    id INTEGER PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    invoice_number TEXT NOT NULL,
    vendor_name TEXT NOT NULL,
    vendor_vat_id TEXT NOT NULL,
    issue_date TEXT NOT NULL,
    currency TEXT NOT NULL,
    total_cents INTEGER NOT NULL,
    lines_json TEXT NOT NULL
)
"""


def record(invoice_number: str, vendor_name: str, vendor_vat_id: str, issue_date: str,
           currency: str, total: float, lines: list[dict[str, Any]],
           database: str | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
    """Insert the invoice unless its key is already booked; return its ledger id."""
    path = Path(database or os.environ.get("INVOICE_DB") or DEFAULT_DATABASE)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = idempotency_key or f"{vendor_vat_id}:{invoice_number}"
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(SCHEMA)
        cursor = db.execute(
            "INSERT OR IGNORE INTO invoices (idempotency_key, invoice_number, vendor_name,"
            " vendor_vat_id, issue_date, currency, total_cents, lines_json)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key, invoice_number, vendor_name, vendor_vat_id, issue_date, currency,
             round(total * 100), json.dumps(lines, sort_keys=True)),
        )
        created = cursor.rowcount == 1
        (ledger_id,) = db.execute("SELECT id FROM invoices WHERE idempotency_key = ?",
                                  (key,)).fetchone()
    return {"ledger_id": ledger_id, "created": created}
