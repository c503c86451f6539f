"""An evaluation's figures as a report: JSON for tools, Markdown for a pull request, a
self-contained HTML page (inline CSS and SVG, nothing fetched, nothing run) for a person.
A report is first a list of blocks (headings, sentences, tables, pictures); each format
writes the same blocks. No figure is computed here: they come from `runner.eval.metrics`
and `runner.eval.comparison`."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from functools import partial
from typing import Any

from runner.core.text import plural
from runner.eval import charts
from runner.eval.comparison import Comparison, Movement, StepComparison
from runner.eval.metrics import (
    Figures,
    GateFigures,
    RiskRow,
    StepFigures,
    answer_scores,
    passed_wrong,
)
from runner.eval.page import (
    Block,
    Heading,
    Pictures,
    Sentence,
    Table,
    floored,
    html_page,
    markdown,
    ms,
    percent,
    share,
    threshold,
    usd,
)
from runner.eval.results import CaseResult, EvalResult

FORMATS = ("json", "markdown", "html")
MAX_TABLE_ROWS = 12  # a risk-coverage table is thinned to about this many rows
MAX_LISTED = 40  # case ids listed in a sentence (the JSON report has them all)


def render(result: EvalResult, figures: Figures, fmt: str) -> str:
    """The report of one evaluation in `fmt` (json, markdown or html)."""
    if fmt == "json":
        return json.dumps({**_about(result), **figures.to_json()}, indent=2)
    title = f"Evaluation of {result.flow}"
    return _write(title, fmt, _evaluation_blocks(result, figures))


def render_comparison(
    baseline: EvalResult,
    current: EvalResult,
    comparison: Comparison,
    fmt: str,
    max_regression: float | None = None,
) -> str:
    """The report of a comparison in `fmt`; with `max_regression`, it lists the figures
    that fell by more."""
    regressions = None if max_regression is None else comparison.regressions(max_regression)
    if fmt == "json":
        about = {"baseline": _about(baseline), "current": _about(current)}
        return json.dumps({**about, **comparison.to_json(), "regressions": regressions}, indent=2)
    title = f"{current.flow}: against {baseline.revision or baseline.path}"
    blocks = _comparison_blocks(baseline, current, comparison, regressions, max_regression)
    return _write(title, fmt, blocks)


def _about(result: EvalResult) -> dict[str, Any]:
    return {
        "flow": result.flow,
        "path": result.path,
        "revision": result.revision,
        "data": result.data,
        "cases": len(result.cases),
        "seconds": result.seconds,
        "not_run": [
            {"index": c.index, "id": c.id, "ending": c.ending, "error": c.error}
            for c in _not_run(result)
        ],
    }


def _not_run(result: EvalResult) -> list[CaseResult]:
    """The cases that could not run: their input was refused, ..."""
    return [c for c in result.cases if c.error is not None or c.ending == "refused"]


def _write(title: str, fmt: str, blocks: list[Block]) -> str:
    if fmt == "markdown":
        return markdown(title, blocks)
    if fmt == "html":
        return html_page(title, blocks)
    raise ValueError(f"no report format {fmt!r}: use one of {', '.join(FORMATS)}")


# --- an evaluation ----------------------------------------------------------------------


def _evaluation_blocks(result: EvalResult, figures: Figures) -> list[Block]:
    revision = f" at {result.revision}" if result.revision else ""
    blocks: list[Block] = [
        Sentence(
            f"{result.path}{revision} on {result.data}: {plural(len(result.cases), 'case')}"
            f" in {result.seconds:.1f} s."
        ),
        Heading(2, "Per case"),
        _totals_table(figures),
        *_not_run_blocks(result),
    ]
    for step in figures.steps:
        blocks += [Heading(2, step.step), _step_table(step)]
        mistakes = passed_wrong(result, step.step)
        if mistakes:
            blocks.append(
                Sentence(f"Wrong yet passed every gate ({len(mistakes)}): {_listed(mistakes)}")
            )
        for gate in step.gates:
            blocks += _gate_blocks(result, gate)
    return blocks


def _not_run_blocks(result: EvalResult) -> list[Block]:
    not_run = _not_run(result)
    if not not_run:
        return []
    rows = tuple((c.id, c.ending, c.error or "") for c in not_run[:MAX_LISTED])
    blocks: list[Block] = [
        Heading(2, f"Not run ({len(not_run)})"),
        Table(("case", "ending", "why"), rows),
    ]
    if len(not_run) > MAX_LISTED:
        blocks.append(Sentence(f"And {len(not_run) - MAX_LISTED} more: the JSON report lists all."))
    return blocks


def _totals_table(figures: Figures) -> Table:
    totals = figures.totals
    cost = usd(totals.cost_per_case_usd)
    if totals.unpriced_cases:
        cost += f" ({plural(totals.unpriced_cases, 'case')} without a price)"
    header = (
        "cases",
        "cost per case",
        "model latency",
        "p50",
        "p95",
        "model calls",
        "cached answers",
    )
    row = (
        str(totals.cases),
        cost,
        ms(totals.latency_ms),
        ms(totals.latency_p50_ms),
        ms(totals.latency_p95_ms),
        str(totals.model_calls),
        str(totals.cached_calls),
    )
    return Table(header, (row,))


def _step_table(step: StepFigures) -> Table:
    header = ("cases", "reached", "accuracy", "coverage", "precision of what passes", "escalated")
    row = (
        str(step.cases),
        str(step.reached),
        percent(step.accuracy),
        percent(step.coverage),
        percent(step.precision),
        percent(step.escalation_rate),
    )
    return Table(header, (row,))


def _gate_blocks(result: EvalResult, gate: GateFigures) -> list[Block]:
    auroc = (
        "none (every answer right, or every one wrong)"
        if gate.auroc is None
        else f"{gate.auroc:.3f}"
    )
    current = "unknown" if gate.min is None else threshold(gate.min)
    blocks: list[Block] = [
        Heading(3, f"{gate.step} / {gate.gate}"),
        Sentence(recommendation(gate)),
        Sentence(f"Method {gate.method}, current min {current}, AUROC {auroc}."),
    ]
    if not gate.table:
        return blocks
    right, wrong = answer_scores(result, gate.step, gate.gate)
    blocks += [_risk_table(gate), _gate_pictures(gate, right, wrong)]
    return blocks


def recommendation(gate: GateFigures) -> str:
    """One sentence: the gate's lowest min for the target precision, or how far off it is."""
    head = (
        f"{gate.step} / {gate.gate}: lowest min for {share(gate.target_precision)} precision"
        f" ({share(gate.confidence)} lower bound): "
    )
    row, best = gate.recommended, gate.best
    if row is not None:
        return head + f"{threshold(row.min)} (coverage {share(row.coverage)})"
    if best is None:
        return head + "unreachable: no answer reached the step"
    passing = plural(best.passing, "answer")
    return (
        head
        + f"unreachable: at best {floored(best.lower_bound)} (lower bound) with {passing} passing"
    )


