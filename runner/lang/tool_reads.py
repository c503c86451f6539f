"""Likely misspellings of fields read from tool outputs that have no schema: warnings.

A tool without an `output` schema may return any fields, so no field read from its
output can be refused. One read still looks wrong: a field that is read from the output
of the same tool elsewhere under a close spelling (one more used in the flow), while this
spelling is read in one place and written nowhere else in the file. Names that differ
only in their digits (`line1`, `line2`) are a series, not a misspelling.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from runner.lang.model import Flow
from runner.lang.source import Path_

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Read:
    """A template at `path` reads `steps.<step>.output` then `chain`."""

    path: Path_
    step: str
    chain: tuple[str | int, ...]


def misspelled(flow: Flow, reads: list[Read]) -> Iterator[tuple[Path_, str]]:
    """(where, what) for each read that looks like a misspelling of another."""
    groups: dict[tuple[str, tuple[str | int, ...]], dict[str, list[Read]]] = {}
    for read in reads:
        tool = _schemaless_tool(flow, read.step)
        for depth, part in enumerate(read.chain):
            if tool is None or not isinstance(part, str):
                break
            groups.setdefault((tool, read.chain[:depth]), {}).setdefault(part, []).append(read)
    words = Counter(_WORD.findall(flow.document.text))
    for (tool, parents), names in groups.items():
        for name, found in names.items():
            if len({r.path for r in found}) != 1 or words[name] != 1:
                continue
            others = [n for n in names if words[n] > 1 and not _series(n, name)]
            close = difflib.get_close_matches(name, others, n=1, cutoff=0.8)
            if close:
                read = found[0]
                yield read.path, _message(tool, read, len(parents), close[0])


def _schemaless_tool(flow: Flow, step_id: str) -> str | None:
    """The tool a `tool` step calls, if that tool declares no output schema."""
    step = flow.find(step_id)
    if step is None or step.kind != "tool":
        return None
    tool = next((flow.tools[n] for n in step.tool_names() if n in flow.tools), None)
    if tool is None or tool.output_schema not in (True, {}, None):
        return None
    return tool.name


def _series(one: str, other: str) -> bool:
    return _DIGITS.sub("", one) == _DIGITS.sub("", other)


def _message(tool: str, read: Read, depth: int, instead: str) -> str:
    spelled = ".".join(str(p) for p in ("steps", read.step, "output", *read.chain[: depth + 1]))
    return (
        f"`{spelled}` may be misspelled: `{read.chain[depth]}` is read only here, while "
        f"`{instead}` is read from the output of tool `{tool}` elsewhere; did you mean "
        f"`{instead}`? (tool `{tool}` has no `output` schema to check its fields against)"
    )
