"""The review queue shows the score that stopped a run: with several gates on a step,
the failed gate's (the lowest, if more than one failed), named."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

from runner.lang.load import load_flow
from runner.review.desk import Desk
from runner.runtime.engine import Engine
from runner.store.sql import SqlStore
from runner.testing import FakeClock, FakeLLM

FLOW = """\
version: 1
name: two_gates
models:
  default: openai/gpt-4o-mini
steps:
  - id: classify
    llm:
      prompt: "Classify {{ input.text }}"
      output:
        type: object
        required: [category, a, b]
        properties:
          category: {enum: [billing, other]}
          a: {type: number}
          b: {type: number}
    confidence:
      - {score: "{{ output.a }}", min: 0.5}
      - {score: "{{ output.b }}", min: 0.5}
on_error: dead_letter
"""


def test_the_queue_shows_the_failed_gate_of_several(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(textwrap.dedent(FLOW), encoding="utf-8")
    llm = FakeLLM({"classify": [{"category": "billing", "a": 0.2, "b": 0.9}]})
    engine = Engine(SqlStore.memory(), llm=llm, clock=FakeClock(), rng=random.Random(0))
    result = engine.start(load_flow(path), {"text": "x"})

    assert result.status == "escalated"
    assert result.reason == "confidence 0.200 below 0.5 (field#1)"
    proposal = Desk(engine).proposal(result.run_id)
    assert (proposal.score, proposal.method) == (0.2, "field#1")
    gates = [e.data for e in engine.store.events(result.run_id) if e.kind == "confidence"]
    assert [(g["gate"], g["score"], g["passed"]) for g in gates] == [
        ("field#1", 0.2, False),
        ("field#2", 0.9, True),
    ]
