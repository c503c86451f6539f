"""`runner run --inputs --concurrency N` against an OpenAI-compatible model on 127.0.0.1:
the batch time against the ideal, and runner's CPU per model call.

The flow has two `llm` steps; bench/openai_stub.py answers every call after
`--latency-ms` (200). Ideal = ceil(runs / concurrency) x 2 x latency. Each case runs
`--rounds` times (a fresh SQLite store on disk each time) and the table gives the
medians: the batch's own time (what `runner run` prints), the ratio to the ideal, and
the process's CPU (user + system, start-up included) per model call.

    .venv/bin/python bench/batch.py [--cases 200x50,1000x200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fleet import FLOW  # noqa: E402 - the same two-step flow as the fleet bench


def start_stub(latency_ms: int) -> tuple[subprocess.Popen[str], str]:
    stub = subprocess.Popen(
        [sys.executable, str(HERE / "openai_stub.py"), "--latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = stub.stdout.readline() if stub.stdout else ""
    found = re.search(r"(http://\S+)", line)
    if not found:
        stub.kill()
        raise SystemExit(f"the model stub did not start: {line!r}")
    return stub, found.group(1) + "/v1"


def one_batch(folder: Path, runs: int, concurrency: int) -> tuple[float, float]:
    """(the batch's seconds as runner reports them, the process's CPU seconds)."""
    inputs = folder / f"in{runs}.jsonl"
    inputs.write_text("".join(json.dumps({"n": n}) + "\n" for n in range(runs)))
    db = folder / f"runs-{time.monotonic_ns()}.db"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "-m", "runner", "run", str(folder / "flow.yaml"), "--inputs",
         str(inputs), "--concurrency", str(concurrency), "--db", f"sqlite:///{db}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    seconds = re.search(r"\((\d+(?:\.\d+)?) s\)$", summary)
    if done.returncode != 0 or f"{runs} completed" not in summary or not seconds:
        raise SystemExit(f"the batch failed ({done.returncode}): {summary}\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(seconds.group(1)), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="200x50,1000x200", help="RUNSxCONCURRENCY,...")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-ms", type=int, default=200)
    args = parser.parse_args()
    cases = [tuple(int(x) for x in case.split("x")) for case in args.cases.split(",")]
    stub, api_base = start_stub(args.latency_ms)
    results: dict[tuple[int, ...], list[tuple[float, float]]] = {case: [] for case in cases}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "flow.yaml").write_text(FLOW.format(api_base=api_base))
            for _ in range(args.rounds):  # interleaved: each round runs every case once
                for case in cases:
                    results[case].append(one_batch(folder, *case))
    finally:
        stub.terminate()
    report(results, args.latency_ms / 1000)


def report(results: dict[tuple[int, ...], list[tuple[float, float]]], latency: float) -> None:
    print(f"load average at the end: {os.getloadavg()[0]:.2f}\n")
    print("| runs x concurrency | ideal s | batch s (median; all) | ratio | CPU ms per call |")
    print("| --- | --- | --- | --- | --- |")
    for (runs, concurrency), rounds in results.items():
        ideal = math.ceil(runs / concurrency) * 2 * latency
        batch = statistics.median(b for b, _ in rounds)
        cpu = statistics.median(c for _, c in rounds) * 1000 / (2 * runs)
        every = ", ".join(f"{b:.1f}" for b, _ in rounds)
        print(f"| {runs} x {concurrency} | {ideal:.1f} | {batch:.2f} ({every}) "
              f"| {batch / ideal:.2f} | {cpu:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
