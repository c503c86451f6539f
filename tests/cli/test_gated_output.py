"""`runner run --inputs` prints each run's gated values and scores, and the JSON of a
batch and of `runner runs` carries them: a model served by a real HTTP server on
127.0.0.1 answers with known token logprobs."""

from __future__ import annotations

import io
import json
import math
import textwrap
from pathlib import Path
from typing import Any

from scripted_server import Received, Reply, ScriptedServer

from runner.cli.main import main

PROBABILITY = {"T-1": 0.9, "T-2": 0.4}  # the chance the model gives its category


def completion(request: Received) -> dict[str, Any]:
    prompt = request.json()["messages"][-1]["content"]
    ticket = "T-1" if "T-1" in prompt else "T-2"
    pieces = [('{"category": "', 0.0), ("b", math.log(PROBABILITY[ticket])), ('illing"}', 0.0)]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "scripted",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": '{"category": "billing"}'},
                "logprobs": {
                    "content": [
                        {
                            "token": t,
                            "logprob": lp,
                            "bytes": None,
                            "top_logprobs": [{"token": t, "logprob": lp, "bytes": None}],
                        }
                        for t, lp in pieces
                    ]
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
    }


FLOW = """\
version: 1
name: gated
models:
  default: {model: openai/scripted, api_base: "URL/v1", temperature: 0}
steps:
  - id: classify
    llm:
      prompt: "Classify ticket {{ input.id }}"
      output:
        type: object
        required: [category]
        properties: {category: {enum: [billing, technical]}}
    confidence: {method: logprobs, min: 0.7}
on_error: dead_letter
"""


def setup(tmp_path: Path, server: ScriptedServer) -> tuple[Path, Path, str]:
    server.script("/v1/chat/completions", *[Reply(body=completion)] * 4)
    flow = tmp_path / "gated.yaml"
    flow.write_text(textwrap.dedent(FLOW).replace("URL", server.url), encoding="utf-8")
    inputs = tmp_path / "tickets.jsonl"
    inputs.write_text('{"id": "T-1"}\n{"id": "T-2"}\n', encoding="utf-8")
    return flow, inputs, f"sqlite:///{tmp_path / 'runs.db'}"


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def test_a_batch_prints_each_runs_gated_value_and_score(
    tmp_path: Path, http_server: ScriptedServer
) -> None:
    flow, inputs, db = setup(tmp_path, http_server)
    code, output = run("run", str(flow), "--inputs", str(inputs), "--db", db)

    lines = sorted(output.splitlines()[:2])  # runs end in any order: sort by line
    assert code == 4  # one run waits for a person
    assert lines[0].endswith("completed · classify: billing (logprobs 0.90)"), lines[0]
    assert lines[1].endswith("classify: billing (logprobs 0.40 < 0.7)"), lines[1]


def test_batch_and_runs_json_carry_the_gates(tmp_path: Path, http_server: ScriptedServer) -> None:
    flow, inputs, db = setup(tmp_path, http_server)
    code, output = run("run", str(flow), "--inputs", str(inputs), "--db", db, "--format", "json")

    assert code == 4
    items = json.loads(output)
    assert [item["gated"] for item in items] == [
        [
            {
                "step": "classify",
                "values": {"category": "billing"},
                "gates": [{"gate": "logprobs", "score": 0.9, "min": 0.7, "passed": True}],
            }
        ],
        [
            {
                "step": "classify",
                "values": {"category": "billing"},
                "gates": [{"gate": "logprobs", "score": 0.4, "min": 0.7, "passed": False}],
            }
        ],
    ]
    code, listed = run("runs", "--db", db, "--format", "json")
    assert code == 0
    scores = sorted(r["gated"][0]["gates"][0]["score"] for r in json.loads(listed))
    assert scores == [0.4, 0.9]
