"""`tool` steps: call one of the flow's tools with arguments rendered from templates."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runner.core import templates
from runner.kinds.base import STEP_ROOTS, Checks, StepResult, StepRun
from runner.lang.model import Flow, Step
from runner.lang.schema import schema_problems
from runner.lang.source import strings_in


@dataclass(frozen=True, kw_only=True)
class ToolStep(Step):
    """Call a tool with arguments rendered from templates."""

    tool: str
    args: Mapping[str, Any]

    kind = "tool"

    def tool_names(self) -> tuple[str, ...]:
        return (self.tool,)

    def output_schema_in(self, flow: Flow) -> Any:
        tool = flow.tools.get(self.tool)
        return tool.output_schema if tool is not None else None


class ToolKindOfStep:
    """The `tool` step kind."""

    name = "tool"
    example: Mapping[str, Any] = {"tool": "lookup", "args": {}}

    def build(self, raw: Mapping[str, Any], common: dict[str, Any]) -> Step:
        return ToolStep(**common, tool=raw["tool"], args=raw.get("args", {}))

    def check(self, checks: Checks, step: Step) -> None:
        assert isinstance(step, ToolStep)
        checks.known((*step.path, "tool"), "tool", step.tool, checks.flow.tools)
        for path, value in strings_in(step.args, (*step.path, "args")):
            checks.template(path, value, STEP_ROOTS, step=step)
        tool = checks.flow.tools.get(step.tool)
        schema = tool.input_schema if tool is not None else None
        if isinstance(schema, dict) and not schema_problems(schema):
            _args_fit(checks, step, schema)

    def run(self, step: Step, visit: StepRun) -> StepResult:
        assert isinstance(step, ToolStep)
        args = templates.render_tree(dict(step.args), visit.context())
        return visit.call_tool(visit.flow.tools[step.tool], args, f"{visit.run_id}:{step.id}")


def _args_fit(checks: Checks, step: ToolStep, schema: dict[str, Any]) -> None:
    """Arguments the tool's input schema requires or forbids, known before any run."""
    for name in [k for k in schema.get("required", []) if k not in step.args]:
        checks.add(
            (*step.path, "args") if step.args else step.path,
            f"tool `{step.tool}` requires argument `{name}`",
        )
    if schema.get("additionalProperties") is not False:
        return
    allowed = schema.get("properties", {})
    for name in step.args:
        if name not in allowed:
            close = difflib.get_close_matches(name, list(allowed), n=1)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            checks.add(
                (*step.path, "args", name),
                f"tool `{step.tool}` takes no argument `{name}`{hint}",
                key=True,
            )


KIND = ToolKindOfStep()
