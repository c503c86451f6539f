"""`runner stats`: the service's figures for a person (a table per section) or, with
`--format json`, for a script. The same figures `runner serve` gives Prometheus at
/metrics (runner.service.figures)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any, TextIO

from runner.cli.output import add_store_options, open_store, table
from runner.core.vocabulary import ExitCode

if TYPE_CHECKING:
    from runner.service.figures import Figures, StepFigures


def add_stats_command(commands: Any) -> None:
    """Add `stats` to the `runner` parser."""
    stats = commands.add_parser(
        "stats", help="figures of the stored runs: statuses, queue, step durations, cost"
    )
    stats.add_argument("--flow", metavar="NAME", help="only this flow's runs")
    add_store_options(stats)
    stats.set_defaults(command=cmd_stats)


def cmd_stats(args: argparse.Namespace, out: TextIO) -> int:
    from runner.service.figures import collect

    figures = collect(open_store(args), flow=args.flow)
    if args.format == "json":
        json.dump(figures.as_json(), out, indent=2)
        out.write("\n")
    else:
        print_figures(figures, out)
    return ExitCode.OK


def print_figures(figures: Figures, out: TextIO) -> None:
    """Each section as a table; a section with nothing in it is left out."""
    if not figures.runs:
        print(f"no runs of flow {figures.flow}" if figures.flow else "no runs", file=out)
    else:
        _runs(figures, out)
    print(_queue(figures), file=out)
    if figures.steps:
        print("\nsteps (p50 and p95 estimated from the duration histogram's buckets)", file=out)
        table(_step_rows(figures.steps), out)
    if any(use.calls for use in figures.models):
        print("\nmodel use", file=out)
        rows = [("FLOW", "CALLS", "TOKENS", "COST USD")]
        rows += [
            (u.flow, f"{u.calls:,}", f"{u.tokens:,}", f"{u.cost_usd:.4f}") for u in figures.models
        ]
        table(rows, out)
    if figures.escalations:
        print("\nescalations (visits that stopped their run: review or dead letter)", file=out)
        rows = [("FLOW", "STEP", "REASON", "COUNT")]
        rows += [(e.flow, e.step, e.reason, f"{e.count:,}") for e in figures.escalations]
        table(rows, out)


def _runs(figures: Figures, out: TextIO) -> None:
    """A row per flow, a column per status that any run has."""
    counts: dict[str, dict[str, int]] = {}
    for item in figures.runs:
        counts.setdefault(item.flow, {})[item.status] = item.count
    statuses = [s for s in dict.fromkeys(i.status for i in figures.runs) if _any(figures, s)]
    print("runs", file=out)
    rows = [("FLOW", *(s.upper() for s in statuses), "TOTAL")]
    for flow, by_status in counts.items():
        shown = [f"{by_status[s]:,}" for s in statuses]
        rows.append((flow, *shown, f"{sum(by_status.values()):,}"))
    table(rows, out)


def _any(figures: Figures, status: str) -> bool:
    return any(item.count for item in figures.runs if item.status == status)


def _queue(figures: Figures) -> str:
    scope = " (every flow)" if figures.flow else ""
    if not figures.queue_depth:
        return f"\nqueue{scope}: empty"
    waiting = f"{figures.queue_depth:,} run{'s' * (figures.queue_depth != 1)}"
    oldest = seconds_text(figures.queue_oldest_age_seconds)
    return f"\nqueue{scope}: {waiting} waiting to be claimed, the oldest for {oldest}"


def _step_rows(steps: tuple[StepFigures, ...]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("FLOW", "STEP", "VISITS", "MEAN", "P50", "P95", "ESCALATED")]
    for step in steps:
        mean = seconds_text(step.seconds / step.visits) if step.visits else "-"
        stopped = f"{step.escalations:,} ({step.escalation_ratio:.0%})"
        rows.append(
            (step.flow, step.step, f"{step.visits:,}", mean, _p(step, 0.5), _p(step, 0.95), stopped)
        )
    return rows


def _p(step: StepFigures, q: float) -> str:
    """The estimated q-quantile; `>5.0 min` when it lies beyond the last finite bucket."""
    value = step.quantile(q)
    if value is None:
        return "-"
    return f">{seconds_text(value)}" if step.beyond(q) else seconds_text(value)


def seconds_text(seconds: float) -> str:
    """`25 ms`, `4.2 s`, `3.5 min`, `2.1 h`, `3.2 days`."""
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} days"
