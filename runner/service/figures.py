"""The service's figures, read from the run store: runs by status, the queue, how long
steps take, what the models cost, and how often steps stop their run for a person.

`collect(store)` reads them in three statements: one over `runs` (grouped by flow and
status), one over `checkpoints` joined to `runs` (grouped by flow, step and outcome),
and the store's own queue count (`Store.queue_depth`). `exposition(store)` gives them
in Prometheus's text format, read afresh at every scrape; `runner stats` prints them.

What a scrape costs: both grouped statements read every row of their table (no index
helps an aggregate over all of it), so a scrape takes time in proportion to the number
of checkpoints, which grows by one with every step run and is never pruned; the queue
count reads only queued and running runs (by index). bench/figures.py times it on
100,000 runs of 5 steps (500,000 checkpoints): about 1.3 s on SQLite, 0.7 s on
PostgreSQL. Scrape a large store every minute or so, not every few seconds.

Escalations are counted from checkpoints, not from the runs that wait now: each step
visit that routed its run to `human_review` or `dead_letter` counts once, with the
step's outcome as its reason (low_confidence, violation, error, ...). So the count only
grows (a Prometheus counter): a run that a person approves later still counted. A
person's decisions (approved, rejected, expired) are not step visits: they count
neither in the step durations nor as escalations.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa

from runner.core.vocabulary import STOPS, Outcome, RunStatus
from runner.store.engines import place_of
from runner.store.faults import translated
from runner.store.records import now
from runner.store.tables import checkpoints, runs

# Upper bounds (seconds) of the step duration histogram's buckets; +Inf follows them.
BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# Checkpoints a person's decision writes (runner.review.desk): no step ran.
DECIDED = (Outcome.APPROVED.value, Outcome.REJECTED.value, Outcome.EXPIRED.value)
_STOPS = tuple(str(ending) for ending in STOPS)


class EngineStore(Protocol):
    """A run store on a SQLAlchemy engine (runner.store.sql.SqlStore)."""

    @property
    def url(self) -> str: ...

    @property
    def engine(self) -> sa.Engine: ...

    def queue_depth(self, at: datetime | None = None) -> tuple[int, datetime | None]: ...


@dataclass(frozen=True)
class RunCount:
    """How many runs of a flow have a status."""

    flow: str
    status: str
    count: int


@dataclass(frozen=True)
class ModelUse:
    """What a flow's runs used of their models, summed over the runs."""

    flow: str
    calls: int
    tokens: int
    cost_usd: float


@dataclass(frozen=True)
class Escalation:
    """How many visits of a step stopped their run, for one reason (the step's outcome)."""

    flow: str
    step: str
    reason: str
    count: int


@dataclass(frozen=True)
class StepFigures:
    """A step's visits: how long they took, as a histogram, and how many stopped the run.
    `buckets` holds (upper bound in seconds, visits that took at most that), cumulative,
    the last bound being infinity."""

    flow: str
    step: str
    visits: int
    seconds: float  # all visits together
    buckets: tuple[tuple[float, int], ...]
    escalations: int

    @property
    def escalation_ratio(self) -> float:
        """The share of visits that stopped the run (0 without visits)."""
        return self.escalations / self.visits if self.visits else 0.0

    def quantile(self, q: float) -> float | None:
        """The q-quantile of the duration estimated from the buckets, as Prometheus's
        histogram_quantile does: linear within its bucket, and the largest finite bound
        when it lies beyond it. None without visits."""
        if not self.visits:
            return None
        rank, lower, below = q * self.visits, 0.0, 0
        for bound, count in self.buckets:
            if count >= rank:
                if math.isinf(bound):
                    return lower
                return lower + (bound - lower) * (rank - below) / (count - below)
            lower, below = bound, count
        return lower

    def beyond(self, q: float) -> bool:
        """Whether the q-quantile lies beyond the largest finite bound."""
        finite = [count for bound, count in self.buckets if not math.isinf(bound)]
        return bool(self.visits) and q * self.visits > (finite[-1] if finite else 0)


