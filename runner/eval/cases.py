"""An evaluation's labelled cases: one JSON object per line of a data file.

    {"id": "c001", "input": {...}, "expect": {"classify.category": "billing"}}

`expect` maps `step.field` (dotted for nested fields; a bare step id for its whole
output) to the value a right answer has. `id` (default: the line number) and `note` are
optional; `tools` scripts the results of tools that must not run for real, as a flow
test does (`{"send_reply": [{"result": {...}}]}`); an unscripted one is dry-run.
Every problem is reported with its line, all at once.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.core.errors import UsageError
from runner.lang.model import Flow

KEYS = {"id", "input", "expect", "note", "tools"}
MAX_PROBLEMS = 20


@dataclass(frozen=True)
class EvalCase:
    index: int  # the line of the data file
    id: str
    input: Any
    expect: Mapping[str, Mapping[str, Any]]  # step -> field path -> expected value
    tools: Mapping[str, Sequence[Mapping[str, Any]]]


def read_cases(path: Path, flow: Flow) -> list[EvalCase]:
    """The data file's cases; a UsageError lists every line at fault."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the data file {path}: {exc}") from exc
    cases, problems = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            cases.append(_case(number, line, flow))
        except ValueError as exc:
            problems.append(f"{path}:{number}: {exc}")
    if problems:
        more = len(problems) - MAX_PROBLEMS
        shown = problems[:MAX_PROBLEMS] + [f"... and {more} more"] * (more > 0)
        raise UsageError("the data file has problems:\n" + "\n".join(shown))
    if not cases:
        raise UsageError(f"the data file {path} has no cases")
    ids = [c.id for c in cases]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise UsageError(f"the data file {path} repeats case ids: {', '.join(twice[:10])}")
    return cases


def _case(number: int, line: str, flow: Flow) -> EvalCase:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(data, dict):
        raise ValueError('expected an object like {"input": {...}, "expect": {...}}')
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise ValueError(f"unknown key `{unknown[0]}`; allowed: {', '.join(sorted(KEYS))}")
    for key in ("input", "expect"):
        if key not in data:
            raise ValueError(f"missing `{key}`")
    if not isinstance(data["expect"], dict) or not data["expect"]:
        raise ValueError('`expect` must map `step.field` to a value, e.g. {"classify.x": 1}')
    tools = data.get("tools", {})
    if not isinstance(tools, dict) or any(name not in flow.tools for name in tools):
        raise ValueError(f"`tools` may script only the flow's tools: {', '.join(flow.tools)}")
    return EvalCase(
        number,
        str(data.get("id", number)),
        data["input"],
        _expectations(data["expect"], flow),
        {name: list(results) for name, results in tools.items()},
    )


def _expectations(expect: Mapping[str, Any], flow: Flow) -> dict[str, dict[str, Any]]:
    """`{"classify.category": "billing"}` -> `{"classify": {"category": "billing"}}`."""
    found: dict[str, dict[str, Any]] = {}
    for key, value in expect.items():
        step_id, _, field = key.partition(".")
        step = flow.find(step_id)
        if step is None:
            known = ", ".join(s.id for s in flow.steps)
            raise ValueError(f"`expect` names step `{step_id}`, which the flow has not: {known}")
        _check_field(key, field, step.output_schema_in(flow))
        found.setdefault(step_id, {})[field] = value
    return found


def _check_field(key: str, field: str, schema: Any) -> None:
    """A field the step's output schema lists no property for (when it lists them) is
    a typo that would grade every case wrong."""
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    name = field.split(".")[0]
    if not field or not isinstance(properties, Mapping) or name in properties:
        return
    close = difflib.get_close_matches(name, list(properties), n=1)
    hint = f"; did you mean `{close[0]}`?" if close else f"; it has {', '.join(properties)}"
    raise ValueError(f"`expect` names `{key}`, but the step's output has no field `{name}`{hint}")
