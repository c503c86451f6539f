"""Per-run overhead of durable execution in four engines, measured in one sitting: runner,
LangGraph with its SqliteSaver (durability "sync"), DBOS (SQLite system database) and a
floor of SQLAlchemy Core doing one commit per step.

    .venv/bin/python bench/engines.py [--runs N] [--repeats R] [--disk DIR] [--no-strace]

Run bench/engines_setup.sh first: it makes bench/.venv-langgraph and bench/.venv-dbos;
runner and the floor run in this repository's .venv. The workload is the same for all:
a 5-step run, each step `n + 1`, the state checkpointed after each step. Each engine
runs in a subprocess of its own (this file, with --worker), so no two engines' imports
mix; it does N warm-up runs, then N measured runs, and prints JSON: CPU ms per run
(time.process_time: every thread of the process) and wall ms per run. The set of
engines is repeated R times, in alternating order, on tmpfs (/dev/shm) and on disk;
the table shows medians over the R repetitions.

With strace on PATH, each engine is also run twice under `strace -f -c -e
trace=fsync,fdatasync` on disk with different numbers of runs, unmeasured; the
difference of the counts over the difference of runs is its fsyncs per run (set-up
and schema creation cancel out).

Each engine keeps its own defaults for the SQLite file: runner WAL + synchronous=FULL,
LangGraph WAL (set by SqliteSaver) + sqlite3's default synchronous, DBOS the rollback
journal + default synchronous, the floor WAL + synchronous=FULL like runner.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STEPS = 5
ENGINES = ("runner", "langgraph", "dbos", "floor")
TITLES = {
    "runner": "runner",
    "langgraph": "LangGraph + SqliteSaver",
    "dbos": "DBOS",
    "floor": "SQLAlchemy Core floor",
}
PYTHONS = {
    "runner": ROOT / ".venv" / "bin" / "python",
    "langgraph": HERE / ".venv-langgraph" / "bin" / "python",
    "dbos": HERE / ".venv-dbos" / "bin" / "python",
    "floor": ROOT / ".venv" / "bin" / "python",
}

Workload = tuple[Callable[[int], None], dict[str, Any], Callable[[], None]]


# --- the workers: each runs in its engine's own interpreter ---------------------------


def sqlite_settings(execute: Callable[[str], Any], package: str) -> dict[str, Any]:
    """The journal mode and synchronous level of one SQLite connection, and the version
    of the engine's package."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        named = f"{package} {version(package)}"
    except PackageNotFoundError:  # runner runs from its source tree
        named = f"{package} (source tree)"
    return {
        "journal_mode": execute("PRAGMA journal_mode"),
        "synchronous": execute("PRAGMA synchronous"),
        "version": named,
    }


def runner_workload(folder: Path) -> Workload:
    """runner's Engine on a SqlStore file (durable: WAL, synchronous=FULL), the flow of
    bench/overhead.py: five python tool steps, a checkpoint committed after each."""
    sys.path.insert(0, str(HERE))
    from overhead import FLOW
    from overhead import STEPS as FLOW_STEPS

    from runner.lang.load import load_flow
    from runner.runtime.engine import Engine
    from runner.store.sql import SqlStore

    assert FLOW_STEPS == STEPS
    (folder / "bench_tools.py").write_text("def add(n):\n    return n + 1\n")
    (folder / "overhead.yaml").write_text(FLOW)
    sys.path.insert(0, str(folder))
    compiled = load_flow(folder / "overhead.yaml")
    store = SqlStore(f"sqlite:///{folder / 'runs.db'}", durable=True)
    engine = Engine(store)

    last: list[tuple[int, str]] = []

    def run(i: int) -> None:
        result = engine.start(compiled, {"n": i})
        assert result.status == "completed", result
        last[:] = [(i, result.run_id)]

    def close() -> None:
        """Check the last run's checkpoints (outside the timing), then let go."""
        i, run_id = last[0]
        outputs = [c.output for c in store.checkpoints(run_id)]
        assert outputs == [i + k for k in range(1, STEPS + 1)], outputs
        store.close()

    with store.engine.connect() as conn:
        info = sqlite_settings(lambda sql: conn.exec_driver_sql(sql).scalar(), "runner")
    return run, info, close


def langgraph_workload(folder: Path) -> Workload:
    """The 5-node graph of bench/langgraph_overhead.py, checkpointed by SqliteSaver,
    each invoke with durability="sync" (a step's checkpoint is written before the next
    step starts)."""
    import itertools
    import sqlite3

    sys.path.insert(0, str(HERE))
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph
    from langgraph_overhead import State, add

    graph = StateGraph(State)
    names = [f"s{i}" for i in range(1, STEPS + 1)]
    for name in names:
        graph.add_node(name, add)
    graph.add_edge(START, names[0])
    for first, second in itertools.pairwise(names):
        graph.add_edge(first, second)
    graph.add_edge(names[-1], END)
    conn = sqlite3.connect(str(folder / "lg.db"), check_same_thread=False)
    app = graph.compile(checkpointer=SqliteSaver(conn))

    def run(i: int) -> None:
        config = {"configurable": {"thread_id": f"t{i}-{time.perf_counter_ns()}"}}
        out = app.invoke({"n": i}, config, durability="sync")
        assert out["n"] == i + STEPS, out

    run(-1)  # SqliteSaver makes its tables and sets WAL on first use
    info = sqlite_settings(lambda sql: conn.execute(sql).fetchone()[0], "langgraph")
    return run, info, conn.close


