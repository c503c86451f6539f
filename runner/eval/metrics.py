"""How good a flow's model steps and confidence gates are on labelled cases: per step the
accuracy, the coverage and the precision of what passes the gates; per gate how well its
score tells right answers from wrong ones, what each possible min would let through, and
the lowest min whose precision reaches a target with 95% confidence. Pure functions of
the records in `runner.eval.results`; `runner.eval.report` words them."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from typing import Any

from runner.eval.results import CaseResult, EvalResult, StepGrade

_TOLERANCE = 2e-10  # bisection stops when the bracket is this narrow: the bound to 1e-10


def clopper_pearson_lower(correct: int, passing: int, confidence: float = 0.95) -> float:
    """The lower end of the two-sided Clopper-Pearson interval for a precision measured as
    `correct` of `passing`: the p at which P[X >= correct | passing, p] = (1-confidence)/2."""
    if not 0 <= correct <= passing or not 0.0 < confidence < 1.0:
        raise ValueError(f"no bound for {correct} of {passing} at confidence {confidence}")
    if correct == 0:
        return 0.0
    tail = (1.0 - confidence) / 2
    if correct == passing:
        return float(tail ** (1.0 / passing))
    return _solve_lower(correct, passing, math.log(tail))


@lru_cache(maxsize=1 << 16)
def _solve_lower(k: int, n: int, log_tail: float) -> float:
    """Bisection on p in [0, k/n]: the upper tail grows with p, and at p = k/n (the median)
    it is at least a half, above any tail sought."""
    log_choose = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    ratios = [(n - j) / (j + 1) for j in range(k, n)]  # term j+1 / term j, without p
    low, high = 0.0, k / n
    while high - low > _TOLERANCE:
        p = (low + high) / 2
        if _log_upper_tail(k, n, p, log_choose, ratios) < log_tail:
            low = p
        else:
            high = p
    return (low + high) / 2


def _log_upper_tail(k: int, n: int, p: float, log_choose: float, ratios: list[float]) -> float:
    """log P[X >= k] for X ~ Binomial(n, p), 0 < p <= k/n < 1: the first term in log
    space, the rest summed relative to it until they no longer count."""
    odds = p / (1.0 - p)
    total = term = 1.0
    for ratio in ratios:
        term *= ratio * odds
        total += term
        if term < total * 1e-15:
            break
    return log_choose + k * math.log(p) + (n - k) * math.log1p(-p) + math.log(total)


def auroc(right: Sequence[float | None], wrong: Sequence[float | None]) -> float | None:
    """The chance that a right answer scores above a wrong one (ties count half); None when
    either side is empty. A missing score (None) counts as the lowest score."""
    if not right or not wrong:
        return None
    labelled = sorted(
        [(_rank_key(s), True) for s in right] + [(_rank_key(s), False) for s in wrong]
    )
    wins, wrong_below, i = 0.0, 0, 0
    while i < len(labelled):
        j = i
        while j < len(labelled) and labelled[j][0] == labelled[i][0]:
            j += 1
        tied_right = sum(is_right for _, is_right in labelled[i:j])
        tied_wrong = j - i - tied_right
        wins += tied_right * (wrong_below + tied_wrong / 2)
        wrong_below += tied_wrong
        i = j
    return wins / (len(right) * len(wrong))


def _rank_key(score: float | None) -> float:
    return -math.inf if score is None else score


@dataclass(frozen=True)
class RiskRow:
    """One line of a gate's risk-coverage table: what would pass with the gate's min at
    `min` and the step's other gates at their current mins."""

    min: float
    passing: int
    correct: int
    coverage: float  # passing / answers that reached the step
    lower_bound: float  # Clopper-Pearson lower bound of the precision (0.0: none pass)

    @property
    def precision(self) -> float | None:
        """Correct among passing (1 - risk); None when nothing passes."""
        return self.correct / self.passing if self.passing else None

    def to_json(self) -> dict[str, Any]:
        return {
            "min": self.min,
            "coverage": self.coverage,
            "precision": self.precision,
            "passing": self.passing,
            "correct": self.correct,
            "lower_bound": self.lower_bound,
        }


