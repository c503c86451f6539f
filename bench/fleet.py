"""runner as a fleet on PostgreSQL: `runner submit` queues a batch of runs of a flow of
two model calls, `runner worker` processes drive them, against a fake OpenAI-compatible
model (bench/openai_stub.py, its own process) that answers every call after exactly
`--latency-ms`.

    .venv/bin/python bench/fleet.py [--runs 2000] [--workers 4] [--concurrency 50]
        [--latency-ms 200] [--db-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
        [--keep-db] [--no-statements] [--json]

It makes a fresh database (dropped at the end unless --keep-db), times `runner submit
FLOW --inputs runs.jsonl`, then starts the workers (`--poll 0.2`), waits until no run is
queued or running (polling the database every 0.1 s), samples each worker's CPU from
/proc just before SIGTERM, and stops everything. From the store it reads: the batch
time, first claim (the first `run_resumed` event) to the last run's `updated_at`, against
the ideal runs / (workers x concurrency) x 2 x latency; per run, claim -> completion and
submission -> completion; per step, the model step's own time (its checkpoint's
started_at -> finished_at). The steady state leaves out start-up (imports, the first
model call) and the tail: the time from 10% to 90% of the runs completed, against the
ideal share of 80% of the runs (a fair figure only when there are many waves of runs,
runs >> workers x concurrency).

PostgreSQL work per step comes from pg_stat_database deltas of the bench database
(transactions committed + rolled back, tuples inserted/updated, sessions opened, time
spent executing statements or idle inside a transaction), with this script's own
polling subtracted. Statements are counted from the server log: the bench database gets
`log_statement = all` (sessions of that database only) and the lines of the log tagged
with its name are counted and sorted by kind (BEGIN, SELECT runs, `;` for SQLAlchemy's
pre-ping, ...). A statement is a round trip, except that psycopg pipelines the rows of
one executemany (several `INSERT events` go in one). That needs the log readable here
(`--pg-log`, else pg_current_logfile() or Debian's layout), and one log file for the whole
batch (with logging_collector, set log_rotation_size = 0); `--no-statements` leaves
logging off. pg_stat_statements is not used: it needs shared_preload_libraries, i.e. a
server restart.

Each worker may hold up to concurrency + 15 connections (its pool and one LISTEN), so the
server's max_connections must exceed workers x (concurrency + 15) plus what else uses it;
the table gives the most sessions seen at once, and the workers' notices show any
"too many clients".

Progress goes to stderr; a Markdown table (or JSON with --json) to stdout. If the runs
are not done within --timeout seconds, it prints what it saw (status counts, top, each
process's CPU, the backends' wait events, the workers' last notices) and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUNNER = ROOT / ".venv" / "bin" / "runner"
STEPS = 2
TICK = os.sysconf("SC_CLK_TCK")
FLOW = """\
version: 1
name: fleet_bench
models:
  default: {{model: openai/stub, api_base: "{api_base}", temperature: 0, max_tokens: 16}}
steps:
  - id: ask
    llm:
      prompt: "Say hello to run {{{{ input.n }}}}."
  - id: answer
    llm:
      prompt: "Reply to: {{{{ steps.ask.output }}}}"
on_error: dead_letter
"""
POLL = "SELECT status, count(*) FROM runs"  # this script's, left out of the counts
STATS = (
    "xact_commit",
    "xact_rollback",
    "tup_inserted",
    "tup_updated",
    "tup_deleted",
    "sessions",
    "active_time",
    "idle_in_transaction_time",
)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of process `pid` (0.0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of stat(5)


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def quantile(values: list[float], q: float) -> float:
    """The nearest-rank `q` quantile of `values` (NaN when empty)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# --- the fake model -------------------------------------------------------------------


