"""The service's figures (runner.service.figures), as `collect` returns them, as
Prometheus scrapes them (`exposition`, parsed back with prometheus_client's parser) and
as `runner stats` prints them, on SQLite and on PostgreSQL alike.

One store per test holds two flows. `triage` ran for real: a python tool step, a policy
step that escalates a refund, and a model step (FakeLLM, with usage and cost) that
escalates a low confidence; a person approved the refund, and two runs are queued, one
of them parked for an hour. `timed` was written row by row, for durations we know to the
microsecond (0.05 s and 1 s exactly on a bucket's bound, 50.4 ms just past one, 400 s
past the last) and a person's decision that must count nowhere.
"""

from __future__ import annotations

import io
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pg_databases import postgres_database
from prometheus_client.parser import text_string_to_metric_families

from runner.cli.main import main
from runner.lang.compiler import CompiledFlow
from runner.lang.load import load_flow
from runner.review.desk import Desk
from runner.runtime.engine import Engine
from runner.runtime.models import LLMResponse
from runner.runtime.versions import flow_version
from runner.service.figures import BUCKETS, collect, exposition
from runner.store.records import now
from runner.store.sql import SqlStore
from runner.store.tables import checkpoints, flow_versions, runs
from runner.testing import FakeClock, FakeLLM

TRIAGE = """\
version: 1
name: triage
models:
  default: openai/gpt-4o-mini
tools:
  fetch: {python: "figures_tools:fetch"}
policies:
  no_refund: {deny: "(?i)refund", message: only billing staff promise refunds}
steps:
  - id: fetch
    tool: fetch
    args: {text: "{{ input.text }}"}
  - id: check
    policies: [no_refund]
    text: "{{ steps.fetch.output.text }}"
    on_violation: human_review
  - id: classify
    llm:
      prompt: "Classify: {{ input.text }}"
      output:
        type: object
        required: [category, confidence]
        properties: {category: {type: string}, confidence: {type: number}}
    confidence: {score: "{{ output.confidence }}", min: 0.8}
on_error: dead_letter
"""
TOOLS = """\
def fetch(text):
    if text == "!fail":
        raise RuntimeError("fetch is down")
    return {"text": text}
"""
START = datetime(2026, 1, 1, tzinfo=UTC)
QUEUED_FOR = 600.0  # seconds the due queued run has waited
# run id -> status, (model calls, tokens, cost), checkpoints (outcome, route, seconds);
# every checkpoint is of the step `score`.
TIMED: dict[str, tuple[str, tuple[int, int, float], list[tuple[str, str, float]]]] = {
    "t1": ("completed", (2, 300, 0.125), [("ok", "score", 0.03), ("ok", "done", 0.05)]),
    "t2": ("completed", (1, 100, 0.5), [("ok", "score", 0.7), ("ok", "done", 1.0)]),
    "t3": (
        "completed",
        (3, 600, 0.25),
        [
            ("ok", "score", 4.0),
            ("low_confidence", "human_review", 400.0),
            ("approved", "done", 1000.0),
        ],
    ),
    "t4": ("failed", (0, 0, 0.0), [("ok", "score", 0.0504), ("error", "dead_letter", 0.2)]),
}
# cumulative visits of `score` per bucket: 0.03 0.05 | 0.0504 | 0.2 | | 0.7 1.0 | | 4.0 | ... | 400
TIMED_BUCKETS = (2, 3, 4, 4, 6, 6, 7, 7, 7, 7, 7, 8)
TIMED_SECONDS = 0.03 + 0.05 + 0.7 + 1.0 + 4.0 + 400.0 + 0.0504 + 0.2
STATUSES = ("queued", "running", "completed", "escalated", "failed", "rejected", "archived")
ZERO = dict.fromkeys(STATUSES, 0)


# -- stores ---------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/runner.db"
    else:
        yield from postgres_database()


@dataclass(frozen=True)
class Filled:
    store: SqlStore
    url: str
    queued_at: datetime  # when the run waiting in the queue was made


@pytest.fixture
def filled(store_url: str, tmp_path: Path) -> Iterator[Filled]:
    store = SqlStore(store_url)
    try:
        run_triage(store, tmp_path)
        queued_at = queue_two(store, tmp_path)
        write_timed(store)
        yield Filled(store, store_url, queued_at)
    finally:
        store.close()


def answer(confidence: float) -> LLMResponse:
    text = json.dumps({"category": "billing", "confidence": confidence})
    return LLMResponse(text=text, prompt_tokens=100, completion_tokens=20, cost_usd=0.25)


