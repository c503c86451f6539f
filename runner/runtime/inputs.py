"""A run's input, checked before any step runs, and a new run's id.

Input is refused unless every store keeps it as it is: UTF-8 text, no lone surrogate or
NUL character, finite numbers, integers of at most 4,300 digits (Python's own limit for
turning one into text), at most 64 levels of nesting, text keys. PostgreSQL refuses NUL
characters, NaN and Infinity where SQLite takes them, so a run that passed on one back
end would fail mid-run on the other; what is refused here never starts.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime
from typing import Any

from runner.core.errors import InputError
from runner.lang.compiler import CompiledFlow
from runner.lang.schema import instance_problems
from runner.lang.source import Path_, spell_path

DEFAULT_MAX_INPUT_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_INT_DIGITS = 4300
_SHOWN_PROBLEMS = 20
_INT_LIMIT = 10**MAX_INT_DIGITS


def check_input(compiled: CompiledFlow, value: Any, max_bytes: int) -> None:
    """Refuse input that no store keeps as it is, is too large, or does not match the
    flow's input schema."""
    problems = storage_problems(value, "input")
    if problems:
        raise unstorable(problems)
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


def parse_input(data: bytes) -> Any:
    """The JSON value in an input's bytes. InputError if they are not UTF-8 text or
    hold what no store keeps; json.JSONDecodeError if they are not JSON at all."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"input is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}"
        ) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError as exc:
        raise unstorable([f"input: nested deeper than {MAX_DEPTH} levels"]) from exc
    except ValueError as exc:  # Python refuses to read an integer this long
        raise unstorable([f"input: an integer longer than {MAX_INT_DIGITS:,} digits"]) from exc


def unstorable(problems: list[str]) -> InputError:
    """The refusal of input that no store keeps as it is, listing why."""
    shown = problems[:_SHOWN_PROBLEMS]
    more = len(problems) - len(shown)
    listed = "".join(f"\n  {p}" for p in shown) + (f"\n  and {more:,} more" if more else "")
    return InputError("input cannot be stored as it is:" + listed)


def storage_problems(value: Any, root: str) -> list[str]:
    """Why `value` cannot be stored as it is, as JSON, on every back end (empty if it
    can); each problem starts with where it is, from `root` (`input.items[2]`)."""
    problems: list[str] = []
    _walk(value, (root,), 0, problems)
    return problems


def _walk(value: Any, path: Path_, depth: int, problems: list[str]) -> None:
    if isinstance(value, dict | list | tuple) and depth >= MAX_DEPTH:
        problems.append(f"{path[0]}: nested deeper than {MAX_DEPTH} levels")
    elif isinstance(value, dict):
        for key, item in value.items():
            why = _key_problem(key)
            if why:
                problems.append(f"{_spell(path)}: key {_shown(key)}: {why}")
            _walk(item, (*path, key if isinstance(key, str) else str(key)), depth + 1, problems)
    elif isinstance(value, list | tuple):  # a tuple is kept as a list
        for index, item in enumerate(value):
            _walk(item, (*path, index), depth + 1, problems)
    else:
        why = _scalar_problem(value)
        if why:
            problems.append(f"{_spell(path)}: {why}")


def _scalar_problem(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return _text_problem(value)
    if isinstance(value, int):
        too_long = abs(value) >= _INT_LIMIT
        return f"an integer longer than {MAX_INT_DIGITS:,} digits" if too_long else None
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        name = "NaN" if math.isnan(value) else ("-Infinity" if value < 0 else "Infinity")
        return f"{name} is not a finite JSON number"
    return f"a {type(value).__name__} is not a JSON value"


def _key_problem(key: Any) -> str | None:
    return _text_problem(key) if isinstance(key, str) else "a key must be text"


def _text_problem(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"a lone surrogate (\\u{ord(text[exc.start]):04x}) is not Unicode text"
    if "\x00" in text:
        return "a NUL character (\\u0000) cannot be stored"
    return None


def _spell(path: Path_) -> str:
    """The path as the author sees it; a key that cannot be shown as it is (a NUL, a
    lone surrogate, a line break) is shown as a JSON string."""
    return spell_path(
        tuple(p if isinstance(p, int) or p.isprintable() else _shown(p) for p in path)
    )


def _shown(key: Any) -> str:
    return json.dumps(key) if isinstance(key, str) else repr(key)