def _marks(gate: GateFigures) -> list[tuple[str, RiskRow]]:
    """The rows worth pointing at: the current min, and the recommended min or, when the
    target is unreachable, the best the gate can do."""
    marks = []
    if gate.current is not None:
        marks.append(("current min", gate.current))
    if gate.recommended is not None:
        marks.append((f"lowest min for {share(gate.target_precision)}", gate.recommended))
    elif gate.best is not None:
        marks.append(("best lower bound", gate.best))
    return marks


def _risk_table(gate: GateFigures) -> Table:
    marks = _marks(gate)
    header = ("min", "coverage", "precision", "passing", "correct", "lower bound", "")
    rows = tuple(
        (
            threshold(row.min),
            percent(row.coverage),
            percent(row.precision),
            str(row.passing),
            str(row.correct),
            floored(row.lower_bound),
            ", ".join(label for label, marked in marks if marked == row),
        )
        for row in thin(gate.table, [row for _, row in marks])
    )
    return Table(header, rows)


def thin(
    rows: Sequence[RiskRow], keep: Collection[RiskRow], limit: int = MAX_TABLE_ROWS
) -> list[RiskRow]:
    """About `limit` rows spread evenly from first to last, and every row in `keep`."""
    if len(rows) <= limit:
        return list(rows)
    kept = {i for i, row in enumerate(rows) if row in keep}
    spots = max(limit - len(kept), 2)
    spacing = (len(rows) - 1) / (spots - 1)
    chosen = kept | {round(n * spacing) for n in range(spots)}
    return [rows[i] for i in sorted(chosen)]


def _gate_pictures(
    gate: GateFigures, right: list[float | None], wrong: list[float | None]
) -> Pictures:
    marks = _marks(gate)
    mins = [(label, row.min) for label, row in marks]
    return Pictures(
        f"{gate.step} / {gate.gate}: risk-coverage curve; scores of right and wrong answers",
        (
            partial(
                charts.risk_coverage_svg, [("precision", gate.table)], marks, gate.target_precision
            ),
            partial(charts.score_histogram_svg, right, wrong, mins),
        ),
    )


# --- a comparison -----------------------------------------------------------------------


