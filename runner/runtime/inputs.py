"""A run's input, checked before any step runs, and a new run's id."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from runner.core.errors import InputError
from runner.lang.compiler import CompiledFlow
from runner.lang.schema import instance_problems

DEFAULT_MAX_INPUT_BYTES = 1024 * 1024


def check_input(compiled: CompiledFlow, value: Any, max_bytes: int) -> None:
    """Refuse input that is too large or does not match the flow's input schema."""
    size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
    if size > max_bytes:
        raise InputError(
            f"input is {size:,} bytes; the limit is {max_bytes:,} "
            "(raise it with --max-input-bytes or RUNNER_MAX_INPUT_BYTES)"
        )
    problems = instance_problems(compiled.flow.input_schema, value)
    if problems:
        listed = "\n".join(
            f"  input.{p}" if not p.startswith("(") else f"  input: {p}" for p in problems
        )
        raise InputError(
            f"input does not match flow {compiled.flow.name}'s input schema:\n" + listed
        )


def new_run_id() -> str:
    """A sortable, unique run id: time first, then randomness."""
    return f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
