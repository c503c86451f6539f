"""`runner eval` when every model answer is already in the cache: N generated cases of a
ticket classifier (one llm step with a logprobs gate, then an effect tool), evaluated
a second time.

    .venv/bin/python bench/eval.py [--cases N] [--concurrency C] [--git] [--profile]

The first pass fills the answer cache from a model in this process (not measured). Then
two measured passes read every answer from the cache: the library path `runner eval`
takes (read the cases, runner.eval.run.Evaluation, metrics.measure, report.render as
Markdown), with a model client that fails if it is ever asked; and the command itself,
`runner eval FLOW --data CASES --cache FILE`, through runner.cli.main.main. Prints
seconds and cases per second for each (target: under 10 s for 1,000 cases).

--git commits the flow in a git repository first, as in a project (each run then pins
the flow's git commit). --profile runs the library pass once more with the cases one
after another on this thread (cProfile sees only the thread it runs on) and prints
where the time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import pstats
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest.mock import patch

CATEGORIES = ("billing", "technical", "account", "other")
TARGET_SECONDS = 10.0
FLOW = """\
version: 1
name: triage
input:
  type: object
  required: [ticket]
  properties:
    ticket:
      type: object
      required: [id, body]
      additionalProperties: false
      properties: {{id: {{type: string}}, body: {{type: string}}}}
models:
  default: {{model: openai/scripted, api_base: "{api_base}", temperature: 0}}
tools:
  notify:
    python: bench_eval_tools:send
    effect: true
steps:
  - id: classify
    llm:
      prompt: |
        Classify ticket {{{{ input.ticket.id }}}} as billing, technical, account or other.
        {{{{ input.ticket.body }}}}
      output:
        type: object
        required: [category]
        properties:
          category: {{enum: [billing, technical, account, other]}}
    confidence: {{method: logprobs, min: 0.7}}
    on_low_confidence: human_review
  - id: notify
    tool: notify
    args: {{ticket: "{{{{ input.ticket.id }}}}"}}
on_error: dead_letter
"""
TOOL = """\
def send(ticket):
    raise RuntimeError("an effect ran during an evaluation")
"""


def make_table(count: int, seed: int = 7) -> dict[str, tuple[str, str, float]]:
    """Per ticket id: the true label, the model's answer and the probability of its first
    token."""
    rng = random.Random(seed)
    table = {}
    for n in range(count):
        label = rng.choice(CATEGORIES)
        right = rng.random() < 0.75
        answer = label if right else rng.choice([c for c in CATEGORIES if c != label])
        p = round(rng.uniform(0.55, 0.999) if right else rng.uniform(0.3, 0.88), 3)
        table[f"T-{n:05d}"] = (label, answer, p)
    return table


class TableModel:
    """A model in this process that answers each ticket from the table, with token
    logprobs that make the logprobs gate score the answer p."""

    def __init__(self, table: dict[str, tuple[str, str, float]]) -> None:
        self.table = table
        self.calls = 0

    def complete(self, request: Any) -> Any:
        from runner.core.llm import LLMResponse

        self.calls += 1
        prompt = "\n".join(str(m.get("content")) for m in request.messages)
        found = re.search(r"T-\d{5}", prompt)
        assert found is not None, prompt
        _, answer, p = self.table[found.group()]
        pieces = [('{"', 0.0), ("category", 0.0), ('":', 0.0), (' "', 0.0)]
        pieces += [(answer[0], math.log(p)), (answer[1:], 0.0), ('"}', 0.0)]
        return LLMResponse(
            text=json.dumps({"category": answer}),
            logprobs=tuple((text, lp, ((text, lp),)) for text, lp in pieces),
            prompt_tokens=60,
            completion_tokens=len(pieces),
            cost_usd=0.0,
            latency_ms=20.0,
            model=request.model,
        )


class NeverAsked:
    """A model client for the measured pass: every answer must come from the cache."""

    def complete(self, request: Any) -> Any:
        raise AssertionError(f"a model was asked during the cached pass: {request.step_id}")


def write_files(folder: Path, count: int, api_base: str) -> tuple[Path, Path]:
    (folder / "bench_eval_tools.py").write_text(TOOL, encoding="utf-8")
    flow = folder / "triage.yaml"
    flow.write_text(FLOW.format(api_base=api_base), encoding="utf-8")
    data = folder / "cases.jsonl"
    with data.open("w", encoding="utf-8") as lines:
        for ticket, (label, _, _) in make_table(count).items():
            case = {
                "id": ticket,
                "input": {"ticket": {"id": ticket, "body": f"Something about {ticket}."}},
                "expect": {"classify.category": label},
            }
            lines.write(json.dumps(case) + "\n")
    return flow, data


def library_pass(flow: Path, data: Path, cache_file: Path, llm: Any, concurrency: int) -> Any:
    """What `runner eval --format markdown` does, without the command line: the report
    and the figures."""
    from runner.eval.cache import AnswerCache
    from runner.eval.cases import read_cases
    from runner.eval.metrics import measure
    from runner.eval.report import render
    from runner.eval.run import Evaluation
    from runner.lang.load import load_flow

    compiled = load_flow(flow)
    cases = read_cases(data, compiled.flow)
    cache = AnswerCache(cache_file)
    try:
        result = Evaluation(llm, cache=cache, concurrency=concurrency).run(
            compiled, cases, data=str(data)
        )
    finally:
        cache.close()
    figures = measure(result, 0.9)
    return render(result, figures, "markdown"), figures


def command_pass(flow: Path, data: Path, cache_file: Path, concurrency: int) -> str:
    from runner.cli.main import main

    out = io.StringIO()
    argv = ["eval", str(flow), "--data", str(data), "--cache", str(cache_file)]
    code = main([*argv, "--concurrency", str(concurrency)], out=out)
    if code != 0:
        raise SystemExit(f"runner eval exited {code}")
    return out.getvalue()


class InThisThread:
    """Stands in for the evaluation's thread pool when profiling: each case in turn, on
    the calling thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> InThisThread:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, function: Any, items: Any) -> Any:
        return map(function, items)


