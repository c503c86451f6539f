"""Warehouse side of the shop: normalise an order, check stock, reserve or backorder.

Used by examples/order_sync.yaml, a flow that needs no model: every step is plain
Python, so it runs end to end offline. Stock and reservations live in one SQLite
file (argument `database`, else $WAREHOUSE_DB, else .runner/warehouse.db); a fresh
file is stocked with the SKUs in STARTING_STOCK.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

DEFAULT_DATABASE = ".runner/warehouse.db"
STARTING_STOCK = {"MUG-BLUE": 40, "MUG-RED": 12, "TEE-M": 25, "TEE-L": 0, "POSTER-A2": 7}

SCHEMA = """
CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, on_hand INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reservations (
    idempotency_key TEXT NOT NULL, order_id TEXT NOT NULL, sku TEXT NOT NULL,
    quantity INTEGER NOT NULL, PRIMARY KEY (idempotency_key, sku));
CREATE TABLE IF NOT EXISTS backorders (
    idempotency_key TEXT NOT NULL, order_id TEXT NOT NULL, sku TEXT NOT NULL,
    short INTEGER NOT NULL, PRIMARY KEY (idempotency_key, sku));
"""


def _connect(database: str | None) -> sqlite3.Connection:
    path = Path(database or os.environ.get("WAREHOUSE_DB") or DEFAULT_DATABASE)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.executemany("INSERT OR IGNORE INTO stock (sku, on_hand) VALUES (?, ?)",
                   sorted(STARTING_STOCK.items()))
    db.commit()
    return db


def _cents(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def normalize(order: dict[str, Any]) -> dict[str, Any]:
    """The shop's webhook payload in the warehouse's shape: SKUs upper-case, equal
    SKUs merged, money rounded to cents, the total recomputed from the lines."""
    merged: dict[str, dict[str, Any]] = {}
    for line in order["line_items"]:
        sku = str(line["sku"]).strip().upper()
        entry = merged.setdefault(sku, {"sku": sku, "quantity": 0,
                                        "unit_price": float(_cents(line["price"]))})
        entry["quantity"] += int(line["quantity"])
    lines = [merged[sku] for sku in sorted(merged)]
    computed = sum(_cents(li["unit_price"]) * li["quantity"] for li in lines)
    computed += _cents(order.get("shipping", 0))
    return {
        "order_id": str(order["id"]),
        "lines": lines,
        "total": float(computed),
        "total_matches": computed == _cents(order["total"]),
        "currency": str(order.get("currency", "EUR")).upper(),
        "gift_message": (order.get("note") or "").strip(),
    }


def check_stock(lines: list[dict[str, Any]], database: str | None = None) -> dict[str, Any]:
    """Whether every line can be picked now, and what is short if not."""
    with closing(_connect(database)) as db:
        on_hand = dict(db.execute("SELECT sku, on_hand FROM stock"))
    missing = [{"sku": li["sku"], "short": li["quantity"] - on_hand.get(li["sku"], 0)}
               for li in lines if li["quantity"] > on_hand.get(li["sku"], 0)]
    return {"available": not missing, "missing": missing}


def reserve(order_id: str, lines: list[dict[str, Any]], database: str | None = None,
            idempotency_key: str | None = None) -> dict[str, Any]:
    """Take the lines out of stock for the order, once per key, all or nothing."""
    key = idempotency_key or f"reserve-{order_id}"
    with closing(_connect(database)) as db, db:
        if db.execute("SELECT 1 FROM reservations WHERE idempotency_key = ?", (key,)).fetchone():
            return {"reserved": len(lines), "repeated": True}
        for line in lines:
            taken = db.execute("UPDATE stock SET on_hand = on_hand - ? WHERE sku = ?"
                               " AND on_hand >= ?",
                               (line["quantity"], line["sku"], line["quantity"])).rowcount
            if not taken:  # sold since check_stock: undo the whole reservation
                raise ValueError(f"not enough {line['sku']} left to reserve {line['quantity']}")
            db.execute("INSERT INTO reservations VALUES (?, ?, ?, ?)",
                       (key, order_id, line["sku"], line["quantity"]))
    return {"reserved": len(lines), "repeated": False}


def backorder(order_id: str, missing: list[dict[str, Any]], database: str | None = None,
              idempotency_key: str | None = None) -> dict[str, Any]:
    """Record what the supplier must deliver before the order can ship."""
    key = idempotency_key or f"backorder-{order_id}"
    with closing(_connect(database)) as db, db:
        db.executemany("INSERT OR IGNORE INTO backorders VALUES (?, ?, ?, ?)",
                       [(key, order_id, m["sku"], m["short"]) for m in missing])
    return {"backordered": len(missing)}
