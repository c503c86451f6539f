"""The cluster acceptance test: three `runner worker` hosts, each in a network namespace
of its own, share one PostgreSQL through a relay on their veth links (tests/service/
netns.py) while the test breaks things:

- worker processes are SIGKILLed at random moments (each is restarted after a moment);
- one host's link is cut for twice the lease while that host's worker waits inside an
  effect (the test holds that effect's response), then restored;
- PostgreSQL is restarted once.

500 runs are submitted, each with python steps and two non-idempotent HTTP effects
against a counting server. When every run has ended:

- no run is lost, none is left queued or running;
- every run completed, or is escalated in doubt because a disruption (a kill of the
  process inside the effect, the link cut, the database restart) landed while one of
  its effects was in flight: the effect's ledger row is `started` and the reason says
  it may have happened;
- no idempotency key reached the server twice; each completed run's two keys exactly
  once;
- the partitioned worker's late commit of the held run was refused ("no longer leased");
- no run has two checkpoints of one step (the flow has no loops), and a completed run
  has exactly one per step.

The disruptions come at random points of the progress; RUNNER_CLUSTER_SEED picks them
again (the summary line and every failure name the seed; timing still varies).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn

import pytest
import sqlalchemy as sa
from netns import Namespace, Network, Relay, unavailable

from runner.store.tables import checkpoints, effects, events, runs

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PG_URL = os.environ.get(
    "RUNNER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
SEED = int(os.environ.get("RUNNER_CLUSTER_SEED", str(random.randrange(10**6))))
RUNS = 500
HOSTS = 3
CONCURRENCY = 6  # runs at a time per worker
LEASE = 3.0  # RUNNER_LEASE_SECONDS of the workers
KILLS = 8  # at least 5 must land while runs are going (a restart may delay the last)
PAUSE_MS = 40  # inside every python step: runs slow enough for every disruption to land
TIMEOUT = 360.0  # for every run to end
TICK = 0.1
STEPS = ("prepare", "charge", "record", "notify", "close")
EFFECTS = {"charge": "charge", "notify": "notify"}  # step -> its key's prefix
END = ("completed", "escalated", "failed")

FLOW = """\
version: 1
name: cluster
description: Python steps around two non-idempotent HTTP effects.
input:
  type: object
  required: [id]
  properties: {id: {type: string}}
tools:
  work:
    python: clusterwork:work
    input: {type: object, required: [step, pause_ms]}
    output: {type: object, required: [step]}
    timeout_seconds: 20
    retry: 1
  charge:
    http: {method: POST, url: "{{ env.CLUSTER_SERVER }}/charge", json: {to: "{{ args.to }}"}}
    effect: true
    idempotency_key: "charge-{{ input.id }}"
    output: {type: object, required: [message_id]}
    timeout_seconds: 60
    retry: 1
  notify:
    http: {method: POST, url: "{{ env.CLUSTER_SERVER }}/notify", json: {to: "{{ args.to }}"}}
    effect: true
    idempotency_key: "notify-{{ input.id }}"
    output: {type: object, required: [message_id]}
    timeout_seconds: 60
    retry: 1
steps:
  - id: prepare
    tool: work
    args: {step: prepare, pause_ms: PAUSE}
  - id: charge
    tool: charge
    args: {to: "{{ input.id }}"}
  - id: record
    tool: work
    args: {step: record, pause_ms: PAUSE, seen: "{{ steps.charge.output.message_id }}"}
  - id: notify
    tool: notify
    args: {to: "{{ input.id }}"}
  - id: close
    tool: work
    args: {step: close, pause_ms: PAUSE, seen: "{{ steps.notify.output.message_id }}"}
on_error: dead_letter
""".replace("PAUSE", str(PAUSE_MS))

TOOLS = '''\
"""The cluster test's python step: a short real pause."""

import time


def work(step, pause_ms, seen=None):
    time.sleep(pause_ms / 1000)
    return {"step": step}