class Stub:
    """bench/openai_stub.py in a process of its own."""

    def __init__(self, latency_ms: float) -> None:
        command = [sys.executable, str(HERE / "openai_stub.py"), "--latency-ms", str(latency_ms)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("listening on "):
            sys.exit(f"the model stub did not start: {line!r}")
        self.url = line.split()[-1]

    def stats(self) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(f"{self.url}/stats", timeout=5) as answer:
            stats: dict[str, Any] = json.load(answer)
        return stats | {"cpu_s": cpu_seconds(self.process.pid)}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


# --- the database ---------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(admin: sa.Engine, keep: bool) -> Iterator[tuple[str, str]]:
    """A new database with a random name: (its name, its URL); dropped afterwards."""
    name = f"runner_fleet_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        yield name, url
    finally:
        if keep:
            say(f"kept database {name}: {url}")
        else:
            drop(admin, name)


def drop(admin: sa.Engine, name: str) -> None:
    """Drop database `name`, trying again for a while if the server is restarting."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except sa.exc.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def settled_stats(admin: sa.Engine, name: str) -> dict[str, float]:
    """pg_stat_database's counters of `name` once no session of it is left and they
    stopped moving (a backend hands its counts in as it exits)."""
    columns = ", ".join(f"coalesce({c}, 0) AS {c}" for c in STATS)
    query = sa.text(f"SELECT numbackends, {columns} FROM pg_stat_database WHERE datname = :n")
    last: dict[str, float] = {}
    deadline = time.monotonic() + 15
    with admin.connect() as conn:
        while time.monotonic() < deadline:
            row = dict(conn.execute(query, {"n": name}).one()._mapping)
            if row.pop("numbackends") == 0 and row == last:
                break
            last = row
            time.sleep(0.05)
    return {k: float(v) for k, v in last.items()}


def setting(admin: sa.Engine, name: str) -> str:
    with admin.connect() as conn:
        return str(conn.exec_driver_sql(f"SHOW {name}").scalar())


def server_started(admin: sa.Engine) -> Any:
    """When the server last started (a restart mid-batch disturbs every figure)."""
    with admin.connect() as conn:
        return conn.exec_driver_sql("SELECT pg_postmaster_start_time()").scalar()


def logging_to(admin: sa.Engine, name: str, url: str, log: Path) -> Path | None:
    """Turn on `log_statement = all` for database `name`; `log` if a statement sent
    there then shows in it (else it is not this server's log, and logging goes off)."""
    marker = f"SELECT 'fleet bench {secrets.token_hex(4)}'"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"ALTER DATABASE \"{name}\" SET log_statement = 'all'")
    start = log.stat().st_size
    probe = sa.create_engine(url, poolclass=sa.NullPool)
    with probe.connect() as conn:
        conn.exec_driver_sql(marker)
    probe.dispose()
    with log.open("rb") as file:
        file.seek(start)
        if marker.encode() in file.read():
            return log
    say(f"{log} is not this server's log: statements are not counted")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{name}" RESET log_statement')
    return None


def server_log(admin: sa.Engine, given: Path | None) -> Path | None:
    """The server's log file, if this process can read it."""
    if given is None:
        with admin.connect() as conn:
            current = conn.exec_driver_sql("SELECT pg_current_logfile()").scalar()
            version = conn.exec_driver_sql("SHOW server_version_num").scalar()
            folder = conn.exec_driver_sql("SHOW data_directory").scalar()
        debian = Path(f"/var/log/postgresql/postgresql-{int(str(version)) // 10000}-main.log")
        given = Path(str(folder), str(current)) if current else debian
    return given if os.access(given, os.R_OK) else None


LOGGED = re.compile(r"\] \S*@(\S+) LOG:  (?:statement|execute [^:]*): (.*)")
TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE)\s+\"?(\w+)", re.IGNORECASE)


def statements(log: Path, start: int, end: int, name: str) -> Counter[str]:
    """Statements the sessions of database `name` sent, by kind, from the server log
    between byte offsets `start` and `end`, leaving out this script's polls."""
    with log.open("rb") as file:
        file.seek(start)
        text = file.read(end - start).decode(errors="replace")
    kinds: Counter[str] = Counter()
    entry: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("\t") and entry:  # a statement's next line
            entry.append(line)
            continue
        if entry and not entry[0].startswith(POLL):
            kinds[statement_kind(" ".join(entry))] += 1
        found = LOGGED.search(line)
        entry = [found[2]] if found and found[1] == name else []
    return kinds


def statement_kind(sql: str) -> str:
    """`BEGIN`, `SELECT runs`, `UPDATE runs`, `SELECT 1`: the verb and first table."""
    words = sql.split()
    table = TABLE.search(sql)
    if table and words[0].upper() in ("SELECT", "INSERT", "UPDATE", "DELETE"):
        return f"{words[0].upper()} {table[1]}"
    return " ".join(words[:3])[:40]


