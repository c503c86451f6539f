"""What confidence methods share: a score in [0, 1], and the decisive fields of an answer
(its choices among allowed values: enum and boolean fields)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from runner.kinds.base import Checks
from runner.lang.model import ConfidenceGate, ModelStep

ANSWER = ""  # the path of the whole answer, when its schema itself is an enum


def unit(value: Any) -> float | None:
    """A score in [0, 1], or None for anything else (which never passes a gate)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0.0 <= number <= 1.0 else None


@dataclass(frozen=True)
class Choice:
    """A field of the answer whose value is one of a few allowed values."""

    path: str  # "category", "refund.approved"; ANSWER for the whole answer
    allowed: tuple[Any, ...]  # the allowed values (True and False for a boolean)


def choices(schema: Any) -> list[Choice]:
    """Every enum and boolean field the schema declares (nested objects too), in order."""
    return list(_choices(schema, ""))


def _choices(schema: Any, path: str) -> Iterator[Choice]:
    if not isinstance(schema, Mapping):
        return
    if isinstance(schema.get("enum"), list):
        yield Choice(path, tuple(schema["enum"]))
    elif schema.get("type") == "boolean":
        yield Choice(path, (True, False))
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        for name, sub in properties.items():
            yield from _choices(sub, f"{path}.{name}" if path else str(name))


def gate_choices(gate: ConfidenceGate, schema: Any) -> list[Choice]:
    """The choices a gate scores: those its `fields` name, else all of them."""
    found = choices(schema)
    if gate.fields is None:
        return found
    return [c for c in found if c.path in gate.fields]


def value_at(value: Any, path: str) -> tuple[bool, Any]:
    """(True, the value at a dotted path of the answer), or (False, None) when absent."""
    if path == ANSWER:
        return True, value
    for name in path.split("."):
        if not isinstance(value, Mapping) or name not in value:
            return False, None
        value = value[name]
    return True, value


def decisive(value: Any, fields: list[Choice]) -> str:
    """What two answers must share to agree: the values of the fields scored (the whole
    answer when there are none), as canonical JSON."""
    if not fields:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return json.dumps([value_at(value, c.path)[1] for c in fields], ensure_ascii=False)


def check_fields(checks: Checks, step: ModelStep, gate: ConfidenceGate, *, needed: bool) -> None:
    """Each name in the gate's `fields` must be an enum or boolean field of the step's
    output; with `needed`, the output must have at least one such field."""
    found = [c.path for c in choices(step.output_schema)]
    for i, name in enumerate(gate.fields or ()):
        if name not in found:
            checks.add(
                (*gate.path, "fields", i),
                f"`{name}` is not an enum or boolean field of the step's output"
                + (
                    f"; those are: {', '.join(f or '(the answer)' for f in found)}" if found else ""
                ),
            )
    if needed and not found:
        checks.add(
            (*gate.path, "method"),
            f"{gate.method} scores a choice among allowed values, and the step's output has "
            "no enum or boolean field: give it one (e.g. `category: {enum: [a, b]}`) or "
            "use another method",
        )