def dbos_workload(folder: Path) -> Workload:
    """A DBOS workflow of five @DBOS.step calls on a SQLite system database: DBOS
    records the workflow, then each step's output as it returns."""
    from dbos import DBOS

    DBOS(
        config={
            "name": "engines-bench",
            "system_database_url": f"sqlite:///{folder / 'dbos.sqlite'}",
            "run_admin_server": False,
            "log_level": "WARNING",
        }
    )

    @DBOS.step()
    def add(n: int) -> int:
        return n + 1

    @DBOS.workflow()
    def five(n: int) -> int:
        for _ in range(STEPS):
            n = add(n)
        return n

    DBOS.launch()

    def run(i: int) -> None:
        assert five(i) == i + STEPS

    import sqlite3

    # Pragmas are per connection: a connection of our own shows the file's journal mode
    # and the library default for synchronous (DBOS sets neither).
    probe = sqlite3.connect(str(folder / "dbos.sqlite"))
    info = sqlite_settings(lambda sql: probe.execute(sql).fetchone()[0], "dbos")
    probe.close()
    return run, info, lambda: DBOS.destroy(destroy_registry=True)


def floor_workload(folder: Path) -> Workload:
    """SQLAlchemy Core on a SQLite file with runner's pragmas (WAL, synchronous=FULL):
    one INSERT of the step's output and one COMMIT per step, nothing else."""
    import uuid

    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{folder / 'floor.db'}")

    @sa.event.listens_for(engine, "connect")
    def pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA synchronous=FULL")

    meta = sa.MetaData()
    table = sa.Table(
        "checkpoints",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("output", sa.JSON, nullable=False),
    )
    meta.create_all(engine)
    insert = table.insert()

    def run(i: int) -> None:
        run_id = uuid.uuid4().hex
        n = i
        for step in range(STEPS):
            n += 1
            with engine.begin() as conn:
                conn.execute(insert, {"run_id": run_id, "step": step, "output": {"n": n}})

    with engine.connect() as conn:
        info = sqlite_settings(lambda sql: conn.exec_driver_sql(sql).scalar(), "sqlalchemy")
    return run, info, engine.dispose


WORKLOADS: dict[str, Callable[[Path], Workload]] = {
    "runner": runner_workload,
    "langgraph": langgraph_workload,
    "dbos": dbos_workload,
    "floor": floor_workload,
}


def worker(engine: str, folder: Path, warmups: int, runs: int) -> None:
    """Warm up, then time `runs` runs of `engine` in `folder`; print one JSON line."""
    run, info, close = WORKLOADS[engine](folder)
    for i in range(warmups):
        run(i)
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(runs):
        run(i)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    close()
    per_run = max(runs, 1)
    result = {"engine": engine, "cpu_ms": cpu / per_run * 1000, "wall_ms": wall / per_run * 1000}
    print(json.dumps(result | info), flush=True)


# --- the driver ------------------------------------------------------------------------


def fs_type(path: Path) -> str:
    """The type of the file system `path` lives on, from /proc/mounts."""
    best, kind = "", "?"
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            point = fields[1]
            if str(path).startswith(point) and len(point) > len(best):
                best, kind = point, fields[2]
    return kind


