"""What a flow test case's run came to, and how that differs from what the case
expects, worded for the author (`status: expected escalated, got completed`)."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import Any

from runner.core.vocabulary import Outcome
from runner.flowtest.reviews import DECIDED
from runner.store import Store


def observed(store: Store, run_id: str, effects: Mapping[str, int]) -> dict[str, Any]:
    """The run as a case's `expect` reads it; `effects` counts each effect tool's calls
    that did (or may have) reach the other side."""
    record = store.run(run_id)
    checkpoints = store.checkpoints(run_id)
    retries: dict[str, int] = {}
    confidence: dict[str, float] = {}  # a step's lowest gate score, on its last visit
    visit: dict[str, list[float]] = {}
    for event in store.events(run_id):
        step = event.step_id or ""
        if event.kind == "attempt_failed" and event.data.get("wait") is not None:
            retries[step] = retries.get(step, 0) + 1
        if event.kind == "confidence" and event.data.get("score") is not None:
            visit.setdefault(step, []).append(float(event.data["score"]))
        if event.kind == "step" and step in visit:
            confidence[step] = round(min(visit.pop(step)), 3)
    return {
        "status": record.status,
        "ending": record.position,
        "stopped_at": record.failed_step,
        "steps": [c.step_id for c in checkpoints if c.outcome not in DECIDED],
        "retries": retries,
        "effects": dict(effects),
        "outputs": {c.step_id: c.output for c in checkpoints if c.outcome != Outcome.ERROR},
        "reason": record.reason or "",
        "confidence": confidence,
        "decisions": [d.decision for d in store.decisions(run_id)],
    }


def compare(expect: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """Each difference between what a case expects and what happened, readably."""
    found = _stop_differences(expect, actual)
    if "steps" in expect and list(expect["steps"]) != actual["steps"]:
        diff = difflib.ndiff(list(expect["steps"]), actual["steps"])
        found.append(
            "steps (- expected, + actual):\n"
            + "\n".join("    " + line for line in diff if not line.startswith("?"))
        )
    if "reason" in expect and expect["reason"] not in actual["reason"]:
        found.append(
            f"reason: expected it to contain {expect['reason']!r}, got {actual['reason']!r}"
        )
    if "decisions" in expect and list(expect["decisions"]) != actual["decisions"]:
        found.append(
            f"decisions: expected [{', '.join(expect['decisions'])}], "
            f"got [{', '.join(actual['decisions'])}]"
        )
    return found + _count_differences(expect, actual) + _output_differences(expect, actual)


def _stop_differences(expect: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for key in ("status", "ending", "stopped_at"):
        if key in expect and expect[key] != actual[key]:
            got = "nothing" if actual[key] is None else actual[key]
            found.append(
                f"{key}: expected {expect[key]}, got {got}"
                + (f" (reason: {actual['reason']})" if actual["reason"] else "")
            )
    return found


def _count_differences(expect: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for key in ("retries", "effects"):
        for name, count in expect.get(key, {}).items():
            got = actual[key].get(name, 0)
            if got != count:
                found.append(f"{key}.{name}: expected {count}, got {got}")
    for name, score in expect.get("confidence", {}).items():
        got = actual["confidence"].get(name)
        if got is None or abs(got - score) > 0.0005:
            found.append(f"confidence.{name}: expected {score}, got {got}")
    return found


def _output_differences(expect: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for path, value in expect.get("outputs", {}).items():
        got = _dig(actual["outputs"], path)
        if got != value:
            found.append(
                f"outputs.{path}: expected {json.dumps(value)}, got {json.dumps(got, default=str)}"
            )
    return found


def _dig(outputs: Mapping[str, Any], path: str) -> Any:
    node: Any = outputs
    for part in path.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return None
    return node
