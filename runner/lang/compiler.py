"""A flow that passed every check, compiled: its routes as a graph, and a transitions
state machine per run (one state per step plus the endings, each outcome a trigger)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from runner.core.errors import FlowError, Problem
from runner.core.vocabulary import ENDINGS
from runner.lang.checker import meaning_problems
from runner.lang.model import Flow
from runner.lang.routes import Edge, edges


@dataclass(frozen=True)
class CompiledFlow:
    """A flow that passed every check, with its routes as a graph, and the warnings its
    checks gave (what looks wrong but does not stop it from running)."""

    flow: Flow
    edges: tuple[Edge, ...]
    warnings: tuple[Problem, ...] = ()
    first: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "first", self.flow.steps[0].id)

    def route(self, step_id: str, trigger: str) -> str:
        """Where a step's outcome leads."""
        for edge in self.edges:
            if edge.source == step_id and edge.trigger == trigger:
                return edge.dest
        raise KeyError(f"{step_id} has no route for {trigger}")


def compile_flow(flow: Flow) -> CompiledFlow:
    """Check the meaning of `flow` and compile it; FlowError lists every problem (its
    warnings too) if any is an error."""
    problems = meaning_problems(flow)
    if any(p.severity == "error" for p in problems):
        raise FlowError(problems)
    return CompiledFlow(flow, tuple(edges(flow)), tuple(problems))


class Position:
    """A run's place in its compiled state machine. transitions sets `state` and binds
    `trigger(outcome)`, which moves the position along the outcome's route."""

    state: str
    trigger: Callable[[str], bool]


def machine_position(compiled: CompiledFlow, position: str) -> Position:
    """A transitions machine for one run, standing at `position`."""
    from transitions import Machine

    model = Position()
    Machine(
        model=model,
        states=[*(s.id for s in compiled.flow.steps), *map(str, ENDINGS)],
        transitions=[
            {"trigger": e.trigger, "source": e.source, "dest": e.dest} for e in compiled.edges
        ],
        initial=position,
        auto_transitions=False,
        send_event=True,
        queued=True,
    )
    return model
