"""Check a document against a JSON Schema and report every problem, located.

jsonschema lives behind this module. Its errors are translated into messages an
author can act on: unknown keys with "did you mean", the allowed values of an enum,
what was expected and what was found. A schema may carry `x-message` where the
generic wording would not help.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from runner.core.errors import FlowError, Problem
from runner.lang.source import Document, Path_, spell_path

_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def schema_text(name: str) -> str:
    """The text of a schema shipped with runner, e.g. `flow.v1.json`."""
    packaged = resources.files("runner").joinpath("_schemas", name)
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[2] / "schemas" / name).read_text(encoding="utf-8")


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """A schema shipped with runner, parsed (cached: schemas never change at run time)."""
    schema: dict[str, Any] = json.loads(schema_text(name))
    return schema


@functools.cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(load_schema(name))


def check(document: Document, schema_name: str) -> None:
    """Raise FlowError with every problem of `document` against the named schema."""
    problems = shape_problems(document, schema_name)
    if problems:
        raise FlowError(problems)


def shape_problems(document: Document, schema_name: str) -> list[Problem]:
    """Every problem of `document` against the named schema, located and worded."""
    errors = _validator(schema_name).iter_errors(document.data)
    return sorted({p for error in errors for p in _translate(document, error)})


def instance_problems(schema: Any, instance: Any) -> list[str]:
    """Problems of a value (run input, tool output) against an author's schema, as text."""
    if schema is True or schema == {}:
        return []
    validator = _author_validator(json.dumps(schema))
    if validator.is_valid(instance):
        return []
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [f"{_spell(tuple(e.absolute_path))}: {_message(e)[1]}" for e in errors]


@functools.lru_cache(maxsize=1024)
def _author_validator(text: str) -> jsonschema.protocols.Validator:
    """A validator per distinct schema, built once: building one costs more than most
    validations. Keyed by the schema's JSON (in the author's key order, which is the
    order its problems are reported in)."""
    return jsonschema.Draft202012Validator(json.loads(text))


def schema_problems(schema: Any) -> list[tuple[Path_, str]]:
    """Why `schema` is not a valid JSON Schema (draft 2020-12): (where inside it, what);
    empty if valid."""
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        inner = exc.context and _best_context(exc)
        found = inner or exc
        return [(tuple(found.absolute_path), f"not a valid JSON Schema: {found.message}")]
    return []


def _spell(path: Path_) -> str:
    return spell_path(path).replace("(top level)", "(the value)")


# `key:value` without the space after `:` that would make it a key and its value.
_NO_SPACE = re.compile(r"(?P<key>[A-Za-z_][\w.-]*):(?P<rest>[^\s/:].*)")

# Keywords whose generic wording helps nobody: a schema's `x-message` replaces it.
_OPAQUE = {"pattern", "not", "anyOf", "oneOf"}


def _translate(document: Document, error: ValidationError) -> Iterable[Problem]:
    path: Path_ = tuple(error.absolute_path)
    schema_path = list(error.schema_path)
    if "propertyNames" in schema_path:  # the offending name is the key itself
        path, on_key, message = (*path, error.instance), True, _message(error)[1]
        yield document.problem(path, message, key=on_key)
        return
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        yield from _unknown_keys(document, path, error)
        return
    if "dependentSchemas" in schema_path:  # point at the key that brought the rule
        trigger = schema_path[schema_path.index("dependentSchemas") + 1]
        yield document.problem((*path, trigger), _message(error)[1], key=True)
        return
    if error.validator == "dependentRequired":
        yield document.problem((*path, _dependent_key(error)), _message(error)[1], key=True)
        return
    if error.validator in ("oneOf", "anyOf") and "x-message" not in error.schema:
        sub = _kind_problem(error) or _best_context(error)
        if isinstance(sub, str):
            yield document.problem(path, sub)
            return
        if sub is not None:
            yield from _translate(document, sub)
            return
    on_key, message = _message(error)
    yield document.problem(path, message, key=on_key)


def _unknown_keys(document: Document, path: Path_, error: ValidationError) -> Iterable[Problem]:
    known = list(error.schema.get("properties", {}))
    for key in sorted(set(error.instance) - set(known)):
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
        hint = f"; did you mean `{close[0]}`?" if close else f"; allowed here: {', '.join(known)}"
        yield document.problem((*path, key), f"unknown key `{key}`{hint}", key=True)


