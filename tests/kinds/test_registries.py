"""The flow schema and the code agree on every list of kinds, and the schema documents
every property (editors show these descriptions on hover).

A kind added to one side only would be accepted by `runner validate` and then fail at
run time, or be implemented and never allowed: each registry is compared both ways.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.core import vocabulary
from runner.kinds import registry
from runner.lang import model, schema

ROOT = Path(__file__).resolve().parents[2]
FLOW_SCHEMA: dict[str, Any] = schema.load_schema("flow.v1.json")
DEFS: dict[str, Any] = FLOW_SCHEMA["$defs"]


def one_of_kinds(definition: dict[str, Any]) -> list[str]:
    """`oneOf: [{required: [a]}, {required: [b]}]` -> [a, b]."""
    kinds = []
    for option in definition["oneOf"]:
        assert list(option) == ["required"] and len(option["required"]) == 1, option
        kinds.append(option["required"][0])
    return kinds


def test_the_schema_in_use_is_the_one_in_the_repository() -> None:
    """runner reads schemas/flow.v1.json (not a stale packaged copy), so the checks
    below compare the code with the schema that validates flows."""
    in_use = json.loads(schema.schema_text("flow.v1.json"))
    on_disk = json.loads((ROOT / "schemas" / "flow.v1.json").read_text(encoding="utf-8"))
    assert in_use == on_disk


def test_step_kinds() -> None:
    kinds = one_of_kinds(DEFS["step"])
    assert sorted(kinds) == sorted(registry.STEP_KINDS)
    for kind in kinds:
        assert f"`{kind}`" in DEFS["step"]["description"]


def test_each_step_kind_builds_records_of_its_own_kind() -> None:
    """A kind's name, the key that marks it in YAML, and its record's `kind` agree."""
    common = {
        "id": "s",
        "index": 0,
        "path": ("steps", 0),
        "next": "done",
        "on_error": "dead_letter",
    }
    for name, kind in registry.STEP_KINDS.items():
        assert name in kind.example
        record = kind.build(kind.example, dict(common))
        assert (kind.name, record.kind) == (name, name)
        assert isinstance(record, model.Step)


def test_tool_kinds() -> None:
    assert sorted(one_of_kinds(DEFS["tool"])) == sorted(registry.TOOL_KINDS)
    for name, kind in registry.TOOL_KINDS.items():
        assert kind.name == name
        assert name in DEFS["tool"]["properties"]


def test_policy_kinds() -> None:
    kinds = one_of_kinds(DEFS["policy"])
    assert sorted(kinds) == sorted(registry.POLICY_KINDS)
    for kind in kinds:
        assert registry.POLICY_KINDS[kind].name == kind
        assert kind in DEFS["policy"]["properties"]
        assert f"`{kind}`" in DEFS["policy"]["description"]


def test_confidence_methods() -> None:
    method = DEFS["gate"]["properties"]["method"]
    assert sorted(method["enum"]) == sorted(registry.CONFIDENCE_METHODS)
    for name, implementation in registry.CONFIDENCE_METHODS.items():
        assert implementation.name == name
        assert name in method["description"]


def test_detectors() -> None:
    assert sorted(DEFS["detector"]["enum"]) == sorted(registry.DETECTORS)
    described = DEFS["policy"]["properties"]["detect"]["description"]
    for name in registry.DETECTORS:
        assert name in described


def test_retry_classes() -> None:
    retry_on = DEFS["retry"]["properties"]["retry_on"]["items"]["enum"]
    assert sorted(retry_on) == sorted(model.RETRY_CLASSES)
    assert set(model.DEFAULT_RETRY_ON) <= set(model.RETRY_CLASSES)
    assert set(model.RETRY_CLASSES) <= set(vocabulary.ErrorKind)


@pytest.mark.parametrize("ending", list(model.ENDINGS))
def test_route_description_names_each_ending(ending: str) -> None:
    route = DEFS["route"]
    assert f"`{ending}`" in route["description"]
    assert ending in route["x-message"]


def test_route_pattern_accepts_every_ending() -> None:
    for ending in model.ENDINGS:
        assert re.fullmatch(DEFS["route"]["pattern"], ending)


# -- descriptions -------------------------------------------------------------------------
def resolve(pointer: str) -> dict[str, Any]:
    assert pointer.startswith("#/"), pointer
    node: Any = FLOW_SCHEMA
    for part in pointer[2:].split("/"):
        node = node[part]
    assert isinstance(node, dict)
    return node


def described(subschema: dict[str, Any]) -> bool:
    """A description on the property itself, or on what its `$ref` (chain) points at."""
    seen: set[str] = set()
    while "description" not in subschema:
        ref = subschema.get("$ref")
        if not isinstance(ref, str) or ref in seen:
            return False
        seen.add(ref)
        subschema = resolve(ref)
    return bool(str(subschema["description"]).strip())


# Subschemas that constrain properties declared beside them rather than declare any.
CONDITIONS = ("if", "then", "else", "not")


def properties(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (location, subschema) under a `properties` keyword, anywhere in the schema,
    except inside conditions (`if: {properties: {method: {const: field}}}`)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                for name, sub in value.items():
                    yield f"{where}.properties.{name}", sub
            if key not in CONDITIONS:
                yield from properties(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from properties(value, f"{where}[{i}]")


def test_every_property_has_a_description() -> None:
    found = list(properties(FLOW_SCHEMA))
    assert len(found) > 50  # the walk reaches into $defs and nested properties
    missing = [where for where, sub in found if not described(sub)]
    assert not missing, "properties without a description: " + ", ".join(missing)


def test_conditions_only_name_declared_properties() -> None:
    def walk(node: Any) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        if isinstance(node, dict):
            for key in CONDITIONS:
                if isinstance(node.get(key), dict):
                    yield node, node[key]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    conditions = list(walk(FLOW_SCHEMA))
    assert conditions
    for parent, condition in conditions:
        assert set(condition.get("properties", {})) <= set(parent.get("properties", {}))


def test_description_check_catches_a_missing_one() -> None:
    assert not described({"type": "string"})
    assert described({"$ref": "#/$defs/route"})