# --- the fleet ------------------------------------------------------------------------


@dataclass
class Watch:
    """What the bench sees while the workers run: CPU per worker, the database's
    backends (CPU, states and wait events sampled), polls of its own."""

    pids: list[int]
    worker_cpu: dict[int, float] = field(default_factory=dict)
    backend_cpu: dict[int, float] = field(default_factory=dict)
    backend_states: Counter[str] = field(default_factory=Counter)
    peak_sessions: int = 0
    polls: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    progress: list[tuple[int, float]] = field(default_factory=list)  # (completed, CPU s)

    def sample_workers(self) -> None:
        for pid in self.pids:
            self.worker_cpu[pid] = max(self.worker_cpu.get(pid, 0.0), cpu_seconds(pid))
        completed = self.statuses.get("completed", 0)
        self.progress.append((completed, sum(self.worker_cpu.values())))

    def cpu_per_call(self, runs: int) -> float:
        """Workers' CPU ms per model call from 10% to 90% of the runs completed (start-up
        and imports left out)."""
        low = next((p for p in self.progress if p[0] >= 0.1 * runs), self.progress[-1])
        high = next((p for p in self.progress if p[0] >= 0.9 * runs), self.progress[-1])
        return (high[1] - low[1]) / max((high[0] - low[0]) * STEPS, 1) * 1000

    def sample_backends(self, admin: sa.Connection, name: str) -> None:
        query = sa.text(
            "SELECT pid, state, wait_event_type, wait_event FROM pg_stat_activity "
            "WHERE datname = :n AND pid <> pg_backend_pid()"
        )
        sessions = admin.execute(query, {"n": name}).all()
        self.peak_sessions = max(self.peak_sessions, len(sessions))
        for pid, state, wait_type, wait in sessions:
            self.backend_cpu[pid] = max(self.backend_cpu.get(pid, 0.0), cpu_seconds(pid))
            waiting = f" waiting {wait_type}:{wait}" if wait_type and state == "active" else ""
            self.backend_states[f"{state}{waiting}"] += 1


def start_workers(
    args: argparse.Namespace, url: str, folder: Path
) -> list[subprocess.Popen[bytes]]:
    """`runner worker` processes, each writing to workerN.out and workerN.err."""
    command = [str(RUNNER), "worker", "--db", url, "--concurrency", str(args.concurrency)]
    command += ["--poll", "0.2"]
    workers = []
    for i in range(args.workers):
        with (
            (folder / f"worker{i}.out").open("w") as out,
            (folder / f"worker{i}.err").open("w") as err,
        ):
            workers.append(subprocess.Popen(command, stdout=out, stderr=err, cwd=folder))
    return workers


def wait_for_runs(
    args: argparse.Namespace,
    store: sa.Connection,
    admin: sa.Connection,
    name: str,
    workers: list[subprocess.Popen[bytes]],
) -> tuple[Watch, bool]:
    """Poll until no run is queued or running, a worker died, or --timeout: what was
    seen, and whether every run ended."""
    watch = Watch([w.pid for w in workers])
    count = sa.text(f"{POLL} GROUP BY status")
    started = time.monotonic()
    said = started
    while time.monotonic() - started < args.timeout:
        try:
            watch.statuses = {status: n for status, n in store.execute(count)}
            watch.polls += 1
            if watch.polls % 3 == 0:
                watch.sample_backends(admin, name)
        except sa.exc.OperationalError as exc:  # the server restarted: connect again
            say(f"  cannot poll: {str(exc.orig).strip()}")
            store.rollback()
            admin.rollback()
        watch.sample_workers()
        if not watch.statuses.get("queued") and not watch.statuses.get("running"):
            return watch, True
        if any(w.poll() is not None for w in workers):
            say("a worker exited before the runs were done")
            return watch, False
        if time.monotonic() - said >= 2:
            said = time.monotonic()
            cpu = sum(watch.worker_cpu.values())
            say(f"  {said - started:5.1f} s: {watch.statuses}, workers' CPU {cpu:.1f} s")
        time.sleep(0.1)
    return watch, False


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        with contextlib.suppress(ProcessLookupError):
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def diagnose(watch: Watch, folder: Path, workers: list[subprocess.Popen[bytes]]) -> None:
    """What a stuck or slow fleet was doing, to stderr."""
    say(f"\nnot done: {watch.statuses}; load {os.getloadavg()}")
    top = subprocess.run(["top", "-b", "-n1"], capture_output=True, text=True).stdout
    say("\n".join(top.splitlines()[:25]))
    for worker in workers:
        say(f"worker {worker.pid}: CPU {cpu_seconds(worker.pid):.1f} s, exit {worker.poll()}")
    say(f"backends (state, wait event: samples): {dict(watch.backend_states.most_common(12))}")
    for err in sorted(folder.glob("worker*.err")):
        say(f"--- {err.name} (last 15 lines)")
        say("\n".join(err.read_text(errors="replace").splitlines()[-15:]))