'''


# -- the environment ----------------------------------------------------------------------
def _unable(reason: str, required_by: str) -> NoReturn:
    if os.environ.get(required_by):
        pytest.fail(f"{reason} ({required_by} is set, so this must run)")
    pytest.skip(reason)


@pytest.fixture
def cluster_postgres() -> Iterator[str]:
    """A fresh database (dropped afterwards) on a PostgreSQL this test may restart."""
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:
        admin.dispose()
        _unable(f"no PostgreSQL at {PG_URL}: {type(exc).__name__}", "RUNNER_REQUIRE_POSTGRES")
    name = f"runner_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        # A partitioned host's open transaction would hold its row locks (and keep its
        # runs from the other workers) for as long as the cut lasts; servers of a fleet
        # set this for that reason.
        conn.execute(
            sa.text(f'ALTER DATABASE "{name}" SET idle_in_transaction_session_timeout = 5000')
        )
    try:
        yield sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def restart_command(url: str) -> list[str]:
    """The command that restarts the PostgreSQL cluster serving `url` (pg_ctlcluster)."""
    parsed = sa.make_url(url)
    port = str(parsed.port or 5432)
    if parsed.host not in ("127.0.0.1", "localhost") or shutil.which("pg_lsclusters") is None:
        _unable(f"cannot restart the PostgreSQL at {url} from here", "RUNNER_REQUIRE_NETNS")
    listed = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False
    )
    for line in listed.stdout.splitlines():
        version, cluster, cluster_port, *_ = line.split()
        if cluster_port == port:
            return ["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "restart"]
    _unable(f"no PostgreSQL cluster on port {port} in pg_lsclusters", "RUNNER_REQUIRE_NETNS")


@pytest.fixture
def network() -> Iterator[Network]:
    reason = unavailable()
    if reason:
        _unable(reason, "RUNNER_REQUIRE_NETNS")
    made = Network(HOSTS)
    try:
        yield made.open()
    finally:
        made.close()


# -- the counting server ----------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    key: str | None  # the Idempotency-Key header
    client: str  # the address it came from
    at: float


@dataclass
class Hold:
    """The next request from `client` waits at the server until `release` is set."""

    client: str
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    key: str | None = None


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a worker killed while it waited for its answer


class CountingServer:
    """Answers every POST 200 with a message id and records its Idempotency-Key."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._holds: list[Hold] = []
        self._lock = threading.Lock()
        self._httpd = QuietServer(("0.0.0.0", 0), self._handler())
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def hold_next(self, client: str) -> Hold:
        with self._lock:
            self._holds.append(Hold(client))
            return self._holds[-1]

    def keys(self) -> Counter[str | None]:
        with self._lock:
            return Counter(r.key for r in self.requests)

    def close(self) -> None:
        for hold in self._holds:
            hold.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _arrived(self, key: str | None, client: str) -> Hold | None:
        with self._lock:
            self.requests.append(Request(key, client, time.time()))
            hold = next((h for h in self._holds if h.client == client and h.key is None), None)
            if hold is not None:
                hold.key = key
                hold.arrived.set()
            return hold

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key = self.headers.get("Idempotency-Key")
                hold = server._arrived(key, self.client_address[0])
                if hold is not None:
                    hold.release.wait(TIMEOUT)
                body = json.dumps({"message_id": f"msg-{key}"}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the worker was killed while it waited
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def server() -> Iterator[CountingServer]:
    made = CountingServer()
    try:
        yield made
    finally:
        made.close()


# -- the hosts ------------------------------------------------------------------------------
class Host:
    """A namespace and its `runner worker`, started again after each kill; every
    process's stderr is kept (`log`)."""

    def __init__(self, space: Namespace, folder: Path, db_url: str, server_port: int) -> None:
        self.space = space
        self.folder = folder / space.name
        self.folder.mkdir()
        runner = Path(sys.executable).with_name("runner")
        self.argv = [
            *([str(runner)] if runner.exists() else [sys.executable, "-m", "runner"]),
            *("--log-format", "json", "worker", "--db", db_url),
            *("--concurrency", str(CONCURRENCY), "--poll", "0.5", "--grace", "5"),
        ]
        self.env = {
            **os.environ,
            "RUNNER_LEASE_SECONDS": str(LEASE),
            "CLUSTER_SERVER": f"http://{space.host_ip}:{server_port}",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.killed: set[int] = set()  # pids

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.procs[-1]

    def start(self) -> None:
        err = self.folder / f"worker{len(self.procs)}.err"
        with open(self.folder / f"worker{len(self.procs)}.out", "wb") as out, open(err, "wb") as e:
            self.procs.append(
                subprocess.Popen(
                    self.space.command(self.argv),
                    cwd=self.folder,
                    env=self.env,
                    stdout=out,
                    stderr=e,
                )
            )

    def kill(self) -> int:
        """SIGKILL the worker and reap it; its pid."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.killed.add(self.proc.pid)
        return self.proc.pid

    def died(self) -> str | None:
        """What it said, if the worker ended without being killed."""
        if self.proc.poll() is None or self.proc.pid in self.killed:
            return None
        return f"{self.space.name}: worker exited {self.proc.returncode}:\n{self.log(-1)[-3000:]}"

    def stop(self) -> int | None:
        """SIGTERM (drain) and wait; the exit code of the last worker. A worker restarted
        a moment ago is first let past its start-up (until then SIGTERM ends a Python
        process at once, as it would under any supervisor)."""
        deadline = time.monotonic() + 30
        while self.proc.poll() is None and time.monotonic() < deadline:
            said = self.log(-1)
            if "worker started" in said or "waiting for the run store" in said:
                break
            time.sleep(0.05)
        if self.proc.poll() is None and self.proc.pid not in self.killed:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def log(self, n: int) -> str:
        n = n % len(self.procs)
        return (self.folder / f"worker{n}.err").read_text(errors="replace")

    def notices(self) -> list[dict[str, Any]]:
        """The JSON notices of every worker this host ran."""
        found = []
        for n in range(len(self.procs)):
            for line in self.log(n).splitlines():
                with contextlib.suppress(ValueError):
                    found.append(json.loads(line))
        return [n for n in found if isinstance(n, dict)]


@dataclass(frozen=True)
class Disruption:
    """One thing the test broke, when, and which worker process it hit."""

    kind: str  # kill, cut, restart
    start: float  # time.time()
    end: float
    pid: int | None = None  # the worker process it hit (kill, cut)
    progress: float = 0.0  # the share of the runs that had ended when it began

    def explains(self, starter: int | None, started: float) -> bool:
        """Whether it hit an effect that `starter` (a pid) started at `started`: the
        effect was in flight (started at most a lease earlier) when it began, and it hit
        that process (a restart hits them all)."""
        hit = self.kind == "restart" or self.pid == starter
        return hit and self.start - LEASE <= started <= self.end + 1.0  # 1s: clocks, stamps


class Chaos:
    """The disruptions, each a generator the test's loop steps once per tick (a `yield`
    waits for the next tick)."""

    def __init__(
        self, hosts: list[Host], server: CountingServer, db: sa.Engine, restart: list[str]
    ) -> None:
        self.hosts, self.server, self.db, self.restart = hosts, server, db, restart
        self.rng = random.Random(SEED)
        self.done = 0  # runs ended, set by the loop
        self.log: list[Disruption] = []
        self.spared: set[int] = set()  # hosts (by index) not to kill now
        self.held_run: str | None = None
        self.refusal: str | None = None  # the partitioned worker's refused commit

    def until(self, what: str, condition: Callable[[], bool], timeout: float) -> Iterator[None]:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout:.0f}s (seed {SEED})")
            yield

    def kills(self) -> Iterator[None]:
        """KILLS kills at random points of the progress, each of a random worker not
        spared, which starts again after a moment."""
        for point in sorted(self.rng.uniform(0.05, 0.6) for _ in range(KILLS)):
            yield from self.until("progress", self.reached(point), TIMEOUT)
            yield from self.pause(self.rng.uniform(0.0, 0.2))
            host = self.rng.choice([h for n, h in enumerate(self.hosts) if n not in self.spared])
            start, progress = time.time(), self.done / RUNS
            pid = host.kill()
            self.log.append(Disruption("kill", start, time.time(), pid, progress))
            yield from self.pause(self.rng.uniform(0.2, 0.6))
            host.start()

    def reached(self, fraction: float) -> Callable[[], bool]:
        return lambda: self.done >= fraction * RUNS

    def pause(self, seconds: float) -> Iterator[None]:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            yield

    def partition(self) -> Iterator[None]:
        """Hold an effect of host 0's worker at the server, cut host 0's link, wait until
        another worker took the held run over, restore the link, release the response:
        the worker's commit must be refused."""
        yield from self.until("progress", self.reached(0.05), TIMEOUT)
        self.spared.add(0)
        host = self.hosts[0]
        hold = self.server.hold_next(host.space.inner_ip)
        yield from self.until("effect request from host 0", hold.arrived.is_set, 60)
        self.held_run = self.run_of(str(hold.key))
        owner = self.lease_owner(self.held_run)
        assert owner and owner.split(":")[1] == str(host.proc.pid), (
            f"the held run is leased to {owner}, not to host 0's worker (pid {host.proc.pid})"
        )
        start, progress = time.time(), self.done / RUNS
        host.space.cut()
        yield from self.until(
            "other worker taking the held run over",
            lambda: time.time() > start + 2 * LEASE and self.lease_owner(self.held_run) != owner,
            10 * LEASE,
        )
        host.space.restore()
        self.log.append(Disruption("cut", start, time.time(), host.proc.pid, progress))
        hold.release.set()
        yield from self.until("refused commit on host 0", self.refused, 60)
        self.spared.discard(0)

    def refused(self) -> bool:
        for line in self.hosts[0].log(-1).splitlines():
            if f"run {self.held_run} " in line and "no longer leased" in line:
                self.refusal = line
        return self.refusal is not None

    def restart_database(self) -> Iterator[None]:
        """Once the partition is over (not during it: the held run's commit must reach
        the database to be refused), while every worker is past its start, so that the
        restart lands on workers that are running and must ride it out."""
        yield from self.until("partition's end", lambda: self.refusal is not None, TIMEOUT)
        yield from self.until("workers started", self.all_started, 60)
        start, progress = time.time(), self.done / RUNS
        done = subprocess.run(
            self.restart, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, f"{' '.join(self.restart)}: {done.stderr}"
        yield from self.until("PostgreSQL accepting connections", self.accepting, 60)
        self.log.append(Disruption("restart", start, time.time(), None, progress))

    def all_started(self) -> bool:
        return all("worker started" in host.log(-1) for host in self.hosts)

    def accepting(self) -> bool:
        try:
            with self.db.connect() as conn:
                conn.execute(sa.text("select 1"))
        except sa.exc.OperationalError:
            return False
        return True

    def run_of(self, key: str) -> str:
        input_id = key.partition("-")[2]
        with self.db.connect() as conn:
            for run_id, value in conn.execute(sa.select(runs.c.id, runs.c.input)):
                if value["id"] == input_id:
                    return str(run_id)
        raise AssertionError(f"no run has input {input_id}")

    def lease_owner(self, run_id: str | None) -> str | None:
        with self.db.connect() as conn:
            return conn.execute(sa.select(runs.c.lease_owner).where(runs.c.id == run_id)).scalar()


# -- what the database holds at the end ---------------------------------------------------
@dataclass
class Stored:
    runs: dict[str, Any]  # run id -> row
    checkpoints: dict[str, list[Any]]  # run id -> rows by seq
    effects: dict[str, Any]  # key -> row
    claims: dict[str, list[tuple[datetime, str]]]  # run id -> (at, owner) of its leases

    @classmethod
    def read(cls, db: sa.Engine) -> Stored:
        with db.connect() as conn:
            found = cls({r.id: r for r in conn.execute(runs.select())}, {}, {}, {})
            for cp in conn.execute(checkpoints.select().order_by(checkpoints.c.seq)):
                found.checkpoints.setdefault(cp.run_id, []).append(cp)
            found.effects = {e.key: e for e in conn.execute(effects.select())}
            resumed = events.select().where(events.c.kind == "run_resumed").order_by(events.c.id)
            for event in conn.execute(resumed):
                found.claims.setdefault(event.run_id, []).append((event.at, event.data["owner"]))
        return found

    def starter(self, run_id: str, key: str) -> int | None:
        """The pid of the worker that held the run's lease when the effect started."""
        started = self.effects[key].started_at
        owners = [owner for at, owner in self.claims.get(run_id, []) if at <= started]
        return int(owners[-1].split(":")[1]) if owners else None


def run_problems(
    run: Any, stored: Stored, seen: Counter[str | None], log: list[Disruption]
) -> list[str]:
    """What is wrong with one ended run (see the module's docstring)."""
    keys = {step: f"{prefix}-{run.input['id']}" for step, prefix in EFFECTS.items()}
    ledger = {step: getattr(stored.effects.get(key), "status", None) for step, key in keys.items()}
    cps = stored.checkpoints.get(run.id, [])
    steps = [cp.step_id for cp in cps]
    problems = [f"{keys[s]} sent {seen[keys[s]]} times" for s in EFFECTS if seen[keys[s]] > 1]
    if [cp.seq for cp in cps] != list(range(1, len(cps) + 1)) or len(set(steps)) < len(steps):
        problems.append(f"checkpoints {[(cp.seq, cp.step_id) for cp in cps]}")
    if run.lease_owner is not None:
        problems.append(f"still leased to {run.lease_owner}")
    shown = [(cp.step_id, cp.outcome, cp.route) for cp in cps]
    if run.status == "completed":
        if steps != list(STEPS) or any(cp.outcome != "ok" for cp in cps):
            problems.append(f"completed with checkpoints {shown}")
        for step, key in keys.items():
            if ledger[step] != "done" or seen[key] != 1:
                problems.append(f"completed, but {key} is {ledger[step]}, sent {seen[key]}x")
        return problems
    doubt = next((step for step in EFFECTS if ledger[step] == "started"), None)
    if run.status != "escalated" or doubt is None:
        return [*problems, f"{run.status} ({run.reason}), ledger {ledger}"]
    want = [*((step, "ok") for step in STEPS[: STEPS.index(doubt)]), (doubt, "in_doubt")]
    if [(step, outcome) for step, outcome, _ in shown] != want or shown[-1][2] != "human_review":
        problems.append(f"in doubt at {doubt}, checkpoints {shown}")
    for step, key in keys.items():
        before = STEPS.index(step) < STEPS.index(doubt)
        if step != doubt and (ledger[step], seen[key]) != (("done", 1) if before else (None, 0)):
            problems.append(f"in doubt at {doubt}, but {key} is {ledger[step]}, sent {seen[key]}x")
    if "may have happened" not in (run.reason or ""):
        problems.append(f"escalated, reason {run.reason!r}")
    if cause(stored, run.id, keys[doubt], log) is None:
        started = stored.effects[keys[doubt]].started_at
        problems.append(
            f"{keys[doubt]} in doubt (started {started:%H:%M:%S.%f} by pid "
            f"{stored.starter(run.id, keys[doubt])}), but no kill, cut or restart hit it"
        )
    return problems


def cause(stored: Stored, run_id: str, key: str, log: list[Disruption]) -> Disruption | None:
    """The disruption that left the effect `key` in doubt, if one did."""
    starter = stored.starter(run_id, key)
    started = stored.effects[key].started_at.timestamp()
    return next((d for d in log if d.explains(starter, started)), None)


def causes(stored: Stored, log: list[Disruption]) -> Counter[str]:
    """The effects left in doubt, by the kind of disruption that did it."""
    doubtful = [e for e in stored.effects.values() if e.status == "started"]
    found = [cause(stored, e.run_id, e.key, log) for e in doubtful]
    return Counter(d.kind if d else "nothing" for d in found)


def cluster_problems(stored: Stored, server: CountingServer, log: list[Disruption]) -> list[str]:
    seen = server.keys()
    problems = []
    if len(stored.runs) != RUNS:
        problems.append(f"{len(stored.runs)} runs stored, {RUNS} submitted")
    if None in seen:
        problems.append(f"{seen[None]} requests came without an Idempotency-Key")
    stray = {k for k in seen if k is not None and k not in stored.effects}
    if stray:
        problems.append(f"keys sent that the ledger does not know: {sorted(stray)[:10]}")
    for run in sorted(stored.runs.values(), key=lambda r: r.id):
        problems += [f"run {run.id}: {p}" for p in run_problems(run, stored, seen, log)]
    return problems


# -- the test -------------------------------------------------------------------------------
def submit(folder: Path, flow: Path, db_url: str) -> None:
    inputs = folder / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"id": f"in{n:03d}"}) + "\n" for n in range(RUNS)))
    argv = ["submit", str(flow), "--inputs", str(inputs), "--db", db_url, "--format", "json"]
    done = subprocess.run(
        [sys.executable, "-m", "runner", *argv],
        cwd=folder,
        env={**os.environ, "CLUSTER_SERVER": "http://127.0.0.1:9"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"runner submit exited {done.returncode}: {done.stderr}"
    assert sum(item["created"] for item in json.loads(done.stdout)) == RUNS, done.stdout[-2000:]


def ended(db: sa.Engine) -> Counter[str] | None:
    """Runs by status; None while the database does not answer (restarting)."""
    try:
        with db.connect() as conn:
            rows = conn.execute(sa.select(runs.c.status, sa.func.count()).group_by(runs.c.status))
            return Counter({status: count for status, count in rows})
    except sa.exc.OperationalError:
        return None


@pytest.fixture
def hosts(
    network: Network, cluster_postgres: str, server: CountingServer, tmp_path: Path
) -> Iterator[list[Host]]:
    """A worker host per namespace (not started), reaching the database over its link."""
    parsed = sa.make_url(cluster_postgres)
    relay = Relay((parsed.host or "127.0.0.1", parsed.port or 5432))
    made: list[Host] = []
    try:
        for space in network.namespaces:
            port = relay.listen(space.host_ip, 5432)
            url = parsed.set(host=space.host_ip, port=port).render_as_string(hide_password=False)
            made.append(Host(space, tmp_path, url, server.port))
        yield made
    finally:
        for host in made:
            host.close()
        relay.close()


def test_cluster_survives_kills_a_partition_and_a_restart(
    hosts: list[Host], cluster_postgres: str, server: CountingServer, tmp_path: Path
) -> None:
    restart = restart_command(cluster_postgres)
    flow = tmp_path / "flow.yaml"
    flow.write_text(FLOW)
    (tmp_path / "clusterwork.py").write_text(TOOLS)
    db = sa.create_engine(cluster_postgres, pool_pre_ping=True)
    began = time.monotonic()
    try:
        submit(tmp_path, flow, cluster_postgres)
        for host in hosts:
            host.start()
        chaos = Chaos(hosts, server, db, restart)
        counts = drive(chaos, began)
        codes = [host.stop() for host in hosts]
        stored = Stored.read(db)
    finally:
        db.dispose()
    print("\n" + summary(chaos, counts, stored, time.monotonic() - began))
    problems = cluster_problems(stored, server, chaos.log)
    errors = [n["message"] for h in hosts for n in h.notices() if n.get("level") == "error"]
    assert not problems, f"{len(problems)} problems (seed {SEED}):\n" + "\n".join(problems[:40])
    assert not errors, "workers logged errors:\n" + "\n".join(errors[:20])
    assert codes == [0] * HOSTS, f"workers exited {codes} on SIGTERM"
    kinds = Counter(d.kind for d in chaos.log if d.progress < 1.0)
    assert kinds["kill"] >= 5 and kinds["cut"] == kinds["restart"] == 1, (
        f"disruptions while runs were going: {dict(kinds)} (too few: make the runs slower)"
    )
    assert stored.runs[str(chaos.held_run)].status == "escalated", "the held run is not in doubt"


def summary(chaos: Chaos, counts: Counter[str], stored: Stored, seconds: float) -> str:
    def at(kind: str) -> str:
        return "/".join(f"{d.progress:.0%}" for d in chaos.log if d.kind == kind)

    by = ", ".join(f"{n} by {kind}" for kind, n in sorted(causes(stored, chaos.log).items()))
    cut = sum(d.end - d.start for d in chaos.log if d.kind == "cut")
    refused = sum(
        "no longer leased" in n.get("message", "") for h in chaos.hosts for n in h.notices()
    )
    return (
        f"cluster (seed {SEED}): {RUNS} runs on {HOSTS} hosts in {seconds:.0f}s: "
        f"{counts['completed']} completed, {counts['escalated']} in doubt ({by or 'none'}), "
        f"{counts['failed']} failed; {at('kill').count('/') + 1} kills (at {at('kill')} of the "
        f"runs ended), link cut {cut:.1f}s (at {at('cut')}), PostgreSQL restarted (at "
        f"{at('restart')}); {refused} late writes refused"
    )


def drive(chaos: Chaos, began: float) -> Counter[str]:
    """Step the disruptions until every run ended and they are all over; the runs by
    status at the end."""
    tasks = [chaos.kills(), chaos.partition(), chaos.restart_database()]
    counts: Counter[str] = Counter()
    while tasks or chaos.done < RUNS:
        counts = ended(chaos.db) or counts
        chaos.done = sum(counts[s] for s in END)
        for task in list(tasks):
            with contextlib.suppress(StopIteration):
                next(task)
                continue
            tasks.remove(task)
        dead = [why for host in chaos.hosts if (why := host.died())]
        assert not dead, "\n".join(dead)
        if time.monotonic() - began > TIMEOUT:
            raise AssertionError(
                f"not every run ended within {TIMEOUT:.0f}s (seed {SEED}): {dict(counts)}; "
                f"disruptions {[d.kind for d in chaos.log]}, tasks left {len(tasks)}"
            )
        time.sleep(TICK)
    return counts
