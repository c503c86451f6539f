"""Draw a compiled flow: Mermaid `stateDiagram-v2` (renders on GitHub) or Graphviz dot."""

from __future__ import annotations

import json
import re

from runner.core.vocabulary import ENDINGS, Outcome
from runner.lang.compiler import CompiledFlow
from runner.lang.routes import Edge

_UNSAFE = re.compile(r"[^A-Za-z0-9 _.=!<>'()\[\]+*/%,|-]+")


def label(compiled: CompiledFlow, edge: Edge) -> str:
    """The words on an edge: its outcome, or a switch branch's condition."""
    condition = compiled.flow.step(edge.source).condition_of(edge.trigger)
    if condition is not None:
        text = " ".join(_UNSAFE.sub(" ", condition).split())
        return "when " + (text if len(text) <= 48 else text[:45] + "...")
    words: dict[str, str] = {Outcome.DEFAULT: "otherwise"}
    return words.get(edge.trigger, edge.trigger.replace("_", " "))


def _endings(compiled: CompiledFlow) -> list[str]:
    used = {e.dest for e in compiled.edges}
    return [name for name in ENDINGS if name in used]


def mermaid(compiled: CompiledFlow) -> str:
    """The flow as a Mermaid state diagram."""
    lines = ["stateDiagram-v2", f"    [*] --> {compiled.first}"]
    lines += [f"    {e.source} --> {e.dest} : {label(compiled, e)}" for e in compiled.edges]
    lines += [f"    {name} --> [*]" for name in _endings(compiled)]
    lines += ["    classDef ending font-weight:bold"]
    lines += [f"    class {name} ending" for name in _endings(compiled)]
    return "\n".join(lines) + "\n"


def dot(compiled: CompiledFlow) -> str:
    """The flow as a Graphviz digraph."""
    lines = [
        f"digraph {json.dumps(compiled.flow.name)} {{",
        "    node [shape=box, style=rounded];",
        "    start [shape=point];",
        f"    start -> {json.dumps(compiled.first)};",
    ]
    lines += [f"    {json.dumps(n)} [shape=doubleoctagon];" for n in _endings(compiled)]
    lines += [
        f"    {json.dumps(e.source)} -> {json.dumps(e.dest)} "
        f"[label={json.dumps(label(compiled, e))}];"
        for e in compiled.edges
    ]
    return "\n".join([*lines, "}"]) + "\n"


FORMATS = {"mermaid": mermaid, "dot": dot}
