"""What confidence methods share: a score in [0, 1], and the decisive part of an answer
(the value of its enum field, where a choice among allowed values is made)."""

from __future__ import annotations

from typing import Any


def unit(value: Any) -> float | None:
    """A score in [0, 1], or None for anything else (which never passes a gate)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0.0 <= number <= 1.0 else None


def enum_field(value: Any, schema: Any) -> tuple[str, list[str]] | None:
    """The answer's decisive part: (its value, the allowed values) for the first enum
    field (or the answer itself when its schema is an enum of strings)."""
    if isinstance(schema, dict) and "enum" in schema and isinstance(value, str):
        return value, [str(v) for v in schema["enum"]]
    properties = schema.get("properties", {}) if isinstance(schema, dict) else {}
    for name, sub in properties.items():
        if (
            isinstance(sub, dict)
            and "enum" in sub
            and isinstance(value, dict)
            and isinstance(value.get(name), str)
        ):
            return str(value[name]), [str(v) for v in sub["enum"]]
    return None


def decisive_value(value: Any, schema: Any) -> str | None:
    """The value of the answer's first enum field, if it has one."""
    found = enum_field(value, schema)
    return found[0] if found else None