@dataclass(frozen=True)
class GateFigures:
    """One confidence gate of a step, measured: how well its score ranks answers, and its
    risk-coverage table over every min worth trying (each observed score and the current
    min), ascending, with lower bounds at `confidence`."""

    step: str
    gate: str
    method: str
    min: float | None  # the current min; None when no answer recorded this gate
    auroc: float | None  # None when every answer is right, or every one wrong
    table: tuple[RiskRow, ...]
    target_precision: float
    confidence: float

    def lowest_min(self, target_precision: float, confidence: float = 0.95) -> float | None:
        """The lowest min whose passing answers have a precision whose lower bound reaches
        `target_precision`, the other gates held at their current mins; None if none does."""
        row = self._lowest_row(target_precision, confidence)
        return None if row is None else row.min

    @property
    def recommended(self) -> RiskRow | None:
        """The row at the lowest min for the target precision; None: unreachable."""
        return self._lowest_row(self.target_precision, self.confidence)

    @property
    def current(self) -> RiskRow | None:
        """The row at the current min."""
        return next((row for row in self.table if row.min == self.min), None)

    @property
    def best(self) -> RiskRow | None:
        """The row with the highest lower bound (the most passing, then the lowest min,
        among equals): the most this gate can promise."""
        return max(self.table, key=lambda row: (row.lower_bound, row.passing), default=None)

    def _lowest_row(self, target_precision: float, confidence: float) -> RiskRow | None:
        for row in self.table:
            bound = row.lower_bound
            if confidence != self.confidence:
                bound = clopper_pearson_lower(row.correct, row.passing, confidence)
            if bound >= target_precision:
                return row
        return None

    def to_json(self) -> dict[str, Any]:
        recommended, best = self.recommended, self.best
        return {
            "gate": self.gate,
            "method": self.method,
            "min": self.min,
            "auroc": self.auroc,
            "target_precision": self.target_precision,
            "confidence": self.confidence,
            "lowest_min": recommended.min if recommended else None,
            "at_lowest_min": recommended.to_json() if recommended else None,
            "best": best.to_json() if best else None,
            "table": [row.to_json() for row in self.table],
        }


@dataclass(frozen=True)
class StepFigures:
    """One graded step over all cases, its gates at their current mins."""

    step: str
    cases: int  # cases that grade this step
    reached: int  # of those, the runs that got as far as its answer
    correct: int
    passing: int  # answers that passed every gate
    passing_correct: int
    gates: tuple[GateFigures, ...]

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.reached if self.reached else None

    @property
    def coverage(self) -> float | None:
        """Share of the answers that pass every gate."""
        return self.passing / self.reached if self.reached else None

    @property
    def precision(self) -> float | None:
        """Correct among the answers that pass; None when nothing passes."""
        return self.passing_correct / self.passing if self.passing else None

    @property
    def escalation_rate(self) -> float | None:
        """Share of the answers that failed a gate."""
        return (self.reached - self.passing) / self.reached if self.reached else None

    def headline(self) -> dict[str, float | None]:
        """The figures a comparison sets side by side."""
        return {
            "cases": self.cases,
            "reached": self.reached,
            "accuracy": self.accuracy,
            "coverage": self.coverage,
            "precision": self.precision,
            "escalation_rate": self.escalation_rate,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            **self.headline(),
            "correct": self.correct,
            "passing": self.passing,
            "passing_correct": self.passing_correct,
            "gates": [gate.to_json() for gate in self.gates],
        }