@dataclass(frozen=True)
class Figures:
    """The figures at `at`, of one flow's runs or (flow None) of every flow's."""

    at: datetime
    flow: str | None
    runs: tuple[RunCount, ...]
    queue_depth: int  # runs a worker may claim now, of every flow
    queue_oldest_age_seconds: float  # how long the oldest of them has waited (0: none)
    steps: tuple[StepFigures, ...]
    models: tuple[ModelUse, ...]
    escalations: tuple[Escalation, ...]

    def as_json(self) -> dict[str, Any]:
        """The figures as JSON values (`runner stats --format json`)."""
        statuses: dict[str, dict[str, int]] = {}
        for item in self.runs:
            statuses.setdefault(item.flow, {})[item.status] = item.count
        return {
            "at": self.at.isoformat(),
            "flow": self.flow,
            "runs": statuses,
            "queue": {
                "depth": self.queue_depth,
                "oldest_age_seconds": self.queue_oldest_age_seconds,
            },
            "steps": [_step_json(step) for step in self.steps],
            "models": [dataclasses.asdict(use) for use in self.models],
            "escalations": [dataclasses.asdict(item) for item in self.escalations],
        }


def _step_json(step: StepFigures) -> dict[str, Any]:
    return {
        "flow": step.flow,
        "step": step.step,
        "visits": step.visits,
        "seconds": step.seconds,
        "buckets": {bound_text(bound): count for bound, count in step.buckets},
        "p50_seconds": step.quantile(0.5),
        "p95_seconds": step.quantile(0.95),
        "escalations": step.escalations,
        "escalation_ratio": step.escalation_ratio,
    }


def bound_text(bound: float) -> str:
    """A bucket's upper bound as Prometheus writes it in `le`: `0.05`, `1`, `+Inf`."""
    return "+Inf" if math.isinf(bound) else f"{bound:g}"


def collect(store: EngineStore, *, flow: str | None = None, at: datetime | None = None) -> Figures:
    """The figures of the store's runs (of `flow` only, when given) at `at` (now)."""
    at = at or now()
    depth, oldest = store.queue_depth(at)
    with translated(place_of(store.url)), store.engine.connect() as conn:
        if conn.dialect.name == "postgresql":  # both statements see one snapshot
            conn.execution_options(isolation_level="REPEATABLE READ")
        run_rows = conn.execute(_runs_query(flow)).all()
        step_rows = conn.execute(_steps_query(conn.dialect.name, flow)).all()
    steps, escalations = _steps(step_rows)
    return Figures(
        at=at,
        flow=flow,
        runs=_run_counts(run_rows),
        queue_depth=depth,
        queue_oldest_age_seconds=max(0.0, (at - oldest).total_seconds()) if oldest else 0.0,
        steps=steps,
        models=_model_use(run_rows),
        escalations=escalations,
    )


def duration_seconds(dialect: str) -> sa.ColumnElement[Any]:
    """A checkpoint's duration in seconds, to the microsecond, in the database's own
    date arithmetic: the same number on SQLite as on PostgreSQL."""
    started, finished = checkpoints.c.started_at, checkpoints.c.finished_at
    if dialect == "postgresql":
        # A double: it compares with the buckets' bounds without a cast each time.
        return sa.cast(sa.extract("epoch", finished - started), sa.Float)
    # SQLite keeps a time as text, `2026-01-01 12:00:00.050400`; its date functions
    # round that to milliseconds, which would put a step of 50.4 ms in the bucket
    # le=0.05. So: whole seconds by julianday, microseconds from the text.
    whole = sa.func.julianday(sa.func.substr(finished, 1, 19)) - sa.func.julianday(
        sa.func.substr(started, 1, 19)
    )
    micros = _micros(finished) - _micros(started)
    return sa.func.round(whole * 86400.0) + micros / 1_000_000.0


def _micros(column: sa.Column[Any]) -> sa.ColumnElement[Any]:
    return sa.cast(sa.func.substr(column, 21, 6), sa.Integer)


def _runs_query(flow: str | None) -> sa.Select[Any]:
    query = sa.select(
        runs.c.flow_name,
        runs.c.status,
        sa.func.count(),
        sa.func.sum(runs.c.llm_calls),
        sa.func.sum(runs.c.tokens),
        sa.func.sum(runs.c.cost_usd),
    ).group_by(runs.c.flow_name, runs.c.status)
    return query if flow is None else query.where(runs.c.flow_name == flow)


