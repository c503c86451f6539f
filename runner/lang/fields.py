"""Whether a field a template reads can exist, by the JSON Schema of what it reads.

A closed schema (`additionalProperties: false`) lists every field its value may have;
a value whose schema says it is text, a number or true/false has no fields at all (an
`llm` step without an `output` schema answers with text). Reading a field of either
that cannot exist fails at run time; these functions say so before any run.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from runner.lang.model import ModelStep, Step

# JSON types that have no fields, and the Python type a template sees for each: the
# names of its methods (`output.upper()` on text) are not fields, and may be read.
_SCALARS: dict[str, type] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "null": type(None),
}
_TYPE_WORDS = {
    "string": "text",
    "integer": "a number",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def suggest(name: str, known: Iterable[str], cutoff: float = 0.6) -> str:
    """`; did you mean `x`?` for the known name closest to `name`, if one is close."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=cutoff)
    return f"; did you mean `{close[0]}`?" if close else ""


def schema_field(schema: Any, chain: tuple[str | int, ...], name: str) -> str | None:
    """A message if `schema` cannot hold the field `chain` reads, else None."""
    spelled = name
    for part in chain:
        if not isinstance(schema, dict):
            return None
        scalar = _scalar_words(schema, part)
        if scalar:
            return f"`{spelled}.{part}` cannot exist: `{spelled}` is {scalar}, which has no fields"
        if isinstance(part, int) or schema.get("type") == "array":
            schema, spelled = schema.get("items"), f"{spelled}[{part}]"
            continue
        properties = schema.get("properties", {})
        if part in properties:
            schema, spelled = properties[part], f"{spelled}.{part}"
        elif schema.get("additionalProperties") is False and not schema.get("patternProperties"):
            return (
                f"`{spelled}.{part}` cannot exist: the schema of `{spelled}` allows "
                f"{', '.join(properties) or 'no fields'}{suggest(str(part), properties)}"
            )
        else:
            return None
    return None


def _scalar_words(schema: dict[str, Any], part: str | int) -> str | None:
    """How to name the value's type if the schema says it is a scalar and `part` is no
    method of it; None if it may have fields."""
    types = schema.get("type")
    types = [types] if isinstance(types, str) else types
    if not isinstance(types, list) or not types or any(t not in _SCALARS for t in types):
        return None
    if isinstance(part, int) or any(hasattr(_SCALARS[t], part) for t in types):
        return None
    return " or ".join(dict.fromkeys(_TYPE_WORDS[t] for t in types))


def text_answer(step: Step, chain: tuple[str | int, ...], name: str) -> str | None:
    """A message if `chain` reads a field of a model step's answer that is text because
    the step declares no `output` schema."""
    if not isinstance(step, ModelStep) or step.output_schema is not None or not chain:
        return None
    field = chain[0]
    if not isinstance(field, str) or hasattr(str, field):
        return None  # `output[0]`, `output.upper()`: text has those
    return (
        f"`{name}.{field}` cannot exist: `{step.kind}` step `{step.id}` has no `output` "
        f"schema, so its answer is text, with no fields; give its `{step.kind}` an "
        f"`output` schema with a `{field}` field"
    )