# --- the store's account of the batch -------------------------------------------------


def timings(store: sa.Connection) -> dict[str, Any]:
    """Batch, run and step times from the store."""
    runs = store.execute(
        sa.text(
            "SELECT r.id, r.status, r.created_at, r.updated_at, min(e.at) AS claimed, "
            "count(e.id) AS claims FROM runs r LEFT JOIN events e ON e.run_id = r.id "
            "AND e.kind = 'run_resumed' GROUP BY r.id"
        )
    ).all()
    steps = store.execute(sa.text("SELECT run_id, started_at, finished_at FROM checkpoints")).all()
    done = [r for r in runs if r.status == "completed"]
    step_s: dict[str, float] = defaultdict(float)
    for s in steps:
        step_s[s.run_id] += (s.finished_at - s.started_at).total_seconds()
    first = min(r.claimed for r in runs if r.claimed is not None)
    ends = sorted(r.updated_at for r in done)
    return {
        "first_claim": first,
        "last_done": ends[-1] if ends else None,
        "ends": ends,
        "completed": len(done),
        "statuses": dict(Counter(r.status for r in runs)),
        "claimed_twice": sum(1 for r in runs if r.claims > 1),
        "claim_to_done": [(r.updated_at - r.claimed).total_seconds() for r in done],
        "submit_to_done": [(r.updated_at - r.created_at).total_seconds() for r in done],
        "between_steps": [(r.updated_at - r.claimed).total_seconds() - step_s[r.id] for r in done],
        "step_s": [(s.finished_at - s.started_at).total_seconds() for s in steps],
        "first_answer": min(s.finished_at for s in steps) - first if steps else None,
        "submit_span": (
            max(r.created_at for r in runs) - min(r.created_at for r in runs)
        ).total_seconds(),
        "checkpoints": len(steps),
    }


# --- one measurement ------------------------------------------------------------------


def submit(args: argparse.Namespace, url: str, folder: Path, api_base: str) -> dict[str, float]:
    """Write the flow and the inputs, run `runner submit`; its wall and CPU seconds."""
    flow = folder / "fleet.yaml"
    flow.write_text(FLOW.format(api_base=f"{api_base}/v1"))
    inputs = folder / "runs.jsonl"
    inputs.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(args.runs)))
    before = os.times()
    wall = time.perf_counter()
    done = subprocess.run(
        [str(RUNNER), "submit", str(flow), "--inputs", str(inputs), "--db", url],
        capture_output=True,
        text=True,
        cwd=folder,
    )
    wall = time.perf_counter() - wall
    after = os.times()
    if done.returncode != 0:
        sys.exit(f"runner submit exited {done.returncode}:\n{done.stderr[-3000:]}")
    cpu = after.children_user + after.children_system
    return {"wall_s": wall, "cpu_s": cpu - before.children_user - before.children_system}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    admin = sa.create_engine(args.db_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    log = None if args.no_statements else server_log(admin, args.pg_log)
    if not args.no_statements and log is None:
        say("the server log is not readable here: statements are not counted")
    stub = Stub(args.latency_ms)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="fleet-") as tmp,
            fresh_database(admin, args.keep_db) as (name, url),
        ):
            return run_batch(args, admin, name, url, Path(tmp), stub, log)
    finally:
        stub.stop()


