"""A reviewer's edits: applying `--set path=value`, what changed (the diff a decision
records), and the policies an edited output must still pass before it is sent."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from runner.core import templates
from runner.core.errors import UsageError
from runner.core.llm import Answer
from runner.kinds.base import Violation
from runner.kinds.policies.kinds import check_policies
from runner.kinds.steps.policies import PolicyStep, text_hash
from runner.lang.model import Flow, Model

_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def assign(value: Any, assignment: str) -> Any:
    """Apply `path=value` (the value as JSON, else as text) to a copy of `value`."""
    path, sep, raw = assignment.partition("=")
    if not sep or not path:
        raise UsageError(f'--set takes path=value, e.g. reply="Hello"; got {assignment!r}')
    try:
        new = json.loads(raw)
    except json.JSONDecodeError:
        new = raw
    parts: list[str | int] = [int(i) if i else str(k) for k, i in _PATH_PART.findall(path)]
    if not parts:
        return new
    root = copy.deepcopy(value) if isinstance(value, dict | list) else {}
    node: Any = root
    for part in parts[:-1]:
        node = node.setdefault(part, {}) if isinstance(node, dict) else node[part]
    try:
        node[parts[-1]] = new
    except (IndexError, TypeError) as exc:
        raise UsageError(f"--set {path}: no such place in the output") from exc
    return root


def diff(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    """What changed from `before` to `after`: one {path, before, after} per value."""
    if isinstance(before, dict) and isinstance(after, dict):
        changes: list[dict[str, Any]] = []
        for key in [*before, *(k for k in after if k not in before)]:
            where = f"{path}.{key}" if path else str(key)
            changes += diff(before.get(key), after.get(key), where)
        return changes
    if before == after:
        return []
    return [{"path": path or "(the whole output)", "before": before, "after": after}]


class _NoModel:
    """Checks at review time ask no model: `judge` rules are left to the run."""

    @property
    def events(self) -> list[Any]:
        return []

    def model(self, name: str | None) -> Model:
        raise UsageError("no model is asked while a person decides")

    def ask(self, messages: Sequence[Mapping[str, Any]], schema: Any, **options: Any) -> Answer:
        raise UsageError("no model is asked while a person decides")

    def embed(self, model: str, texts: Sequence[str], *, keep: bool = True) -> list[list[float]]:
        raise UsageError("no model is asked while a person decides")

    @property
    def folder(self) -> Path:
        raise UsageError("no model is asked while a person decides")


def recheck(
    flow: Flow, target: str, ctx: Mapping[str, Any]
) -> dict[str, tuple[str, list[Violation]]]:
    """For each policy check of the flow that reads `target`'s output and finds a
    violation in its text rendered with `ctx` (which holds the edited output): that
    text's fingerprint and the violations. Model-judged rules are not asked here; the
    run asks them when it reaches the check."""
    found: dict[str, tuple[str, list[Violation]]] = {}
    for step in flow.steps:
        if not isinstance(step, PolicyStep) or target not in _reads(step.text):
            continue
        rules = [
            flow.policies[name] for name in step.policies if flow.policies[name].kind != "judge"
        ]
        text = str(templates.render(step.text, ctx))
        hits = check_policies(rules, text, ctx, _NoModel())
        if hits:
            found[step.id] = (text_hash(text), hits)
    return found


def _reads(text: str) -> set[str]:
    refs = templates.references(templates.parse(text))
    return {str(r.chain[0]) for r in refs if r.root == "steps" and r.chain}


def describe_hits(hits: Sequence[Mapping[str, Any]]) -> list[str]:
    """Policy findings as lines, each distinct one once with a count."""
    counted: dict[str, int] = {}
    for hit in hits:
        where = f': "{hit["excerpt"]}"' if hit.get("excerpt") else ""
        line = f"policy {hit['policy']} ({hit['rule']}): {hit['message']}{where}"
        counted[line] = counted.get(line, 0) + 1
    return [f"{line} (x{count})" if count > 1 else line for line, count in counted.items()]