def profile_library_pass(flow: Path, data: Path, cache_file: Path) -> pstats.Stats:
    import runner.eval.run

    profiler = cProfile.Profile()
    with patch.object(runner.eval.run, "ThreadPoolExecutor", InThisThread):
        profiler.runcall(library_pass, flow, data, cache_file, NeverAsked(), 1)
    return pstats.Stats(profiler)


def commit(folder: Path, *files: Path) -> None:
    git = ["git", "-C", str(folder), "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", *map(str, files)], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "the flow"], check=True)


def timed(what: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    value = what()
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--git", action="store_true", help="commit the flow in a git repository")
    parser.add_argument("--profile", action="store_true", help="profile a pass, one thread")
    args = parser.parse_args()
    n = args.cases
    # A port that refuses connections: a cache miss in the command's pass fails at once
    # instead of reaching anything.
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    api_base = f"http://127.0.0.1:{refused.getsockname()[1]}/v1"
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as folder:
        sys.path.insert(0, folder)
        flow, data = write_files(Path(folder), n, api_base)
        if args.git:
            commit(Path(folder), flow, data)
        cache_file = Path(folder) / "answers.sqlite3"
        model = TableModel(make_table(n))
        fill, _ = timed(lambda: library_pass(flow, data, cache_file, model, args.concurrency))
        assert model.calls == n, model.calls
        library, (report, figures) = timed(
            lambda: library_pass(flow, data, cache_file, NeverAsked(), args.concurrency)
        )
        assert figures.totals.cached_calls == n and figures.totals.model_calls == 0
        command, out = timed(lambda: command_pass(flow, data, cache_file, args.concurrency))
        if f"| 0 | {n} |" not in out:
            raise SystemExit("the command's pass did not take every answer from the cache")
        stats = profile_library_pass(flow, data, cache_file) if args.profile else None
    refused.close()
    step = figures.steps[0]
    where = "in a git repository" if args.git else "outside git"
    print(
        f"runner eval, {n} cases, concurrency {args.concurrency}, every answer cached, "
        f"the flow {where} (target: under {TARGET_SECONDS:g} s)"
    )
    print(f"  {'pass':<52} {'seconds':>8} {'cases/s':>9}")
    rows = [
        ("filling the cache (in-process model; not measured)", fill),
        ("library: Evaluation + measure + render markdown", library),
        ("command: runner eval --format markdown", command),
    ]
    for label, seconds in rows:
        print(f"  {label:<52} {seconds:>8.2f} {n / seconds:>9.0f}")
    print(
        f"  accuracy {step.accuracy:.1%}, coverage {step.coverage:.1%}, "
        f"report {len(report.splitlines())} lines"
    )
    verdict = "within" if max(library, command) < TARGET_SECONDS else "OVER"
    print(f"  {verdict} the target")
    if stats:
        print("\nthe library pass again, one case after another on one thread:")
        stats.sort_stats("cumulative").print_stats(40)
        stats.sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
