"""Engine overhead per step: a 5-step flow of python tools that do no I/O, each step
checkpointed durably (SQLite file, WAL, synchronous=FULL) before the next one starts.

    python bench/overhead.py [--runs N]

Prints ms per step, runs per second and peak memory. With --langgraph it also runs the
same 5-node graph with LangGraph's SQLite checkpointer from bench/.venv-langgraph (made
by bench/langgraph_setup.sh; never a dependency of runner) and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
FLOW = """\
version: 1
name: overhead
tools:
  add: {python: "bench_tools:add"}
steps:
  - {id: s1, tool: add, args: {n: "{{ input.n }}"}}
  - {id: s2, tool: add, args: {n: "{{ steps.s1.output }}"}}
  - {id: s3, tool: add, args: {n: "{{ steps.s2.output }}"}}
  - {id: s4, tool: add, args: {n: "{{ steps.s3.output }}"}}
  - {id: s5, tool: add, args: {n: "{{ steps.s4.output }}"}}
on_error: dead_letter
"""
STEPS = 5


def bench_fsync(commits: int, folder: Path) -> float:
    """ms per bare sqlite3 commit (WAL, synchronous=FULL) on the same disk: the floor
    under any durable checkpoint."""
    import sqlite3

    db = sqlite3.connect(folder / "floor.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data TEXT)")
    started = time.perf_counter()
    for i in range(commits):
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t (data) VALUES (?)", (str(i) * 20,))
        db.execute("COMMIT")
    db.close()
    return (time.perf_counter() - started) / commits * 1000


def bench_runner(
    runs: int, folder: Path, durable: bool = True, url: str | None = None
) -> dict[str, float]:
    from runner.lang.load import load_flow
    from runner.runtime.engine import Engine
    from runner.store.sql import SqlStore

    (folder / "bench_tools.py").write_text("def add(n):\n    return n + 1\n")
    (folder / "overhead.yaml").write_text(FLOW)
    compiled = load_flow(folder / "overhead.yaml")
    store = SqlStore(url or f"sqlite:///{folder / 'runs.db'}", durable=durable)
    engine = Engine(store)
    for i in range(20):  # warm up: imports, caches, the database file
        engine.start(compiled, {"n": i})
    started = time.perf_counter()
    for i in range(runs):
        result = engine.start(compiled, {"n": i})
        assert result.status == "completed", result
    seconds = time.perf_counter() - started
    tracemalloc.start()  # memory in a pass of its own: tracing slows everything down
    for i in range(runs // 4):
        engine.start(compiled, {"n": i})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    last = store.checkpoints(result.run_id)
    assert [c.output for c in last] == [runs - 1 + k for k in range(1, STEPS + 1)]
    return {
        "ms_per_step": seconds / (runs * STEPS) * 1000,
        "runs_per_second": runs / seconds,
        "traced_peak_mib": peak / 2**20,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def bench_langgraph(runs: int) -> dict[str, float] | None:
    python = HERE / ".venv-langgraph" / "bin" / "python"
    if not python.exists():
        return None
    done = subprocess.run(
        [str(python), str(HERE / "langgraph_overhead.py"), str(runs)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--langgraph", action="store_true")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="synchronous=NORMAL: survives a process crash, not power loss",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        sys.path.insert(0, folder)
        ours = bench_runner(args.runs, Path(folder), durable=not args.fast)
        memory = bench_runner(args.runs, Path(folder), url="sqlite://")
        floor = bench_fsync(args.runs, Path(folder))
    sync = "synchronous=NORMAL" if args.fast else "synchronous=FULL"
    print(
        f"runner    {args.runs} runs x {STEPS} steps, SQLite file ({sync}), "
        "a checkpoint committed per step"
    )
    print(
        f"  {ours['ms_per_step']:.3f} ms per step, {ours['runs_per_second']:.1f} runs/s, "
        f"peak traced memory {ours['traced_peak_mib']:.2f} MiB, "
        f"max RSS {ours['max_rss_mib']:.0f} MiB"
    )
    print(
        f"  same runs on an in-memory database (no disk): {memory['ms_per_step']:.3f} ms per step"
    )
    print(f"  a bare sqlite3 commit with synchronous=FULL on this disk: {floor:.3f} ms")
    if args.langgraph:
        theirs = bench_langgraph(args.runs)
        if theirs is None:
            print("langgraph not installed: run bench/langgraph_setup.sh first")
            return
        print(f"langgraph {args.runs} runs x {STEPS} nodes, SqliteSaver checkpoint per step")
        print(f"  {theirs['ms_per_step']:.3f} ms per step, {theirs['runs_per_second']:.1f} runs/s")
        print(
            f"ratio: runner takes {ours['ms_per_step'] / theirs['ms_per_step']:.2f}x "
            "the time per step of langgraph"
        )


if __name__ == "__main__":
    main()