def triage_flow(tmp_path: Path) -> CompiledFlow:
    (tmp_path / "figures_tools.py").write_text(TOOLS, encoding="utf-8")
    (tmp_path / "triage.yaml").write_text(TRIAGE, encoding="utf-8")
    return load_flow(tmp_path / "triage.yaml")


def run_triage(store: SqlStore, tmp_path: Path) -> None:
    """hello completes; `refund me` escalates at check (violation) and completes once a
    person approves it; !fail dies at fetch (error); `hi` escalates at classify."""
    llm = FakeLLM({"classify": [answer(0.9), answer(0.3), answer(0.95)]})
    engine = Engine(store, llm=llm, clock=FakeClock(), rng=random.Random(0))
    compiled = triage_flow(tmp_path)
    texts = ("hello", "refund me", "!fail", "hi")
    ended = {text: engine.start(compiled, {"text": text}) for text in texts}
    assert {t: r.status for t, r in ended.items()} == {
        "hello": "completed",
        "refund me": "escalated",
        "!fail": "failed",
        "hi": "escalated",
    }
    approved = Desk(engine).approve(ended["refund me"].run_id, "Lena")
    assert approved.status == "completed"


def queue_two(store: SqlStore, tmp_path: Path) -> datetime:
    """One queued run that waited QUEUED_FOR seconds, one parked for an hour."""
    compiled = triage_flow(tmp_path)
    version = flow_version(compiled)
    store.submit_run("q-due", version, {"text": "later"}, compiled.first)
    store.submit_run(
        "q-parked", version, {"text": "later"}, compiled.first, due_at=now() + timedelta(hours=1)
    )
    queued_at = now() - timedelta(seconds=QUEUED_FOR)
    with store.engine.begin() as conn:
        conn.execute(runs.update().where(runs.c.id == "q-due").values(created_at=queued_at))
    return queued_at


def write_timed(store: SqlStore) -> None:
    version = {"digest": "timed-1", "name": "timed", "path": "timed.yaml", "text": ""}
    with store.engine.begin() as conn:
        conn.execute(flow_versions.insert(), [{**version, "created_at": START}])
        conn.execute(runs.insert(), [timed_run(run_id, *TIMED[run_id][:2]) for run_id in TIMED])
        conn.execute(checkpoints.insert(), [row for run_id in TIMED for row in timed_steps(run_id)])


def timed_run(run_id: str, status: str, use: tuple[int, int, float]) -> dict[str, Any]:
    stopped = status == "failed"
    return {
        "id": run_id,
        "flow_name": "timed",
        "flow_digest": "timed-1",
        "status": status,
        "position": "dead_letter" if stopped else "done",
        "failed_step": "score" if stopped else None,
        "input": {},
        "steps_run": len(TIMED[run_id][2]),
        "llm_calls": use[0],
        "tokens": use[1],
        "cost_usd": use[2],
        "created_at": START,
        "updated_at": START,
    }


def timed_steps(run_id: str) -> Iterator[dict[str, Any]]:
    at = START + timedelta(minutes=int(run_id[1:]), microseconds=123_456)
    for seq, (outcome, route, seconds) in enumerate(TIMED[run_id][2], start=1):
        yield {
            "run_id": run_id,
            "seq": seq,
            "step_id": "score",
            "outcome": outcome,
            "route": route,
            "output": None,
            "attempts": 1,
            "started_at": at,
            "finished_at": at + timedelta(seconds=seconds),
        }
        at += timedelta(seconds=seconds + 1)


# -- collect ----------------------------------------------------------------------------
def test_runs_by_status_and_flow(filled: Filled) -> None:
    figures = collect(filled.store)
    counted = {(r.flow, r.status): r.count for r in figures.runs if r.count}
    assert counted == {
        ("timed", "completed"): 3,
        ("timed", "failed"): 1,
        ("triage", "completed"): 2,
        ("triage", "escalated"): 1,
        ("triage", "failed"): 1,
        ("triage", "queued"): 2,
    }
    assert len(figures.runs) == 2 * len(STATUSES)  # every status of every flow, zero or not


def test_the_queue_counts_what_a_worker_may_claim_now(filled: Filled) -> None:
    at = filled.queued_at + timedelta(seconds=90)
    figures = collect(filled.store, at=at)
    assert (figures.queue_depth, figures.queue_oldest_age_seconds) == (1, 90.0)


