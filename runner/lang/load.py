"""Read a flow file through every stage: source -> schema -> model -> compiler."""

from __future__ import annotations

from pathlib import Path

from runner.lang import schema
from runner.lang.build import build_flow
from runner.lang.compiler import CompiledFlow, compile_flow
from runner.lang.source import Document, load_bytes, load_file

FLOW_SCHEMA = "flow.v1.json"
FLOW_SUFFIXES = (".yaml", ".yml")


def load_flow(path: str | Path) -> CompiledFlow:
    """A compiled flow, or FlowError with every problem of the first stage that failed."""
    return _compile(load_file(path))


def load_flow_text(text: str, name: str) -> CompiledFlow:
    """Compile flow text kept elsewhere (a run's pinned version); `name` is its file."""
    return _compile(load_bytes(text.encode("utf-8"), name))


def _compile(document: Document) -> CompiledFlow:
    schema.check(document, FLOW_SCHEMA)
    return compile_flow(build_flow(document))
