"""One visit of a step: the run's state as the engine keeps it, and the `StepRun` that a
step kind's run sees (its templates' context, a model session, tool calls, the run's
recorded events)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.core.events import Event
from runner.kinds.base import StepResult
from runner.lang.compiler import CompiledFlow
from runner.lang.model import Flow, Step, Tool
from runner.runtime.session import Session, Usage

if TYPE_CHECKING:
    from runner.runtime.engine import Engine


class Environment(dict[str, str]):
    """Environment variables as templates see them (`env.NAME`, `secret.NAME`)."""


@dataclass
class RunState:
    """A run as the engine drives it: its input, the outputs of finished steps, the
    number of its last checkpoint and its model use so far."""

    run_id: str
    flow: str
    input: Any
    outputs: dict[str, Any]
    seq: int
    usage: Usage = field(default_factory=Usage)
    owner: str | None = None  # the lease token the engine drives the run under
    prior_attempts: int = 0  # made at its position before the run was parked there


class Visit:
    """What one step's run may use; implements `runner.kinds.base.StepRun`."""

    def __init__(self, engine: Engine, compiled: CompiledFlow, step: Step, state: RunState) -> None:
        self.engine, self.compiled, self.step, self.state = engine, compiled, step, state

    @property
    def flow(self) -> Flow:
        return self.compiled.flow

    @property
    def run_id(self) -> str:
        return self.state.run_id

    @property
    def seq(self) -> int:
        return self.state.seq + 1

    def context(self) -> dict[str, Any]:
        return context(self.state, self.engine.environ)

    def session(self) -> Session:
        return self.engine.session(self.compiled, self.step, self.state)

    def call_tool(self, tool: Tool, args: Any, default_key: str) -> StepResult:
        ctx = {
            "input": self.state.input,
            "run": {"id": self.run_id, "flow": self.state.flow},
            "env": self.engine.environ,
            "secret": self.engine.environ,
        }
        return self.engine.tools.call_tool(
            self.compiled, self.step, tool, args, ctx, self.run_id, default_key, self.state.owner
        )

    def recorded(self) -> list[Event]:
        return self.engine.store.events(self.run_id)

    def record(self, event: Event) -> None:
        self.engine.store.add_events(self.run_id, [event])


def context(state: RunState, environ: Mapping[str, str]) -> dict[str, Any]:
    """What step templates read."""
    return {
        "input": state.input,
        "steps": {sid: {"output": out} for sid, out in state.outputs.items()},
        "run": {"id": state.run_id, "flow": state.flow},
        "env": environ,
        "secret": environ,
    }
