"""What a YAML file is to runner: a flow, a flow test file, or YAML that is not
runner's (CI workflows, compose files): test files by their name (`*.test.yaml`) or
schema line; a flow when it says so (the flow schema line, a top-level `steps`, or
`version` beside a key only flows have); any other YAML is OTHER. A file that is not
valid YAML at all counts as a flow, so that its problem is reported."""

from __future__ import annotations

from pathlib import Path

from runner.core.errors import FlowError

TEST_SUFFIXES = (".test.yaml", ".test.yml")
FLOW_ONLY_KEYS = {"models", "tools", "policies", "input", "on_error", "budget", "notify"}
FLOW, TEST, OTHER = "flow", "test", "other"


def kind_of(path: Path, *, found: bool = True) -> str:
    """FLOW, TEST or OTHER (see the module's docstring); a named file (`found` False)
    is never OTHER."""
    from runner.lang.source import load_file

    if path.name.endswith(TEST_SUFFIXES):
        return TEST
    if not found:
        return FLOW
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:2000]
    except OSError:
        return FLOW  # the flow loader says why it cannot be read
    first = "\n".join(head.splitlines()[:3])  # where the schema line goes
    if "flowtest.v1.json" in first:
        return TEST
    if "flow.v1.json" in first:
        return FLOW
    try:
        data = load_file(path).data
    except FlowError:
        return FLOW
    if not isinstance(data, dict):
        return OTHER
    if "steps" in data or ("version" in data and FLOW_ONLY_KEYS & set(data)):
        return FLOW
    return OTHER