def _kind_problem(error: ValidationError) -> str | None:
    """For `oneOf: [{required: [a]}, {required: [b]}]`: say which kinds were found."""
    options = error.schema.get(error.validator, [])
    kinds = [o["required"][0] for o in options if list(o) == ["required"]]
    if len(kinds) != len(options) or not isinstance(error.instance, dict):
        return None
    noun = error.schema.get("title", "value")
    present = [k for k in kinds if k in error.instance]
    listed = ", ".join(f"`{k}`" for k in kinds)
    if not present:
        return f"a {noun} needs one of {listed}"
    found = " and ".join(f"`{k}`" for k in present)
    return f"a {noun} has exactly one of {listed}; found {found}"


def _best_context(error: ValidationError) -> ValidationError | None:
    """The error of the alternative that came closest: the one that got deepest into
    the value (a list of detectors fails at its bad item, not at "not a string")."""
    if not error.context:
        return None
    return max(error.context, key=lambda e: (len(e.absolute_path), e.validator != "type"))


def _message(error: ValidationError) -> tuple[bool, str]:
    """(whether to point at the key rather than the value, the message)."""
    if "x-message" in error.schema and error.validator in _OPAQUE:
        return False, str(error.schema["x-message"]).format(value=_show(error.instance))
    kind, value, schema = error.validator, error.validator_value, error.schema
    if kind == "required":
        return True, f"missing required key `{_missing_key(error)}`"
    if kind == "type":
        found = f"expected {_expected(value)}, found {_found(error.instance)}"
        return False, found + _key_without_space(value, error.instance)
    if kind == "enum":
        return False, _enum_message(error.instance, value)
    if kind == "const":
        return False, f"must be {json.dumps(value)}, found {_show(error.instance)}"
    if kind == "dependentRequired":
        needed = next(k for k in value[_dependent_key(error)] if k not in error.instance)
        return False, f"`{_dependent_key(error)}` needs `{needed}` beside it"
    return False, _bounds_message(kind, value, error.instance, schema) or error.message


def _missing_key(error: ValidationError) -> str:
    """The key a `required` error is about: jsonschema makes one error per missing key,
    each carrying the whole list, and names its key (quoted by repr) in its message."""
    missing = [k for k in error.validator_value if k not in error.instance]
    named = [k for k in missing if error.message.startswith(f"{k!r} ")]
    return str((named or missing)[0])


def _key_without_space(expected: str | list[str], instance: Any) -> str:
    """A hint for `model:gpt` where a mapping was expected: YAML needs `model: gpt`."""
    found = _NO_SPACE.fullmatch(instance) if isinstance(instance, str) else None
    if found is None or "object" not in ([expected] if isinstance(expected, str) else expected):
        return ""
    key, rest = found["key"], found["rest"]
    return f"; to write the key `{key}` and its value, put a space after the `:`: `{key}: {rest}`"


def _dependent_key(error: ValidationError) -> str:
    for key, needed in error.validator_value.items():
        if key in error.instance and any(n not in error.instance for n in needed):
            return str(key)
    return "?"


def _bounds_message(kind: str, value: Any, instance: Any, schema: dict[str, Any]) -> str | None:
    messages = {
        "minimum": f"must be at least {value}, found {_show(instance)}",
        "maximum": f"must be at most {value}, found {_show(instance)}",
        "exclusiveMinimum": f"must be more than {value}, found {_show(instance)}",
        "exclusiveMaximum": f"must be less than {value}, found {_show(instance)}",
        "minItems": f"needs at least {value} item{'s' if value != 1 else ''}",
        "maxItems": f"takes at most {value} items",
        "minLength": "must not be empty" if value == 1 else f"needs at least {value} characters",
        "maxLength": f"takes at most {value} characters",
        "uniqueItems": "lists the same item twice",
        "pattern": f"must match {value}, found {_show(instance)}",
        "not": "has a combination of keys that is not allowed here",
    }
    return messages.get(kind)


def _enum_message(instance: Any, allowed: list[Any]) -> str:
    shown = ", ".join(str(a) for a in allowed)
    by_case = [str(a) for a in allowed if str(a).lower() == str(instance).lower()]
    close = by_case or difflib.get_close_matches(str(instance), [str(a) for a in allowed], n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"must be one of {shown}; found {_show(instance)}{hint}"


def _expected(types: str | list[str]) -> str:
    names = [_TYPE_NAMES.get(t, t) for t in ([types] if isinstance(types, str) else types)]
    return " or ".join(names)


def _found(instance: Any) -> str:
    for kind, name in (
        ("boolean", bool),
        ("integer", int),
        ("number", float),
        ("string", str),
        ("array", list),
        ("object", dict),
    ):
        if isinstance(instance, name):
            return (
                f"{_TYPE_NAMES[kind]} {_show(instance)}"
                if kind not in ("array", "object")
                else _TYPE_NAMES[kind]
            )
    return "null"


def _show(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