def test_step_durations_fall_in_their_buckets_to_the_microsecond(filled: Filled) -> None:
    steps = {(s.flow, s.step): s for s in collect(filled.store).steps}
    assert sorted(steps) == [
        ("timed", "score"),
        ("triage", "check"),
        ("triage", "classify"),
        ("triage", "fetch"),
    ]
    score = steps["timed", "score"]
    assert score.buckets == tuple(zip((*BUCKETS, float("inf")), TIMED_BUCKETS, strict=True))
    assert (score.visits, score.seconds) == (8, pytest.approx(TIMED_SECONDS, abs=1e-9))
    assert (score.quantile(0.5), score.beyond(0.5)) == (0.25, False)
    assert (score.quantile(0.95), score.beyond(0.95)) == (300.0, True)
    # a person's approval is no visit: classify ran for hello, hi and the approved refund
    visits = {step: s.visits for (flow, step), s in steps.items() if flow == "triage"}
    assert visits == {"fetch": 4, "check": 3, "classify": 3}


def test_model_use_is_summed_over_a_flows_runs(filled: Filled) -> None:
    models = {m.flow: (m.calls, m.tokens, m.cost_usd) for m in collect(filled.store).models}
    assert models == {"timed": (6, 1000, 0.875), "triage": (3, 360, 0.75)}


def test_escalations_count_step_visits_that_stopped_their_run(filled: Filled) -> None:
    """The refund a person approved still counts: the count only grows."""
    figures = collect(filled.store)
    found = {(e.flow, e.step, e.reason): e.count for e in figures.escalations}
    assert found == {
        ("timed", "score", "error"): 1,
        ("timed", "score", "low_confidence"): 1,
        ("triage", "check", "violation"): 1,
        ("triage", "classify", "low_confidence"): 1,
        ("triage", "fetch", "error"): 1,
    }
    ratios = {(s.flow, s.step): (s.escalations, s.escalation_ratio) for s in figures.steps}
    assert ratios == {
        ("timed", "score"): (2, 0.25),
        ("triage", "check"): (1, 1 / 3),
        ("triage", "classify"): (1, 1 / 3),
        ("triage", "fetch"): (1, 0.25),
    }


def test_one_flow(filled: Filled) -> None:
    figures = collect(filled.store, flow="timed")
    assert {r.flow for r in figures.runs} == {"timed"}
    assert [(s.flow, s.step) for s in figures.steps] == [("timed", "score")]
    assert [m.flow for m in figures.models] == ["timed"]
    assert {e.flow for e in figures.escalations} == {"timed"}
    assert figures.queue_depth == 1  # the queue is every flow's


# -- exposition -------------------------------------------------------------------------
def scraped(store: SqlStore) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Each sample of a scrape: (name, labels) -> value; and every family has its help."""
    body, content_type = exposition(store)
    assert content_type.startswith("text/plain; version=")
    families = list(text_string_to_metric_families(body.decode()))
    assert all(f.documentation for f in families)
    return {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples}


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


def test_a_scrape_gives_every_figure(filled: Filled) -> None:
    samples = scraped(filled.store)
    assert sorted({name for name, _ in samples}) == [
        "runner_escalation_ratio",
        "runner_escalations_total",
        "runner_model_calls_total",
        "runner_model_cost_usd_total",
        "runner_model_tokens_total",
        "runner_queue_depth",
        "runner_queue_oldest_age_seconds",
        "runner_runs",
        "runner_step_duration_seconds_bucket",
        "runner_step_duration_seconds_count",
        "runner_step_duration_seconds_sum",
    ]
    assert sample(samples, "runner_runs", status="queued", flow="triage") == 2
    assert sample(samples, "runner_runs", status="rejected", flow="timed") == 0
    assert sample(samples, "runner_queue_depth") == 1
    assert QUEUED_FOR <= sample(samples, "runner_queue_oldest_age_seconds") < QUEUED_FOR + 60
    assert sample(samples, "runner_model_calls_total", flow="triage") == 3
    assert sample(samples, "runner_model_tokens_total", flow="timed") == 1000
    assert sample(samples, "runner_model_cost_usd_total", flow="timed") == 0.875
    assert (
        sample(samples, "runner_escalations_total", flow="triage", step="check", reason="violation")
        == 1
    )
    assert sample(samples, "runner_escalation_ratio", flow="timed", step="score") == 0.25


def test_a_scrape_gives_the_histogram(filled: Filled) -> None:
    samples = scraped(filled.store)
    score = {"flow": "timed", "step": "score"}
    bounds = ["0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "60.0", "300.0"]
    buckets = [
        sample(samples, "runner_step_duration_seconds_bucket", **score, le=le)
        for le in [*bounds, "+Inf"]
    ]
    assert buckets == list(TIMED_BUCKETS)
    assert sample(samples, "runner_step_duration_seconds_count", **score) == 8
    total = sample(samples, "runner_step_duration_seconds_sum", **score)
    assert total == pytest.approx(TIMED_SECONDS, abs=1e-9)


def test_a_scrape_of_an_empty_store(store_url: str) -> None:
    store = SqlStore(store_url)
    try:
        assert scraped(store) == {
            ("runner_queue_depth", frozenset()): 0.0,
            ("runner_queue_oldest_age_seconds", frozenset()): 0.0,
        }
    finally:
        store.close()


def test_each_scrape_reads_the_store_again(filled: Filled) -> None:
    before = sample(scraped(filled.store), "runner_runs", status="queued", flow="triage")
    filled.store.claim_queued(["worker-1"])
    after = scraped(filled.store)
    assert (before, sample(after, "runner_runs", status="queued", flow="triage")) == (2, 1)
    assert sample(after, "runner_queue_depth") == 0


# -- runner stats -----------------------------------------------------------------------
def stats(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["stats", *args], out=out)
    return code, out.getvalue()


STATS_TIMED = """\
runs
FLOW   COMPLETED  FAILED  TOTAL
timed  3          1       4