@contextlib.contextmanager
def scratch(parent: Path) -> Iterator[Path]:
    """A fresh folder under `parent`, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="engines-", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def launch(
    engine: str, parent: Path, warmups: int, runs: int, strace: Path | None = None
) -> dict[str, Any]:
    """One worker subprocess of `engine` in a fresh folder under `parent`; its JSON, and
    with `strace` (a file to write the summary to) the count of fsync+fdatasync calls."""
    with scratch(parent) as folder:
        command = [str(PYTHONS[engine]), str(Path(__file__).resolve()), "--worker", engine]
        command += ["--folder", str(folder), "--warmups", str(warmups), "--runs", str(runs)]
        if strace is not None:
            trace = ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", str(strace)]
            command = trace + command
        env = (os.environ | {"PYTHONPATH": str(ROOT)}) if engine == "runner" else os.environ
        done = subprocess.run(command, capture_output=True, text=True, cwd=folder, env=env)
        if done.returncode != 0:
            sys.exit(f"{engine} worker exited {done.returncode}:\n{done.stdout}{done.stderr}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if strace is not None:
        result["syncs"] = syncs_in(strace.read_text())
    return result


def syncs_in(summary: str) -> int:
    """fsync + fdatasync calls in the summary `strace -c` wrote."""
    total = 0
    for line in summary.splitlines():
        fields = line.split()
        if fields and fields[-1] in ("fsync", "fdatasync"):
            total += int(fields[3])  # % time, seconds, usecs/call, calls, [errors], name
    return total


def fsyncs_per_run(engine: str, parent: Path, runs: int) -> float:
    """fsync+fdatasync per run: two straced workers, `few` and `few + runs` runs; the
    difference cancels set-up, schema creation and first-run work."""
    few = 5
    with scratch(Path(tempfile.gettempdir())) as notes:
        small = launch(engine, parent, 0, few, strace=notes / "small.txt")["syncs"]
        large = launch(engine, parent, 0, few + runs, strace=notes / "large.txt")["syncs"]
    return (large - small) / runs


def median(results: list[dict[str, Any]], key: str) -> float:
    """The median of `key` over the repetitions."""
    return statistics.median(r[key] for r in results)


def spread(results: list[dict[str, Any]], key: str) -> str:
    """The lowest and highest `key` over the repetitions."""
    values = [r[key] for r in results]
    return f"{min(values):.2f}-{max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="warm-up and measured runs")
    parser.add_argument("--repeats", type=int, default=5, help="repetitions of the set")
    parser.add_argument("--tmpfs", type=Path, default=Path("/dev/shm"))
    parser.add_argument("--disk", type=Path, default=Path("/tmp"))
    parser.add_argument("--no-strace", action="store_true")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--warmups", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.folder, args.warmups, args.runs)
        return

    engines = [e for e in args.engines.split(",") if e]
    missing = [e for e in engines if not PYTHONS[e].exists()]
    if missing:
        sys.exit(f"no interpreter for {', '.join(missing)}: run bench/engines_setup.sh")
    media = {"tmpfs": args.tmpfs, "disk": args.disk}
    for name, place in media.items():
        print(f"{name}: {place} ({fs_type(place.resolve())})", file=sys.stderr)
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for repeat in range(args.repeats):
        order = engines if repeat % 2 == 0 else engines[::-1]
        for medium, place in media.items():
            for engine in order:
                result = launch(engine, place, args.runs, args.runs)
                results.setdefault((engine, medium), []).append(result)
                print(
                    f"[{repeat + 1}/{args.repeats}] {medium:5} {engine:9} "
                    f"cpu {result['cpu_ms']:7.2f} ms  wall {result['wall_ms']:7.2f} ms",
                    file=sys.stderr,
                )
    strace = shutil.which("strace") and not args.no_strace
    syncs = {e: fsyncs_per_run(e, args.disk, args.runs) for e in engines} if strace else {}

    print(
        f"\n{STEPS} steps per run, each `n + 1`, state checkpointed after each step; "
        f"{args.runs} warm-up + {args.runs} measured runs per subprocess, medians over "
        f"{args.repeats} interleaved repetitions.\n"
    )
    print("| | " + " | ".join(TITLES[e] for e in engines) + " |")
    print("|---" * (len(engines) + 1) + "|")
    rows = [
        ("CPU ms per run (tmpfs)", "tmpfs", "cpu_ms"),
        ("ms per run (disk)", "disk", "wall_ms"),
        ("ms per run (tmpfs)", "tmpfs", "wall_ms"),
        ("CPU ms per run (disk)", "disk", "cpu_ms"),
    ]
    for label, medium, key in rows:
        cells = [f"{median(results[e, medium], key):.2f}" for e in engines]
        print(f"| {label} | " + " | ".join(cells) + " |")
    if syncs:
        print("| fsyncs per run | " + " | ".join(f"{syncs[e]:.1f}" for e in engines) + " |")
    settings = [
        f"{results[e, 'disk'][0]['journal_mode']}/sync={results[e, 'disk'][0]['synchronous']}"
        for e in engines
    ]
    print("| SQLite journal/synchronous | " + " | ".join(settings) + " |")
    versions = [results[e, "disk"][0]["version"] for e in engines]
    print("| version | " + " | ".join(versions) + " |")
    print("\nRange over the repetitions (min-max):\n")
    print("| | " + " | ".join(TITLES[e] for e in engines) + " |")
    print("|---" * (len(engines) + 1) + "|")
    for label, medium, key in rows[:2]:
        cells = [spread(results[e, medium], key) for e in engines]
        print(f"| {label} | " + " | ".join(cells) + " |")
    if "runner" in engines and "langgraph" in engines:
        ratio = median(results["runner", "tmpfs"], "cpu_ms") / median(
            results["langgraph", "tmpfs"], "cpu_ms"
        )
        print(f"\nCPU per run on tmpfs, runner / LangGraph: {ratio:.2f}")
    if not syncs:
        print("fsyncs not counted: strace not found (or --no-strace)")


if __name__ == "__main__":
    main()
