"""The figures as Prometheus metric families (prometheus_client, an extra of `serve`).

`FiguresCollector` is registered on a registry of its own (see figures.exposition); at
each scrape it reads the figures afresh and yields them as families named `runner_...`.
It keeps nothing between scrapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

if TYPE_CHECKING:
    from runner.service.figures import Figures


class FiguresCollector:
    """Yields the figures `read` returns as metric families (a prometheus_client
    Collector)."""

    def __init__(self, read: Callable[[], Figures]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        figures = self._read()
        yield _runs(figures)
        yield from _queue(figures)
        yield _durations(figures)
        yield from _model_use(figures)
        yield from _escalations(figures)


def _runs(figures: Figures) -> Metric:
    family = GaugeMetricFamily(
        "runner_runs",
        "Runs in the store, by status (queued, running, completed, escalated: waiting for "
        "review, failed: in the dead-letter queue, rejected, archived) and flow.",
        labels=["status", "flow"],
    )
    for item in figures.runs:
        family.add_metric([item.status, item.flow], item.count)
    return family


def _queue(figures: Figures) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "runner_queue_depth",
        "Runs a worker may claim now: queued runs that are due, and interrupted runs.",
        value=figures.queue_depth,
    )
    yield GaugeMetricFamily(
        "runner_queue_oldest_age_seconds",
        "Seconds since the oldest run a worker may claim was made (0 when none waits).",
        value=figures.queue_oldest_age_seconds,
    )


def _durations(figures: Figures) -> Metric:
    family = HistogramMetricFamily(
        "runner_step_duration_seconds",
        "Seconds a step took, from its start to its checkpoint, by flow and step "
        "(people's decisions left out).",
        labels=["flow", "step"],
    )
    for step in figures.steps:
        buckets = [(_le(bound), count) for bound, count in step.buckets]
        family.add_metric([step.flow, step.step], buckets, sum_value=step.seconds)
    return family


def _le(bound: float) -> str:
    """A bucket's bound as Prometheus clients write `le`: `0.05`, `1.0`, `+Inf`."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _model_use(figures: Figures) -> Iterator[Metric]:
    calls = CounterMetricFamily(
        "runner_model_calls", "Model calls made by the runs of a flow.", labels=["flow"]
    )
    tokens = CounterMetricFamily(
        "runner_model_tokens",
        "Tokens (prompt and completion) used by the runs of a flow.",
        labels=["flow"],
    )
    cost = CounterMetricFamily(
        "runner_model_cost_usd",
        "What the model calls of a flow's runs cost, in US dollars.",
        labels=["flow"],
    )
    for use in figures.models:
        calls.add_metric([use.flow], use.calls)
        tokens.add_metric([use.flow], use.tokens)
        cost.add_metric([use.flow], use.cost_usd)
    yield from (calls, tokens, cost)


def _escalations(figures: Figures) -> Iterator[Metric]:
    counts = CounterMetricFamily(
        "runner_escalations",
        "Step visits that stopped their run for human review or in the dead-letter queue, "
        "by flow, step and reason (the step's outcome: low_confidence, violation, error, ...).",
        labels=["flow", "step", "reason"],
    )
    for item in figures.escalations:
        counts.add_metric([item.flow, item.step, item.reason], item.count)
    ratio = GaugeMetricFamily(
        "runner_escalation_ratio",
        "The share of a step's visits that stopped their run (escalations / visits).",
        labels=["flow", "step"],
    )
    for step in figures.steps:
        ratio.add_metric([step.flow, step.step], step.escalation_ratio)
    yield from (counts, ratio)
