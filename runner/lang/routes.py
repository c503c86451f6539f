"""The flow as a graph of routes: its edges, reachability, loops with no way out, and
which steps have surely completed (so their output exists) when another step runs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from runner.core.vocabulary import ENDINGS, Ending, Outcome
from runner.lang.model import Flow, Step


@dataclass(frozen=True)
class Edge:
    """A route of the compiled graph: from a step, on an outcome, to a step or ending."""

    source: str
    trigger: str
    dest: str


def edges(flow: Flow) -> Iterator[Edge]:
    for step in flow.steps:
        for trigger, dest in step.routes().items():
            yield Edge(step.id, str(trigger), str(dest))
        if flow.budget and step.uses_models:
            yield Edge(step.id, Outcome.BUDGET_EXCEEDED.value, flow.budget.on_exceeded)
        tools = [flow.tools[n] for n in step.tool_names() if n in flow.tools]
        if any(tool.effect and not tool.idempotent for tool in tools):
            # An effect whose outcome is unknown is never re-sent blindly: a person looks.
            yield Edge(step.id, Outcome.IN_DOUBT.value, Ending.HUMAN_REVIEW.value)


def reachable(
    start: str, successors: Callable[[str], Iterable[str]], nodes: dict[str, Any]
) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for dest in successors(todo.pop()):
            if dest in nodes and dest not in seen:
                seen.add(dest)
                todo.append(dest)
    return seen


def forward(step: Step) -> list[str]:
    """Routes that are not failures: what a step leads to when all goes well enough."""
    return [d for t, d in step.routes().items() if t != Outcome.ERROR]


def can_exit(flow: Flow) -> set[str]:
    """Steps from which some non-failure path reaches an ending."""
    exits: set[str] = set()
    changed = True
    while changed:
        changed = False
        for step in flow.steps:
            if step.id not in exits and any(d in ENDINGS or d in exits for d in forward(step)):
                exits.add(step.id)
                changed = True
    return exits


def loop_of(flow: Flow, start: str, exits: set[str]) -> list[str]:
    """The steps on the cycle that `start` leads into, in route order."""
    steps = {s.id: s for s in flow.steps}
    path, position = [start], start
    while True:
        position = next(d for d in forward(steps[position]) if d not in exits)
        if position in path:
            return path[path.index(position) :]
        path.append(position)


def availability(flow: Flow) -> dict[str, frozenset[str]]:
    """For each step, the steps that completed on every path to it (their output exists)."""
    everything = frozenset(s.id for s in flow.steps)
    steps = {s.id: s for s in flow.steps}
    known = {s.id: everything for s in flow.steps}
    known[flow.steps[0].id] = frozenset()
    changed = True
    while changed:
        changed = False
        for step in flow.steps:
            for trigger, dest in step.routes().items():
                if dest not in steps or dest == flow.steps[0].id:
                    continue
                gives = known[step.id] | ({step.id} if step.produces_output(trigger) else set())
                merged = known[dest] & gives
                if merged != known[dest]:
                    known[dest], changed = merged, True
    return known
