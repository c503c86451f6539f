"""agent steps: a model calls the flow's tools in a loop, then gives its answer.

Each model turn that asks for tools is recorded (an `agent_turn` event, committed)
before its tools run, and each finished tool call too (`agent_call`), so a run resumed
after a crash replays the recorded turns and results instead of asking the model or
calling the tools again: a finished tool call is never repeated. Tool calls go through
the same machinery as tool steps (input schema, retries, the effect ledger). Arguments
that break a tool's input schema are sent back to the model to fix; a tool that still
fails after its retries fails the step, since an agent that carries on past a failed
tool is exactly what runner exists to prevent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from runner.core.errors import LLMError, StepError
from runner.runtime.session import Session, messages_for
from runner.lang.model import AgentStep, Tool
from runner.store.records import Event
from runner.runtime.retry import Attempt, RetriesExhaustedError
from runner.lang.schema import instance_problems

if TYPE_CHECKING:
    from runner.lang.compiler import CompiledFlow
    from runner.runtime.engine import Engine, StepResult, _RunState


def tool_spec(tool: Tool) -> dict[str, Any]:
    """A tool as function-calling models see it."""
    parameters = tool.input_schema if isinstance(tool.input_schema, dict) else {
        "type": "object"}
    return {"type": "function", "function": {
        "name": tool.name, "description": tool.description or tool.name,
        "parameters": parameters}}


class AgentLoop:
    """One visit of an agent step: its conversation, replayed from the record if any."""

    def __init__(self, engine: Engine, compiled: CompiledFlow, step: AgentStep,
                 state: _RunState, session: Session) -> None:
        self.engine, self.compiled, self.step, self.state = engine, compiled, step, state
        self.session = session
        self.seq = state.seq + 1  # the checkpoint this visit will write
        self.turns, self.results = self._recorded()
        self.tools = {name: compiled.flow.tools[name] for name in step.tools}

    def _recorded(self) -> tuple[dict[int, dict[str, Any]], dict[tuple[int, str], Any]]:
        turns: dict[int, dict[str, Any]] = {}
        results: dict[tuple[int, str], Any] = {}
        for event in self.engine.store.events(self.state.run_id):
            if event.step_id != self.step.id or event.data.get("seq") != self.seq:
                continue
            if event.kind == "agent_turn":
                turns[event.data["turn"]] = event.data["assistant"]
            elif event.kind == "agent_call":
                results[(event.data["turn"], event.data["call_id"])] = event.data["result"]
        return turns, results

    def run(self, ctx: Mapping[str, Any]) -> Any:
        messages: list[dict[str, Any]] = messages_for(self.step.system, self.step.prompt, ctx)
        specs = [tool_spec(t) for t in self.tools.values()]
        for turn in range(self.step.max_turns):
            assistant = self.turns.get(turn)
            if assistant is None:
                answer = self.session.ask(messages, self.step.output_schema,
                                          model=self.step.model, repairs=self.step.repairs,
                                          tools=specs)
                if not answer.response.tool_calls:
                    return answer.value
                assistant = _assistant_message(answer.response)
                self._commit(Event("agent_turn", self.step.id, {
                    "seq": self.seq, "turn": turn, "assistant": assistant}))
            else:
                self.session.events.append(Event("agent_replay", self.step.id,
                                                  {"seq": self.seq, "turn": turn}))
            messages.append(assistant)
            for call in assistant["tool_calls"]:
                result = self._tool_result(turn, call)
                messages.append({"role": "tool", "tool_call_id": call["id"],
                                 "content": json.dumps(result, ensure_ascii=False)})
        raise LLMError(f"the agent gave no final answer within {self.step.max_turns} turns",
                       "max_turns")

    def _tool_result(self, turn: int, call: Mapping[str, Any]) -> Any:
        if (turn, call["id"]) in self.results:
            return self.results[(turn, call["id"])]
        name, raw = call["function"]["name"], call["function"]["arguments"]
        result = self._call(turn, call["id"], name, raw)
        self._commit(Event("agent_call", self.step.id, {
            "seq": self.seq, "turn": turn, "call_id": call["id"], "tool": name,
            "result": result}))
        return result

    def _call(self, turn: int, call_id: str, name: str, raw: str) -> Any:
        tool = self.tools.get(name)
        if tool is None:
            return {"error": f"there is no tool {name}; the tools are {', '.join(self.tools)}"}
        try:
            args = json.loads(raw or "{}")
        except json.JSONDecodeError as exc:
            return {"error": f"the arguments are not JSON: {exc.msg}"}
        problems = instance_problems(tool.input_schema, args)
        if problems:
            return {"error": "the arguments do not match the tool's input schema: "
                    + "; ".join(problems)}
        from runner.runtime.engine import failure

        key = f"{self.state.run_id}:{self.step.id}:{self.seq}:{turn}:{call_id}"
        try:
            result = self.engine.call_tool(self.compiled, self.step, tool, args, self.state,
                                           key)
        except RetriesExhaustedError as exc:
            result = failure(self.step, exc, exc.attempts)
        except StepError as exc:
            result = failure(self.step, exc, [Attempt(1, exc.kind, str(exc), None)])
        self.session.events += result.events
        if result.outcome != "ok":
            raise ToolFailedError(name, result)
        return result.output

    def _commit(self, event: Event) -> None:
        """Record progress durably now: a crash after this point must not repeat it."""
        self.engine.store.add_events(self.state.run_id, [event])


class ToolFailedError(StepError):
    """A tool the agent called failed after its retries, or its effect is in doubt."""

    def __init__(self, tool: str, result: StepResult) -> None:
        message = f"tool {tool} failed: {(result.error or {}).get('message', result.outcome)}"
        if result.error:
            result.error["message"] = message
        self.result = result
        super().__init__(message, result.outcome)


def run_agent_step(engine: Engine, compiled: CompiledFlow, step: AgentStep,
                   state: _RunState, session: Session, ctx: Mapping[str, Any]) -> Any:
    """The agent's final answer; raises StepError (or returns the failed tool's result
    through `ToolFailedError`) when it cannot finish."""
    return AgentLoop(engine, compiled, step, state, session).run(ctx)


def _assistant_message(response: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": response.text or None, "tool_calls": [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in response.tool_calls]}