def run_batch(
    args: argparse.Namespace,
    admin: sa.Engine,
    name: str,
    url: str,
    folder: Path,
    stub: Stub,
    log: Path | None,
) -> dict[str, Any]:
    booted = server_started(admin)
    log = log and logging_to(admin, name, url, log)
    stats = [settled_stats(admin, name)]
    marks = [log.stat().st_size] if log else []
    say(f"database {name}; model stub {stub.url}; submitting {args.runs} runs")
    submitted = submit(args, url, folder, stub.url)
    say(f"submitted in {submitted['wall_s']:.2f} s")
    stats.append(settled_stats(admin, name))
    marks += [log.stat().st_size] if log else []
    fleet = run_fleet(args, admin, name, url, folder)
    stats.append(settled_stats(admin, name))
    marks += [log.stat().st_size] if log else []
    counted = {}
    if log and server_log(admin, args.pg_log) != log:
        say(f"the server started a new log file after {log}: statements are not counted")
    elif log:
        counted = {
            "submit": statements(log, marks[0], marks[1], name),
            "batch": statements(log, marks[1], marks[2], name),
        }
    with sa.create_engine(url, poolclass=sa.NullPool).connect() as store:
        times = timings(store)
    if not times["completed"]:
        sys.exit(f"no run completed: {times['statuses']}")
    return fleet | {
        "args": vars(args) | {"pg_log": str(log) if log else None},
        "submit": submitted,
        "stats": [{k: stats[i + 1][k] - stats[i][k] for k in STATS} for i in range(2)],
        "statements": counted,
        "times": times,
        "stub": stub.stats(),
        "restarted": server_started(admin) != booted,
        "max_connections": setting(admin, "max_connections"),
    }


def run_fleet(
    args: argparse.Namespace, admin: sa.Engine, name: str, url: str, folder: Path
) -> dict[str, Any]:
    """Start the workers, watch them until every run ended, stop them: what was seen.
    Exits after a diagnosis if the runs do not end in time."""
    busy, load, launched = machine_ticks(), os.getloadavg(), datetime.now(UTC)
    workers = start_workers(args, url, folder)
    polling = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with polling.connect() as store, admin.connect() as watcher:
            watch, finished = wait_for_runs(args, store, watcher, name, workers)
        watch.sample_workers()  # the last figures before SIGTERM
        spent = [b - a for a, b in zip(busy, machine_ticks(), strict=True)]
        if not finished:
            diagnose(watch, folder, workers)
            sys.exit(1)
    finally:
        stop_workers(workers)
        polling.dispose()
    return {
        "watch": watch,
        "launched": launched,
        "machine_busy": spent[0] / spent[1],
        "load": (load, os.getloadavg()),
        "notices": worker_notices(folder),
    }


def worker_notices(folder: Path) -> list[str]:
    """The workers' notices other than a run's end, each once with its count."""
    seen: Counter[str] = Counter()
    for err in sorted(folder.glob("worker*.err")):
        for line in err.read_text(errors="replace").splitlines():
            if not re.match(r"runner: run \S+ completed$", line):
                seen[re.sub(r"run \S+ ", "run ID ", line)[:400]] += 1
    return [f"{n} x {line}" for line, n in seen.most_common(8)]


# --- the report -----------------------------------------------------------------------


