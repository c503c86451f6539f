"""Every flow shipped in flows/ and examples/ validates and draws as Mermaid.

New flow files are picked up on their own: a flow added without passing `runner
validate` fails here, by name.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import yaml

from runner.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
FLOW_DIRS = ("flows", "examples")


def flow_files() -> list[Path]:
    """The flow files under flows/ and examples/, without flow tests (`*.test.yaml`)."""
    found = [
        path
        for folder in FLOW_DIRS
        for path in (ROOT / folder).rglob("*")
        if path.suffix in (".yaml", ".yml") and not path.name.endswith((".test.yaml", ".test.yml"))
    ]
    return sorted(found)


FLOWS = flow_files()
IDS = [str(path.relative_to(ROOT)) for path in FLOWS]
# `    s0 --> s1 : label`, `    [*] --> s0`, `    s4 --> [*] : ok`
EDGE = re.compile(r"^\s+(\S+) --> (\S+)(?: : .*)?$")
# `    state "classify" as s0`: a step's id is its name; the diagram's ids are generated
STATE = re.compile(r'^\s+state "([^"]*)" as (\S+)$')


def test_discovery_finds_the_shipped_flows() -> None:
    assert "flows/support.yaml" in IDS
    for name in ("invoice", "refund", "leads", "order_sync"):
        assert f"examples/{name}.yaml" in IDS


@pytest.mark.parametrize("path", FLOWS, ids=IDS)
def test_flow_validates(path: Path) -> None:
    out = io.StringIO()
    code = main(["validate", str(path)], out=out)
    assert code == 0, out.getvalue()
    assert out.getvalue().strip() == "1 flow valid"


@pytest.mark.parametrize("path", FLOWS, ids=IDS)
def test_flow_draws_every_step_in_mermaid(path: Path) -> None:
    out = io.StringIO()
    assert main(["graph", str(path)], out=out) == 0
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0] == "stateDiagram-v2"
    names, nodes = {}, set()
    for line in lines[1:]:
        state, edge = STATE.match(line), EDGE.match(line)
        if state:
            names[state.group(2)] = state.group(1)
        if edge:
            nodes |= {names.get(edge.group(1)), names.get(edge.group(2))}
    steps = [step["id"] for step in yaml.safe_load(path.read_text(encoding="utf-8"))["steps"]]
    first = next(node for node, name in names.items() if name == steps[0])
    assert f"    [*] --> {first}" in lines
    missing = [step for step in steps if step not in nodes]
    assert not missing, f"steps not drawn: {missing}\n{text}"