@dataclass(frozen=True)
class CaseTotals:
    """What the cases cost, over every case of the data file."""

    cases: int
    cost_per_case_usd: float | None  # mean; None when some case's cost is unknown
    unpriced_cases: int  # cases run on a model without a known price
    latency_ms: float | None  # the mean of each case's model latency
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    model_calls: int
    cached_calls: int

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class Figures:
    """Everything measured on one evaluation."""

    steps: tuple[StepFigures, ...]
    totals: CaseTotals
    target_precision: float
    confidence: float

    def step(self, name: str) -> StepFigures | None:
        return next((s for s in self.steps if s.step == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "target_precision": self.target_precision,
            "confidence": self.confidence,
            "totals": self.totals.to_json(),
            "steps": [step.to_json() for step in self.steps],
        }


def measure(result: EvalResult, target_precision: float = 0.9, confidence: float = 0.95) -> Figures:
    """Every figure of an evaluation; each gate's recommended min is the lowest one that
    reaches `target_precision` at `confidence`."""
    steps = tuple(
        _step_figures(result, step, target_precision, confidence) for step in result.steps
    )
    return Figures(steps, case_totals(result.cases), target_precision, confidence)


def answer_scores(
    result: EvalResult, step: str, gate: str
) -> tuple[list[float | None], list[float | None]]:
    """A gate's scores of the step's right answers and of its wrong ones."""
    reached = [grade for grade in _grades(result, step) if grade.reached]
    return _scores(reached, gate, True), _scores(reached, gate, False)


def passed_wrong(result: EvalResult, step: str) -> list[str]:
    """The ids of the cases whose answer at `step` was wrong yet passed every gate: the
    mistakes that reach no reviewer."""
    graded = [(case.id, case.grade(step)) for case in result.cases]
    return [id_ for id_, grade in graded if grade and grade.passed and not grade.correct]


def case_totals(cases: Sequence[CaseResult]) -> CaseTotals:
    """Cost, latency and model calls per case that ran (a refused input asked nothing)."""
    ran = [case for case in cases if case.ending != "refused"]
    costs = [case.cost_usd for case in ran]
    priced = [cost for cost in costs if cost is not None]
    latencies = sorted(case.latency_ms for case in ran)
    return CaseTotals(
        cases=len(cases),
        cost_per_case_usd=sum(priced) / len(ran) if ran and len(priced) == len(ran) else None,
        unpriced_cases=len(costs) - len(priced),
        latency_ms=sum(latencies) / len(latencies) if latencies else None,
        latency_p50_ms=_quantile(latencies, 0.50),
        latency_p95_ms=_quantile(latencies, 0.95),
        model_calls=sum(case.model_calls for case in cases),
        cached_calls=sum(case.cached_calls for case in cases),
    )


def _quantile(ordered: Sequence[float], q: float) -> float | None:
    """Linear between the two nearest ranks (numpy's default)."""
    if not ordered:
        return None
    place = q * (len(ordered) - 1)
    below = math.floor(place)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (place - below)


def _grades(result: EvalResult, step: str) -> list[StepGrade]:
    return [grade for case in result.cases if (grade := case.grade(step)) is not None]


def _scores(reached: Sequence[StepGrade], gate: str, correct: bool) -> list[float | None]:
    return [_score(grade, gate) for grade in reached if grade.correct == correct]


def _score(grade: StepGrade, gate: str) -> float | None:
    verdict = grade.gate(gate)
    return None if verdict is None else verdict.score


def _step_figures(
    result: EvalResult, step: str, target_precision: float, confidence: float
) -> StepFigures:
    grades = _grades(result, step)
    reached = [grade for grade in grades if grade.reached]
    names = result.gates.get(step) or tuple(
        dict.fromkeys(verdict.name for grade in reached for verdict in grade.gates)
    )
    gates = tuple(
        _gate_figures(step, name, reached, target_precision, confidence) for name in names
    )
    return StepFigures(
        step=step,
        cases=len(grades),
        reached=len(reached),
        correct=sum(grade.correct for grade in reached),
        passing=sum(grade.passed for grade in reached),
        passing_correct=sum(grade.passed and grade.correct for grade in reached),
        gates=gates,
    )


def _gate_figures(
    step: str, gate: str, reached: Sequence[StepGrade], target_precision: float, confidence: float
) -> GateFigures:
    verdicts = [v for grade in reached if (v := grade.gate(gate)) is not None]
    current = verdicts[0].min if verdicts else None
    return GateFigures(
        step=step,
        gate=gate,
        method=verdicts[0].method if verdicts else gate.partition("#")[0],
        min=current,
        auroc=auroc(_scores(reached, gate, True), _scores(reached, gate, False)),
        table=_risk_table(reached, gate, current, confidence),
        target_precision=target_precision,
        confidence=confidence,
    )


def _risk_table(
    reached: Sequence[StepGrade], gate: str, current: float | None, confidence: float
) -> tuple[RiskRow, ...]:
    """A row per min worth trying. An answer passes at min t when its score for this gate
    is at least t and the step's other gates passed it."""
    if not reached:
        return ()
    scores = [_score(grade, gate) for grade in reached]
    mins = sorted(
        {s for s in scores if s is not None} | ({current} if current is not None else set())
    )
    eligible = sorted(
        (score, grade.correct)
        for score, grade in zip(scores, reached, strict=True)
        if score is not None and all(v.passed for v in grade.gates if v.name != gate)
    )
    eligible_scores = [score for score, _ in eligible]
    correct_from = [*accumulate((c for _, c in reversed(eligible)), initial=0)][::-1]
    rows = []
    for t in mins:
        first = bisect_left(eligible_scores, t)
        passing, correct = len(eligible) - first, correct_from[first]
        bound = clopper_pearson_lower(correct, passing, confidence)
        rows.append(RiskRow(t, passing, correct, passing / len(reached), bound))
    return tuple(rows)