def report(raw: dict[str, Any]) -> dict[str, Any]:
    """The figures of one measurement, flat, for the table and --json."""
    args, times, watch = raw["args"], raw["times"], raw["watch"]
    delta, steps, calls = raw["stats"][1], times["checkpoints"], raw["stub"]["requests"]
    ideal = (
        args["runs"] / (args["workers"] * args["concurrency"]) * STEPS * args["latency_ms"] / 1000
    )
    batch = (times["last_done"] - times["first_claim"]).total_seconds()
    ends, n = times["ends"], len(times["ends"])
    steady = (ends[int(0.9 * n) - 1] - ends[int(0.1 * n)]).total_seconds()
    steady_ideal = ideal * (int(0.9 * n) - 1 - int(0.1 * n)) / n
    own = watch.polls  # this script's polls, each a transaction of its own
    worker_cpu = sum(watch.worker_cpu.values())
    per_step = {k: delta[k] / steps for k in ("tup_inserted", "tup_updated", "tup_deleted")}
    return {
        "runs": args["runs"],
        "completed": times["completed"],
        "statuses": times["statuses"],
        "claimed_twice": times["claimed_twice"],
        "workers": args["workers"],
        "concurrency": args["concurrency"],
        "latency_ms": args["latency_ms"],
        "submit_wall_s": raw["submit"]["wall_s"],
        "submit_cpu_s": raw["submit"]["cpu_s"],
        "submissions_per_s": args["runs"] / raw["submit"]["wall_s"],
        "submissions_per_s_in_store": args["runs"] / max(times["submit_span"], 1e-9),
        "submit_transactions_per_run": (
            raw["stats"][0]["xact_commit"] + raw["stats"][0]["xact_rollback"]
        )
        / args["runs"],
        "submit_statements_per_run": _total(raw["statements"].get("submit")) / args["runs"],
        "batch_s": batch,
        "ideal_s": ideal,
        "ratio": ideal / batch,
        "wall_from_workers_start_s": (times["last_done"] - raw["launched"]).total_seconds(),
        "steady_10_90_s": steady,
        "steady_ideal_s": steady_ideal,
        "steady_ratio": steady_ideal / steady,
        "first_answer_after_claim_s": times["first_answer"].total_seconds(),
        "claim_to_done_p50_s": quantile(times["claim_to_done"], 0.5),
        "claim_to_done_p99_s": quantile(times["claim_to_done"], 0.99),
        "submit_to_done_p50_s": quantile(times["submit_to_done"], 0.5),
        "submit_to_done_p99_s": quantile(times["submit_to_done"], 0.99),
        "model_step_p50_ms": quantile(times["step_s"], 0.5) * 1000,
        "model_step_p99_ms": quantile(times["step_s"], 0.99) * 1000,
        "outside_steps_per_run_p50_ms": quantile(times["between_steps"], 0.5) * 1000,
        "outside_steps_per_run_p99_ms": quantile(times["between_steps"], 0.99) * 1000,
        "steps": steps,
        "model_calls": calls,
        "worker_cpu_s": worker_cpu,
        "worker_cpu_ms_per_call": worker_cpu / max(calls, 1) * 1000,
        "steady_worker_cpu_ms_per_call": watch.cpu_per_call(args["runs"]),
        "stub_cpu_s": raw["stub"]["cpu_s"],
        "stub_peak_in_flight": raw["stub"]["peak_in_flight"],
        "stub_p50_ms": raw["stub"]["server_p50_ms"],
        "stub_max_ms": raw["stub"]["server_max_ms"],
        "postgres_cpu_s_sampled": sum(watch.backend_cpu.values()),
        "postgres_sessions": delta["sessions"] - 1,
        "postgres_peak_sessions": watch.peak_sessions,
        "max_connections": raw["max_connections"],
        "transactions_per_step": (delta["xact_commit"] + delta["xact_rollback"] - own) / steps,
        "rollbacks_per_step": delta["xact_rollback"] / steps,
        "statements_per_step": _total(raw["statements"].get("batch")) / steps or float("nan"),
        "statement_kinds_per_step": {
            k: v / steps for k, v in raw["statements"].get("batch", Counter()).items()
        },
        **{f"{k}_per_step": v for k, v in per_step.items()},
        "pg_active_ms_per_step": delta["active_time"] / steps,
        "pg_idle_in_transaction_ms_per_step": delta["idle_in_transaction_time"] / steps,
        "backend_samples": dict(watch.backend_states.most_common(8)),
        "machine_busy": raw["machine_busy"],
        "load_before": raw["load"][0],
        "load_after": raw["load"][1],
        "worker_notices": raw["notices"],
        "postgres_restarted": raw["restarted"],
        "pg_log": args["pg_log"],
    }


def _total(kinds: Counter[str] | None) -> int:
    return sum(kinds.values()) if kinds else 0


