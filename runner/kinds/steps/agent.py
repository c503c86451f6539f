"""`agent` steps: a model calls the flow's tools in a loop, then gives its answer.

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
from dataclasses import dataclass
from typing import Any

from runner.core.errors import LLMError, StepError
from runner.core.events import AgentCall, AgentReplay, AgentTurn
from runner.core.vocabulary import ErrorKind, Outcome
from runner.kinds.base import (
    Checks,
    ModelSession,
    StepFailedError,
    StepResult,
    StepRun,
    attempts_of,
    failure,
    model_failure,
)
from runner.kinds.steps.prompts import check_prompts, messages_for
from runner.lang.model import DEFAULT_MAX_TURNS, DEFAULT_REPAIRS, ModelStep, Step, Tool
from runner.lang.schema import instance_problems


@dataclass(frozen=True, kw_only=True)
class AgentStep(ModelStep):
    """A model calls the flow's tools in a loop, then answers."""

    tools: tuple[str, ...]
    max_turns: int

    kind = "agent"

    def tool_names(self) -> tuple[str, ...]:
        return self.tools


def tool_spec(tool: Tool) -> dict[str, Any]:
    """A tool as function-calling models see it."""
    parameters = tool.input_schema if isinstance(tool.input_schema, dict) else {"type": "object"}
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description or tool.name,
            "parameters": parameters,
        },
    }


class AgentLoop:
    """One visit of an agent step: its conversation, replayed from the record if any."""

    def __init__(self, step: AgentStep, visit: StepRun, session: ModelSession) -> None:
        self.step, self.visit, self.session = step, visit, session
        self.seq = visit.seq  # the checkpoint this visit will write
        self.turns, self.results = self._recorded()
        self.tools = {name: visit.flow.tools[name] for name in step.tools}

    def _recorded(self) -> tuple[dict[int, Any], dict[tuple[int, str], Any]]:
        turns: dict[int, Any] = {}
        results: dict[tuple[int, str], Any] = {}
        for event in self.visit.recorded():
            if event.step_id != self.step.id or getattr(event, "seq", None) != self.seq:
                continue
            if isinstance(event, AgentTurn):
                turns[event.turn] = event.assistant
            elif isinstance(event, AgentCall):
                results[(event.turn, event.call_id)] = event.result
        return turns, results

    def run(self, ctx: Mapping[str, Any]) -> Any:
        messages: list[Any] = messages_for(self.step.system, self.step.prompt, ctx)
        specs = [tool_spec(t) for t in self.tools.values()]
        for turn in range(self.step.max_turns):
            assistant = self.turns.get(turn)
            if assistant is None:
                answer = self.session.ask(
                    messages,
                    self.step.output_schema,
                    model=self.step.model,
                    repairs=self.step.repairs,
                    tools=specs,
                )
                if not answer.response.tool_calls:
                    return answer.value
                assistant = _assistant_message(answer.response)
                self.visit.record(
                    AgentTurn(step_id=self.step.id, seq=self.seq, turn=turn, assistant=assistant)
                )
            else:
                self.session.events.append(
                    AgentReplay(step_id=self.step.id, seq=self.seq, turn=turn)
                )
            messages.append(assistant)
            for call in assistant["tool_calls"]:
                result = self._tool_result(turn, call)
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call["id"],
                        "content": json.dumps(result, ensure_ascii=False),
                    }
                )
        raise LLMError(
            f"the agent gave no final answer within {self.step.max_turns} turns",
            ErrorKind.MAX_TURNS,
        )

    def _tool_result(self, turn: int, call: Mapping[str, Any]) -> Any:
        if (turn, call["id"]) in self.results:
            return self.results[(turn, call["id"])]
        name, raw = call["function"]["name"], call["function"]["arguments"]
        result = self._call(turn, call["id"], name, raw)
        self.visit.record(
            AgentCall(
                step_id=self.step.id,
                seq=self.seq,
                turn=turn,
                call_id=call["id"],
                tool=name,
                result=result,
            )
        )
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
            return {
                "error": "the arguments do not match the tool's input schema: "
                + "; ".join(problems)
            }
        key = f"{self.visit.run_id}:{self.step.id}:{self.seq}:{turn}:{call_id}"
        try:
            result = self.visit.call_tool(tool, args, key)
        except StepError as exc:
            result = failure(self.step, exc, attempts_of(exc))
        self.session.events.extend(result.events)
        if result.outcome != Outcome.OK:
            raise _tool_failed(name, result)
        return result.output


def _tool_failed(tool: str, result: StepResult) -> StepFailedError:
    """A tool the agent called failed after its retries, or its effect is in doubt."""
    message = f"tool {tool} failed: {(result.error or {}).get('message', result.outcome)}"
    if result.error:
        result.error["message"] = message
    return StepFailedError(message, result)


def _assistant_message(response: Any) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": response.text or None,
        "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in response.tool_calls
        ],
    }


class Agent:
    """The `agent` step kind."""

    name = "agent"
    example: Mapping[str, Any] = {"agent": {"prompt": "Look it up.", "tools": []}}

    def build(self, raw: Mapping[str, Any], common: dict[str, Any]) -> Step:
        agent = raw["agent"]
        return AgentStep(
            **common,
            model=agent.get("model"),
            system=agent.get("system"),
            prompt=agent["prompt"],
            tools=tuple(agent["tools"]),
            max_turns=agent.get("max_turns", DEFAULT_MAX_TURNS),
            output_schema=agent.get("output"),
            repairs=agent.get("repairs", DEFAULT_REPAIRS),
        )

    def check(self, checks: Checks, step: Step) -> None:
        assert isinstance(step, AgentStep)
        path = (*step.path, "agent")
        for i, name in enumerate(step.tools):
            checks.known((*path, "tools", i), "tool", name, checks.flow.tools)
        check_prompts(checks, step, path)

    def run(self, step: Step, visit: StepRun) -> StepResult:
        assert isinstance(step, AgentStep)
        session = visit.session()
        try:
            output = AgentLoop(step, visit, session).run(visit.context())
        except StepError as exc:
            return model_failure(step, exc, session)
        return StepResult(Outcome.OK, output, 1, session.events)


KIND = Agent()