def _steps_query(dialect: str, flow: str | None) -> sa.Select[Any]:
    """Per flow, step and outcome: visits, their total seconds, the visits within each
    bucket, and the visits that stopped the run."""
    visits = (
        sa.select(
            runs.c.flow_name.label("flow"),
            checkpoints.c.step_id.label("step"),
            checkpoints.c.outcome.label("outcome"),
            checkpoints.c.route.label("route"),
            duration_seconds(dialect).label("seconds"),
        )
        .join(runs, runs.c.id == checkpoints.c.run_id)
        .where(checkpoints.c.outcome.not_in(DECIDED))
    )
    if flow is not None:
        visits = visits.where(runs.c.flow_name == flow)
    # Each visit's duration computed once, not once per bucket (a subquery's expression
    # would be inlined into every CASE: over twice as slow on 500,000 checkpoints).
    v = visits.cte("visits").prefix_with("MATERIALIZED")
    within = [sa.func.sum(sa.case((v.c.seconds <= bound, 1), else_=0)) for bound in BUCKETS]
    stopped = sa.func.sum(sa.case((v.c.route.in_(_STOPS), 1), else_=0))
    return sa.select(
        v.c.flow, v.c.step, v.c.outcome, sa.func.count(), sa.func.sum(v.c.seconds), stopped, *within
    ).group_by(v.c.flow, v.c.step, v.c.outcome)


def _run_counts(rows: Sequence[Sequence[Any]]) -> tuple[RunCount, ...]:
    """Every flow's count of each status, zero for a status it has no run in."""
    found = {(row[0], row[1]): int(row[2]) for row in rows}
    statuses = [str(s) for s in RunStatus]
    statuses += sorted({status for _, status in found} - set(statuses))  # a newer release's
    flows = sorted({flow for flow, _ in found})
    return tuple(RunCount(f, s, found.get((f, s), 0)) for f in flows for s in statuses)


def _model_use(rows: Sequence[Sequence[Any]]) -> tuple[ModelUse, ...]:
    use: dict[str, tuple[int, int, float]] = {}
    for row in rows:
        calls, tokens, cost = use.get(row[0], (0, 0, 0.0))
        use[row[0]] = (calls + int(row[3] or 0), tokens + int(row[4] or 0), cost + _f(row[5]))
    return tuple(ModelUse(flow, *use[flow]) for flow in sorted(use))


def _steps(rows: Iterable[Sequence[Any]]) -> tuple[tuple[StepFigures, ...], tuple[Escalation, ...]]:
    """The per-outcome rows folded into one histogram per step, and the escalations."""
    totals: dict[tuple[str, str], list[float]] = {}
    escalations = []
    for flow, step, outcome, visits, seconds, stopped, *within in rows:
        sums = totals.setdefault((flow, step), [0.0] * (3 + len(BUCKETS)))
        for i, value in enumerate((visits, seconds, stopped, *within)):
            sums[i] += _f(value)
        if stopped:
            escalations.append(Escalation(flow, step, outcome, int(stopped)))
    steps = tuple(_step(flow, step, sums) for (flow, step), sums in sorted(totals.items()))
    return steps, tuple(sorted(escalations, key=lambda e: (e.flow, e.step, e.reason)))


def _step(flow: str, step: str, sums: Sequence[float]) -> StepFigures:
    visits, seconds, stopped, *within = sums
    bounds = (*BUCKETS, math.inf)
    counts = (*(int(n) for n in within), int(visits))
    return StepFigures(
        flow, step, int(visits), seconds, tuple(zip(bounds, counts, strict=True)), int(stopped)
    )


def _f(value: Any) -> float:
    """A sum as a float: PostgreSQL sums numerics as Decimal, and an empty sum is NULL."""
    return float(value) if value is not None else 0.0


def exposition(store: EngineStore) -> tuple[bytes, str]:
    """The store's figures in Prometheus's text exposition format, and its content type,
    read afresh: a registry of its own, with one collector that calls `collect`."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    from runner.service.figures_prometheus import FiguresCollector

    registry = CollectorRegistry()
    registry.register(FiguresCollector(lambda: collect(store)))
    return generate_latest(registry), CONTENT_TYPE_LATEST