ROWS = [  # label, str.format of the figures
    (
        "runs completed / submitted (claimed more than once)",
        "{completed} / {runs} ({claimed_twice})",
    ),
    ("fleet", "{workers} workers x {concurrency}, model {latency_ms:g} ms"),
    ("submit: wall s (runs/s)", "{submit_wall_s:.2f} ({submissions_per_s:.0f})"),
    ("submit: runs/s in the store (first to last created_at)", "{submissions_per_s_in_store:.0f}"),
    (
        "submit: transactions, statements per run",
        "{submit_transactions_per_run:.2f}, {submit_statements_per_run:.1f}",
    ),
    ("**batch s** (first claim -> last completion)", "**{batch_s:.2f}**"),
    ("ideal s", "{ideal_s:.2f}"),
    ("**throughput ratio** (ideal / batch; target >= 0.80)", "**{ratio:.2f}**"),
    ("wall s from starting the workers to the last completion", "{wall_from_workers_start_s:.2f}"),
    ("first model answer after the first claim, s", "{first_answer_after_claim_s:.2f}"),
    (
        "steady state: 10% -> 90% of completions, s (ideal, ratio)",
        "{steady_10_90_s:.2f} ({steady_ideal_s:.2f}, {steady_ratio:.2f})",
    ),
    (
        "run claim -> completion p50 / p99 s",
        "{claim_to_done_p50_s:.2f} / {claim_to_done_p99_s:.2f}",
    ),
    (
        "run submission -> completion p50 / p99 s",
        "{submit_to_done_p50_s:.2f} / {submit_to_done_p99_s:.2f}",
    ),
    (
        "model step (its checkpoint's started -> finished) p50 / p99 ms",
        "{model_step_p50_ms:.0f} / {model_step_p99_ms:.0f}",
    ),
    (
        "per run, claim -> completion outside its steps, p50 / p99 ms",
        "{outside_steps_per_run_p50_ms:.0f} / {outside_steps_per_run_p99_ms:.0f}",
    ),
    (
        "workers' CPU s, ms per model call (all; 10% -> 90%)",
        "{worker_cpu_s:.1f}, {worker_cpu_ms_per_call:.1f}; {steady_worker_cpu_ms_per_call:.1f}",
    ),
    (
        "model stub: CPU s, peak in flight, its own p50 / max ms",
        "{stub_cpu_s:.2f}, {stub_peak_in_flight}, {stub_p50_ms:.0f} / {stub_max_ms:.0f}",
    ),
    ("PostgreSQL backends' CPU s (sampled every 0.3 s)", "{postgres_cpu_s_sampled:.1f}"),
    (
        "PostgreSQL sessions: opened by the workers, most at once (sampled), max_connections",
        "{postgres_sessions:.0f}, {postgres_peak_sessions}, {max_connections}",
    ),
    (
        "transactions per step (of which rollbacks)",
        "{transactions_per_step:.2f} ({rollbacks_per_step:.2f})",
    ),
    ("statements per step (server log)", "{statements_per_step:.2f}"),
    (
        "tuples inserted / updated per step",
        "{tup_inserted_per_step:.2f} / {tup_updated_per_step:.2f}",
    ),
    (
        "PostgreSQL active / idle-in-transaction ms per step",
        "{pg_active_ms_per_step:.2f} / {pg_idle_in_transaction_ms_per_step:.2f}",
    ),
    (
        "machine busy during the batch (all cores), load before -> after",
        "{machine_busy:.0%}, {load_before[0]:.2f} -> {load_after[0]:.2f}",
    ),
]


def table(figures: dict[str, Any]) -> str:
    """The figures as a Markdown table, then the statements by kind and the notices."""
    lines = ["| | value |", "|---|---|"]
    if figures["postgres_restarted"]:
        lines[:0] = ["**PostgreSQL restarted during the batch: every figure is disturbed.**", ""]
    lines += [f"| {label} | {cell.format(**figures)} |" for label, cell in ROWS]
    kinds = figures["statement_kinds_per_step"]
    if kinds:
        lines += ["", "Statements per step, by kind:", "", "| statement | per step |", "|---|---|"]
        shown = {k: v for k, v in kinds.items() if v >= 0.01}
        rare = sum(kinds.values()) - sum(shown.values())
        lines += [f"| `{k}` | {v:.2f} |" for k, v in sorted(shown.items(), key=lambda kv: -kv[1])]
        lines += [f"| others (connecting, schema check) | {rare:.2f} |"] if rare else []
    lines += ["", f"Backends of the bench database, sampled: {figures['backend_samples']}"]
    if figures["worker_notices"]:
        lines += ["", "Workers' notices other than `run ... completed`:", ""]
        lines += [f"    {n}" for n in figures["worker_notices"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument(
        "--db-url",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="a database URL of a role that may create databases",
    )
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
    parser.add_argument("--pg-log", type=Path, help="the server's log file (default: found)")
    parser.add_argument("--no-statements", action="store_true", help="do not log statements")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after (s)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    say(f"load average {os.getloadavg()}")
    figures = report(measure(args))
    if args.json:
        print(json.dumps(figures, indent=2, default=str))
    else:
        print(table(figures))


if __name__ == "__main__":
    main()