queue (every flow): 1 run waiting to be claimed, the oldest for N min

steps (p50 and p95 estimated from the duration histogram's buckets)
FLOW   STEP   VISITS  MEAN    P50     P95       ESCALATED
timed  score  8       50.8 s  250 ms  >5.0 min  2 (25%)

model use
FLOW   CALLS  TOKENS  COST USD
timed  6      1,000   0.8750

escalations (visits that stopped their run: review or dead letter)
FLOW   STEP   REASON          COUNT
timed  score  error           1
timed  score  low_confidence  1
"""


def test_stats_as_text(filled: Filled) -> None:
    code, text = stats("--db", filled.url, "--flow", "timed")
    assert code == 0
    assert re.sub(r"for 1\d\.\d min", "for N min", text) == STATS_TIMED


def test_stats_as_json(filled: Filled) -> None:
    code, text = stats("--db", filled.url, "--format", "json")
    data = json.loads(text)
    assert (code, data["flow"]) == (0, None)
    assert data["runs"] == {
        "timed": ZERO | {"completed": 3, "failed": 1},
        "triage": ZERO | {"completed": 2, "escalated": 1, "failed": 1, "queued": 2},
    }
    assert data["queue"]["depth"] == 1
    assert QUEUED_FOR <= data["queue"]["oldest_age_seconds"] < QUEUED_FOR + 60
    score = next(s for s in data["steps"] if s["flow"] == "timed")
    assert score == {
        "flow": "timed",
        "step": "score",
        "visits": 8,
        "seconds": pytest.approx(TIMED_SECONDS, abs=1e-9),
        "buckets": dict(zip([*(f"{b:g}" for b in BUCKETS), "+Inf"], TIMED_BUCKETS, strict=True)),
        "p50_seconds": 0.25,
        "p95_seconds": 300.0,
        "escalations": 2,
        "escalation_ratio": 0.25,
    }
    assert data["models"] == [
        {"flow": "timed", "calls": 6, "tokens": 1000, "cost_usd": 0.875},
        {"flow": "triage", "calls": 3, "tokens": 360, "cost_usd": 0.75},
    ]
    assert len(data["escalations"]) == 5
    assert {"flow": "triage", "step": "fetch", "reason": "error", "count": 1} in data["escalations"]


def test_stats_of_an_empty_store(store_url: str) -> None:
    SqlStore(store_url).close()
    assert stats("--db", store_url) == (0, "no runs\n\nqueue: empty\n")
    assert stats("--db", store_url, "--flow", "nope") == (
        0,
        "no runs of flow nope\n\nqueue (every flow): empty\n",
    )


def test_stats_of_a_store_that_is_not_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert stats("--db", "sqlite:///missing.db") == (1, "")
    assert capsys.readouterr().err == (
        f"runner: no run store at missing.db (here: {tmp_path}/missing.db): "
        "runs are stored where `runner run` ran, or give --db\n"
    )
    assert list(tmp_path.iterdir()) == []
