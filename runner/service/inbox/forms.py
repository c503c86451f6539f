"""The edit form of a proposal, generated from its schema: the approval's `edit` schema
(its decided values) or the stopped step's output schema.

Each property of an object schema is one field: a text box for a string (a larger one
for long text), a number box for a number or an integer, a checkbox for a boolean, a
choice for an `enum`, and a JSON text area for anything else (an object, an array, a
union of types). A schema that is not an object's is one JSON text area for the whole
value. The schema's own checks are written into the page as HTML attributes
(`required`, `min`, `max`, `minlength`, `maxlength`, `pattern`), so the browser says
what is wrong before anything is sent; the server checks the whole schema again
(`problems`, then the desk), since anyone can send any form.

A form's values become the edited value (`edited`): the proposal, with each field's
value put in (a field left empty that is not required is left out).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runner.lang.schema import instance_problems

PREFIX = "f."  # form names of the fields: no clash with csrf, hash, note
WHOLE = "(the whole output)"  # the one field of a schema that is not an object's
LONG_TEXT = 80  # characters past which a string is edited in a text area
TYPES = ("string", "number", "integer", "boolean")


@dataclass(frozen=True)
class Field:
    """One input of the edit form."""

    name: str  # the property (WHOLE for the value itself)
    kind: str  # text, textarea, number, integer, checkbox, select, json
    value: str  # as the input shows it
    required: bool = False
    attrs: Mapping[str, str] = field(default_factory=dict)  # HTML checks
    options: Sequence[tuple[str, str, bool]] = ()  # a select's (value, label, selected)
    description: str | None = None
    checked: bool = False

    @property
    def input_name(self) -> str:
        return PREFIX + self.name

    @property
    def input_id(self) -> str:
        return "field-" + "".join(c if c.isalnum() else "-" for c in self.name)


def fields(schema: Any, value: Any) -> list[Field]:
    """The edit form of `value` under `schema`."""
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    if not isinstance(properties, Mapping) or not properties or schema.get("type") != "object":
        return [Field(WHOLE, "json", _json(value), required=True)]
    required = set(schema.get("required", ()))
    current = value if isinstance(value, Mapping) else {}
    return [
        field_of(str(name), sub if isinstance(sub, Mapping) else {}, current, name in required)
        for name, sub in properties.items()
    ]


def field_of(
    name: str, schema: Mapping[str, Any], current: Mapping[str, Any], required: bool
) -> Field:
    """The field of one property (its value in `current`, if there)."""
    value = current.get(name)
    there = name in current
    note = schema.get("description") if isinstance(schema.get("description"), str) else None
    kind = _kind(schema)
    if kind == "select":
        options = [(json.dumps(o), _label(o), there and o == value) for o in schema["enum"]]
        chosen = any(selected for _, _, selected in options)
        options = [("", "(choose)", not chosen), *options]
        return Field(name, kind, "", required, options=options, description=note)
    if kind == "checkbox":
        return Field(name, kind, "true", False, description=note, checked=value is True)
    if kind in ("number", "integer"):
        shown = _json(value) if there and isinstance(value, int | float) else ""
        return Field(name, kind, shown, required, _number_checks(schema, kind), description=note)
    if kind == "text":
        text = value if isinstance(value, str) else ""
        long = "\n" in text or len(text) > LONG_TEXT or schema.get("maxLength", 0) > 200
        checks = _text_checks(schema, long)
        return Field(name, "textarea" if long else "text", text, required, checks, description=note)
    return Field(name, "json", _json(value) if there else "", required, description=note)


def _kind(schema: Mapping[str, Any]) -> str:
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return "select"
    kind = schema.get("type")
    return (
        {"string": "text", "boolean": "checkbox"}.get(str(kind), str(kind))
        if kind in TYPES
        else "json"
    )


def _label(option: Any) -> str:
    return option if isinstance(option, str) else json.dumps(option)


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _number_checks(schema: Mapping[str, Any], kind: str) -> dict[str, str]:
    checks = {"step": "1" if kind == "integer" else "any"}
    for key, attr in (("minimum", "min"), ("maximum", "max")):
        if isinstance(schema.get(key), int | float) and not isinstance(schema[key], bool):
            checks[attr] = _json(schema[key])
    return checks


def _text_checks(schema: Mapping[str, Any], long: bool) -> dict[str, str]:
    checks = {}
    for key, attr in (("minLength", "minlength"), ("maxLength", "maxlength")):
        if isinstance(schema.get(key), int) and not isinstance(schema[key], bool):
            checks[attr] = str(schema[key])
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and not long:  # a text area takes no pattern
        # JSON Schema looks for the pattern anywhere; HTML matches it against the whole.
        checks["pattern"] = f"[\\s\\S]*(?:{pattern})[\\s\\S]*"
    return checks


def edited(form: Sequence[Field], proposal: Any, sent: Mapping[str, str]) -> tuple[Any, list[str]]:
    """The value the form's `sent` values make of `proposal`, and what could not be
    read (a number that is not one, JSON that does not parse). A field left as it was
    shown leaves the value as it was."""
    if len(form) == 1 and form[0].name == WHOLE:
        whole, found = _read(form[0], sent.get(form[0].input_name, ""), True)
        return (None if whole is _ABSENT else whole), found
    value = copy.deepcopy(proposal) if isinstance(proposal, dict) else {}
    problems: list[str] = []
    for item in form:
        new, found = _read(item, sent.get(item.input_name) or "", item.name in value)
        problems += found
        if new is _ABSENT:
            value.pop(item.name, None)
        else:
            value[item.name] = new
    return value, problems


_ABSENT = object()  # a field left empty that is not required: no value


def _read(item: Field, raw: str, there: bool) -> tuple[Any, list[str]]:
    """A field's value from what was sent (`there`: the proposal has a value for it)."""
    if item.kind == "checkbox":
        return (True if raw == "true" else False if there else _ABSENT), []
    if item.kind in ("text", "textarea"):
        return (raw if raw or item.required or there else _ABSENT), []
    if not raw.strip():
        return _ABSENT, [f"{item.name}: a value is required"] if item.required else []
    if item.kind in ("number", "integer"):
        return _read_number(item, raw.strip())
    try:
        return json.loads(raw, parse_constant=_no_constant), []
    except (ValueError, RecursionError) as exc:
        return _ABSENT, [f"{item.name}: not JSON ({exc})"]


def _read_number(item: Field, raw: str) -> tuple[Any, list[str]]:
    what = "a whole number" if item.kind == "integer" else "a number"
    try:
        number = float(raw) if item.kind == "number" else int(raw)
    except ValueError:
        return _ABSENT, [f"{item.name}: {raw[:40]!r} is not {what}"]
    if not math.isfinite(number):
        return _ABSENT, [f"{item.name}: {raw[:40]!r} is not {what}"]
    if isinstance(number, float) and number.is_integer() and abs(number) < 2**53:
        return int(number), []  # 120 rather than 120.0: the value as typed
    return number, []


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def problems(schema: Any, value: Any) -> list[str]:
    """What `schema` finds wrong with the edited value (the desk checks it again)."""
    return instance_problems(schema, value)
