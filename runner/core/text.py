"""How runner words what it prints: a text cut to one line, a counted noun."""

from __future__ import annotations

from typing import Any


def short(text: Any, limit: int) -> str:
    """`text` on one line, cut to `limit` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def plural(count: int, noun: str) -> str:
    """`1 flow`, `2 flows`."""
    return f"{count} {noun}{'s' * (count != 1)}"