def _comparison_blocks(
    baseline: EvalResult,
    current: EvalResult,
    comparison: Comparison,
    regressions: list[str] | None,
    max_regression: float | None,
) -> list[Block]:
    blocks: list[Block] = [
        Sentence(
            f"Baseline: {baseline.path} at {baseline.revision or 'no revision'}; current: "
            f"{current.path}; data: {current.data}."
        ),
        Sentence(
            f"Recommended mins: the lowest reaching {share(comparison.current.target_precision)}"
            f" precision ({share(comparison.current.confidence)} lower bound)."
        ),
    ]
    if regressions is not None:
        allowed = f"{(max_regression or 0.0) * 100:g} points"
        blocks += [Heading(2, "Regressions")]
        blocks += [Sentence(text) for text in regressions] or [Sentence(f"None beyond {allowed}.")]
    totals = Table(
        ("figure", "baseline", "current", "change"), tuple(_movement_rows(comparison.totals()))
    )
    blocks += [Heading(2, "Per case"), totals]
    for step in comparison.steps:
        blocks += _step_comparison_blocks(comparison, step)
    endings = [c for c in comparison.changes if c.step is None]
    if endings:
        listed = _listed([f"{c.case} ({c.before}→{c.after})" for c in endings])
        blocks += [Heading(2, "Endings changed"), Sentence(listed)]
    if comparison.unmatched_cases:
        blocks.append(Sentence(f"{plural(comparison.unmatched_cases, 'case')} on one side only."))
    return blocks


def _step_comparison_blocks(comparison: Comparison, step: StepComparison) -> list[Block]:
    rows = _movement_rows(step.figures())
    for gate, movements in step.gates().items():
        rows += _movement_rows(movements, f"{gate}: ")
    table = Table(("figure", "baseline", "current", "change"), tuple(rows))
    blocks: list[Block] = [Heading(2, step.step), table]
    for kind in ("correct→wrong", "wrong→correct", "passed→escalated", "escalated→passed"):
        cases = comparison.changed(kind, step.step)
        if cases:
            blocks.append(Sentence(f"{kind} ({len(cases)}): {_listed(cases)}"))
    blocks += _comparison_pictures(step, comparison.current.target_precision)
    return blocks


def _comparison_pictures(step: StepComparison, target_precision: float) -> list[Block]:
    sides = [("baseline", step.baseline), ("current", step.current)]
    names = dict.fromkeys(gate.gate for _, side in sides if side for gate in side.gates)
    pictures: list[Block] = []
    for name in names:
        curves = [
            (label, gate.table)
            for label, side in sides
            for gate in (side.gates if side else ())
            if gate.gate == name
        ]
        draw = partial(charts.risk_coverage_svg, curves, [], target_precision)
        caption = f"{step.step} / {name}: risk-coverage curves, baseline and current"
        pictures.append(Pictures(caption, (draw,)))
    return pictures


def _movement_rows(movements: dict[str, Movement], prefix: str = "") -> list[tuple[str, ...]]:
    return [_movement_row(name, movement, prefix) for name, movement in movements.items()]


def _movement_row(name: str, movement: Movement, prefix: str) -> tuple[str, ...]:
    value, change = _WORDING[_kind(name)]
    before, after, delta = movement.baseline, movement.current, movement.delta
    return (
        prefix + _LABELS.get(name, name),
        "-" if before is None else value(before),
        "-" if after is None else value(after),
        "-" if delta is None else change(delta),
    )


def _kind(name: str) -> str:
    if name in ("accuracy", "coverage", "precision", "escalation_rate"):
        return "rate"
    return next((kind for kind in ("usd", "ms", "auroc", "min") if name.endswith(kind)), "count")


_LABELS = {
    "precision": "precision of what passes",
    "escalation_rate": "escalated",
    "cost_per_case_usd": "cost per case",
    "unpriced_cases": "cases without a price",
    "latency_ms": "model latency, mean",
    "latency_p50_ms": "model latency, p50",
    "latency_p95_ms": "model latency, p95",
    "model_calls": "model calls",
    "cached_calls": "cached answers",
    "min": "current min",
    "auroc": "AUROC",
    "lowest_min": "lowest min for the target",
}


def _listed(ids: Sequence[str], limit: int = MAX_LISTED) -> str:
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


# How a comparison words a figure of each kind, and its change.
_WORDING: dict[str, tuple[Callable[[float], str], Callable[[float], str]]] = {
    "rate": (percent, lambda delta: f"{delta * 100:+.1f} points"),
    "usd": (usd, lambda delta: f"{delta:+.4g} USD"),
    "ms": (ms, lambda delta: f"{delta:+.0f} ms"),
    "auroc": (lambda value: f"{value:.3f}", lambda delta: f"{delta:+.3f}"),
    "min": (threshold, lambda delta: f"{delta:+.4g}"),
    "count": (lambda value: f"{value:g}", lambda delta: f"{delta:+g}"),
}
