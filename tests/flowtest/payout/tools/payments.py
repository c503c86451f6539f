"""Tools of the payout fixture flow. Flow tests script both (they are effects), so
these never run there: they only have to exist."""

from __future__ import annotations


def pay(claim_id: str, amount: float) -> dict[str, str]:
    """Pay a claim (here: pretend to)."""
    return {"payment_id": f"pay-{claim_id}"}


def send(claim_id: str, body: str) -> dict[str, bool]:
    """Tell the customer (here: pretend to)."""
    return {"sent": True}
