"""What model steps share: the conversation a step starts with, and the checks of its
model and prompts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runner.core import templates
from runner.kinds.base import STEP_ROOTS, Checks
from runner.lang.model import ModelStep
from runner.lang.source import Path_


def messages_for(system: str | None, prompt: str, ctx: Mapping[str, Any]) -> list[dict[str, str]]:
    """The conversation a step starts with: its system prompt and its prompt, rendered."""
    rendered = (
        []
        if system is None
        else [{"role": "system", "content": str(templates.render(system, ctx))}]
    )
    return [*rendered, {"role": "user", "content": str(templates.render(prompt, ctx))}]


def check_prompts(checks: Checks, step: ModelStep, path: Path_) -> None:
    """The step's model exists and its prompts read only what they can."""
    checks.model_ref((*path, "model") if step.model else path, step.model)
    for part in ("system", "prompt"):
        text = getattr(step, part)
        if text is not None:
            checks.template((*path, part), text, STEP_ROOTS, step=step)
