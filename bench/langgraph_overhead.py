"""The LangGraph side of bench/overhead.py: the same 5 steps of `n + 1`, each checkpointed
by LangGraph's SqliteSaver to a file database. Prints JSON. Runs in bench/.venv-langgraph."""

from __future__ import annotations

import itertools
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import TypedDict

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph

STEPS = 5


class State(TypedDict):
    n: int


def add(state: State) -> State:
    return {"n": state["n"] + 1}


def main() -> None:
    runs = int(sys.argv[1])
    graph = StateGraph(State)
    names = [f"s{i}" for i in range(1, STEPS + 1)]
    for name in names:
        graph.add_node(name, add)
    graph.add_edge(START, names[0])
    for first, second in itertools.pairwise(names):
        graph.add_edge(first, second)
    graph.add_edge(names[-1], END)
    with tempfile.TemporaryDirectory() as folder:
        conn = sqlite3.connect(str(Path(folder) / "lg.db"), check_same_thread=False)
        app = graph.compile(checkpointer=SqliteSaver(conn))
        for i in range(20):
            app.invoke({"n": i}, {"configurable": {"thread_id": f"warm-{i}"}})
        started = time.perf_counter()
        for i in range(runs):
            out = app.invoke({"n": i}, {"configurable": {"thread_id": str(i)}})
            assert out["n"] == i + STEPS
        seconds = time.perf_counter() - started
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    print(
        json.dumps(
            {
                "ms_per_step": seconds / (runs * STEPS) * 1000,
                "runs_per_second": runs / seconds,
                "synchronous": sync,
                "journal_mode": journal,
            }
        )
    )


if __name__ == "__main__":
    main()
