"""The figures of an evaluation, each checked against a computation written out the
obvious way in the test: AUROC from every right/wrong pair, the risk-coverage table by
filtering the answers at each min, Clopper-Pearson against known values and against its
own definition (the binomial tail at the bound is alpha/2)."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from typing import Any

import pytest

from runner.eval.comparison import compare
from runner.eval.metrics import (
    GateFigures,
    answer_scores,
    auroc,
    case_totals,
    clopper_pearson_lower,
    measure,
    passed_wrong,
)
from runner.eval.results import CaseResult, EvalResult, GateScore, StepGrade

STEP = "classify"


def verdict(score: float | None, min_: float = 0.5, name: str = "logprobs") -> GateScore:
    passed = score is not None and score >= min_
    return GateScore(name, name.partition("#")[0], score, min_, passed)


def grade(correct: bool, *gates: GateScore, step: str = STEP, reached: bool = True) -> StepGrade:
    got = ({"label": "a" if correct else "b"}) if reached else {}
    return StepGrade(step, {"label": "a"}, got, reached, gates)


def case(index: int, *grades: StepGrade, ending: str = "done", **costs: Any) -> CaseResult:
    return CaseResult(index, f"case-{index}", ending, grades, **costs)


def evaluation(*cases: CaseResult, gates: dict[str, tuple[str, ...]] | None = None) -> EvalResult:
    names = {STEP: ("logprobs",)} if gates is None else gates
    return EvalResult("support", "flows/support.yaml", None, "cases.jsonl", cases, names)


def scored(pairs: Sequence[tuple[float | None, bool]], min_: float = 0.5) -> EvalResult:
    """One case per (score, correct) pair, the step gated by one logprobs gate."""
    return evaluation(
        *(case(i, grade(ok, verdict(s, min_))) for i, (s, ok) in enumerate(pairs, start=1))
    )


def only_gate(result: EvalResult, target: float = 0.9) -> GateFigures:
    figures = measure(result, target_precision=target)
    (step,) = figures.steps
    (gate,) = step.gates
    return gate


# --- Clopper-Pearson --------------------------------------------------------------------


def binomial_tail(k: int, n: int, p: float) -> float:
    """P[X >= k] for X ~ Binomial(n, p), term by term."""
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))


def test_clopper_pearson_known_values() -> None:
    assert clopper_pearson_lower(8, 10) == pytest.approx(0.4439045376, abs=1e-9)
    assert clopper_pearson_lower(0, 10) == 0.0
    assert clopper_pearson_lower(0, 0) == 0.0
    for n in (1, 2, 7, 30, 1000, 100_000):
        assert clopper_pearson_lower(n, n) == pytest.approx(0.025 ** (1 / n), abs=1e-12)
    assert clopper_pearson_lower(5, 5, confidence=0.9) == pytest.approx(0.05 ** (1 / 5))


@pytest.mark.parametrize(("k", "n"), [(1, 2), (1, 10), (8, 10), (29, 31), (50, 60), (3, 60)])
def test_clopper_pearson_solves_its_definition(k: int, n: int) -> None:
    """At the bound, P[X >= k] is exactly alpha/2; a hair either side, it is not."""
    low = clopper_pearson_lower(k, n)
    assert binomial_tail(k, n, low) == pytest.approx(0.025, rel=1e-7)
    assert binomial_tail(k, n, low - 1e-6) < 0.025 < binomial_tail(k, n, low + 1e-6)


def test_clopper_pearson_matches_the_beta_quantile() -> None:
    from scipy import stats  # a test dependency: an independent implementation

    pairs = [(1, 1), (1, 2), (8, 10), (37, 50), (999, 1000), (1, 100_000), (3, 100_000)]
    pairs += [(50_000, 100_000), (99_000, 100_000), (99_999, 100_000)]
    for k, n in pairs:
        for confidence in (0.9, 0.95, 0.99):
            alpha = 1 - confidence
            expected = stats.beta.ppf(alpha / 2, k, n - k + 1)
            assert clopper_pearson_lower(k, n, confidence) == pytest.approx(expected, abs=1e-9)


def test_clopper_pearson_refuses_impossible_counts() -> None:
    for k, n, confidence in [(3, 2, 0.95), (-1, 2, 0.95), (1, 2, 1.0), (1, 2, 0.0)]:
        with pytest.raises(ValueError):
            clopper_pearson_lower(k, n, confidence)


def test_a_thousand_distinct_scores_give_a_row_and_a_bound_each() -> None:
    """Every answer a distinct score: the table has a row, and a bound, per answer (its
    speed is measured in bench/eval.py, not here)."""
    rng = random.Random(7)
    pairs = [(rng.random(), rng.random() < 0.8) for _ in range(1000)]
    gate = only_gate(scored(pairs))
    assert len(gate.table) >= 1000
    assert all(0.0 <= row.lower_bound <= 1.0 for row in gate.table)


# --- AUROC ------------------------------------------------------------------------------


def auroc_by_pairs(right: list[float | None], wrong: list[float | None]) -> float:
    low = -math.inf

    def key(s: float | None) -> float:
        return low if s is None else s

    wins = sum(
        1.0 if key(r) > key(w) else 0.5 if key(r) == key(w) else 0.0 for r in right for w in wrong
    )
    return wins / (len(right) * len(wrong))


@pytest.mark.parametrize("seed", range(5))
def test_auroc_counts_every_pair(seed: int) -> None:
    rng = random.Random(seed)
    levels = [None, 0.1, 0.2, 0.5, 0.5, 0.7, 0.9, 1.0]  # ties and missing scores on purpose
    right = [rng.choice(levels) for _ in range(rng.randint(1, 30))]
    wrong = [rng.choice(levels) for _ in range(rng.randint(1, 30))]
    assert auroc(right, wrong) == pytest.approx(auroc_by_pairs(right, wrong), abs=1e-12)


def test_auroc_needs_both_right_and_wrong_answers() -> None:
    assert auroc([0.3, 0.9], []) is None
    assert auroc([], [0.3]) is None
    assert only_gate(scored([(0.9, True), (0.2, True)])).auroc is None
    assert auroc([None], [0.0]) == 0.0  # no score ranks below any score
    assert auroc([None], [None]) == 0.5


# --- one step ---------------------------------------------------------------------------


def test_step_figures_by_hand() -> None:
    """Eight cases: six reached; of those four correct; three passed, two of them correct."""
    result = evaluation(
        case(1, grade(True, verdict(0.9))),  # right, passes
        case(2, grade(True, verdict(0.8))),  # right, passes
        case(3, grade(False, verdict(0.7))),  # wrong, passes
        case(4, grade(True, verdict(0.3))),  # right, escalated
        case(5, grade(True, verdict(None))),  # right, no score: escalated
        case(6, grade(False, verdict(0.1))),  # wrong, escalated
        case(7, grade(False, reached=False), ending="dead_letter"),
        case(8, grade(True, step="reply")),  # another step
        case(9),  # grades nothing
    )
    figures = measure(result)
    step = figures.step(STEP)
    assert step is not None
    assert (step.cases, step.reached, step.correct, step.passing) == (7, 6, 4, 3)
    assert step.accuracy == pytest.approx(4 / 6)
    assert step.coverage == pytest.approx(3 / 6)
    assert step.precision == pytest.approx(2 / 3)
    assert step.escalation_rate == pytest.approx(3 / 6)
    assert [s.step for s in figures.steps] == [STEP, "reply"]
    assert passed_wrong(result, STEP) == ["case-3"]
    right, wrong = answer_scores(result, STEP, "logprobs")
    assert (right, wrong) == ([0.9, 0.8, 0.3, None], [0.7, 0.1])
    assert step.gates[0].auroc == pytest.approx(auroc_by_pairs(right, wrong))


def test_precision_of_what_passes_is_none_when_nothing_passes() -> None:
    step = measure(scored([(0.1, True), (0.2, False)])).steps[0]
    assert step.passing == 0
    assert step.precision is None
    assert step.coverage == 0.0
    empty = measure(evaluation(case(1, grade(True, reached=False)))).steps[0]
    assert (empty.accuracy, empty.coverage, empty.escalation_rate) == (None, None, None)
    assert empty.gates[0].table == ()
    assert empty.gates[0].lowest_min(0.5) is None


def score_of(g: StepGrade) -> float | None:
    return next(v.score for v in g.gates if v.name == "logprobs")


def judge_passed(g: StepGrade) -> bool:
    return next(v.passed for v in g.gates if v.name == "judge")


def test_risk_table_against_filtering_each_min() -> None:
    """Two gates: this gate at each min, the other held at its current verdict."""
    rng = random.Random(3)
    answers = []
    for index in range(1, 120):
        score = rng.choice([None, *[round(rng.random(), 2) for _ in range(5)]])
        judge = verdict(rng.random(), min_=0.3, name="judge")
        answers.append(case(index, grade(rng.random() < 0.7, verdict(score, 0.45), judge)))
    answers.append(case(200, grade(True, reached=False)))
    result = evaluation(*answers, gates={STEP: ("logprobs", "judge")})
    gate = measure(result).steps[0].gates[0]
    reached = [c.grades[0] for c in answers if c.grades[0].reached]
    scores = {score_of(g) for g in reached} - {None}
    assert [row.min for row in gate.table] == sorted({*scores, 0.45})
    for row in gate.table:
        passing = [
            g
            for g in reached
            if (s := score_of(g)) is not None and s >= row.min and judge_passed(g)
        ]
        correct = sum(g.correct for g in passing)
        assert (row.passing, row.correct) == (len(passing), correct)
        assert row.coverage == pytest.approx(len(passing) / len(reached))
        assert row.precision == (correct / len(passing) if passing else None)
        assert row.lower_bound == clopper_pearson_lower(correct, len(passing))
    current = gate.current
    assert current is not None and current.min == 0.45
    step = measure(result).steps[0]
    assert current.passing == step.passing  # the table agrees with the gates' own verdicts


# --- the lowest min ---------------------------------------------------------------------


def ramp() -> list[tuple[float | None, bool]]:
    """Ten wrong answers scored 0.05..0.50, thirty right ones scored 0.51..0.80."""
    wrong = [(round(0.05 * i, 2), False) for i in range(1, 11)]
    right = [(round(0.50 + 0.01 * i, 2), True) for i in range(1, 31)]
    return wrong + right


def test_lowest_min_by_hand() -> None:
    """At 0.51 the thirty right answers pass alone: lower bound 0.025**(1/30) = 0.884.
    At 0.50, 30 of 31: P[X >= 30 | 31, 0.85] = 0.042 > 0.025, so its bound is below 0.85."""
    assert binomial_tail(30, 31, 0.85) > 0.025
    gate = only_gate(scored(ramp(), min_=0.3), target=0.85)
    assert gate.lowest_min(0.85) == 0.51
    assert gate.recommended is not None
    assert gate.recommended.lower_bound == pytest.approx(0.025 ** (1 / 30))
    assert gate.recommended.coverage == pytest.approx(30 / 40)
    # Lower targets are reached earlier; confidence changes the bound, not the table.
    assert 0.05 <= (gate.lowest_min(0.5) or 1.0) < 0.51
    # At 50% confidence (tail 0.25): at 0.40, 30 of 33 pass and P[X >= 30 | 33, 0.85] is
    # 0.2495, at most 0.25, so the bound reaches 0.85; at 0.35, 30 of 34: 0.41, it does not.
    assert binomial_tail(30, 33, 0.85) <= 0.25 < binomial_tail(30, 34, 0.85)
    assert gate.lowest_min(0.85, confidence=0.5) == 0.4
    assert gate.lowest_min(0.9) is None  # 0.025**(1/30) = 0.884 at most


def test_lowest_min_holds_the_other_gates_at_their_mins() -> None:
    """Wrong answers with high logprobs that the judge stops do not count against logprobs:
    with the judge, 0.51 reaches 85%; without it, no min does (they score 0.9, the top)."""
    cases = [
        case(i, grade(ok, verdict(s, 0.3), verdict(0.9, 0.5, "judge")))
        for i, (s, ok) in enumerate(ramp(), start=1)
    ]
    for i in range(50, 55):
        cases.append(case(i, grade(False, verdict(0.9, 0.3), verdict(0.1, 0.5, "judge"))))
    result = evaluation(*cases, gates={STEP: ("logprobs", "judge")})
    gate = measure(result, target_precision=0.85).steps[0].gates[0]
    assert gate.lowest_min(0.85) == 0.51
    alone = evaluation(
        *[case(c.index, grade(c.grades[0].correct, c.grades[0].gates[0])) for c in cases]
    )
    assert only_gate(alone, target=0.85).lowest_min(0.85) is None


def test_unreachable_target() -> None:
    """Four right answers at best (0.025**(1/4) = 0.398): no min reaches 90%."""
    gate = only_gate(scored([(0.9, True), (0.8, True), (0.7, True), (0.6, True), (0.4, False)]))
    assert gate.lowest_min(0.9) is None
    assert gate.recommended is None
    assert gate.best is not None
    assert (gate.best.min, gate.best.passing) == (0.5, 4)  # the lowest of equal rows
    assert gate.best.lower_bound == pytest.approx(0.025**0.25)


def test_figures_are_json_ready() -> None:
    import json

    figures = measure(scored(ramp(), min_=0.3), target_precision=0.85)
    data = json.loads(json.dumps(figures.to_json()))
    gate = data["steps"][0]["gates"][0]
    assert gate["lowest_min"] == 0.51
    assert gate["at_lowest_min"]["passing"] == 30
    assert len(gate["table"]) == 40
    assert data["steps"][0]["accuracy"] == 0.75


# --- per case ---------------------------------------------------------------------------


def test_case_totals_by_hand() -> None:
    latencies = [120.0, 80.0, 400.0, 95.0, 1000.0, 60.0, 300.0]
    cases = [
        case(i, model_calls=2, cached_calls=i % 2, cost_usd=0.01 * i, latency_ms=ms)
        for i, ms in enumerate(latencies, start=1)
    ]
    totals = case_totals(cases)
    assert totals.cost_per_case_usd == pytest.approx(sum(0.01 * i for i in range(1, 8)) / 7)
    assert totals.unpriced_cases == 0
    assert totals.latency_ms == pytest.approx(statistics.mean(latencies))
    assert totals.latency_p50_ms == pytest.approx(statistics.median(latencies))
    p95 = statistics.quantiles(latencies, n=20, method="inclusive")[18]
    assert totals.latency_p95_ms == pytest.approx(p95)
    assert (totals.model_calls, totals.cached_calls) == (14, 4)

    unpriced = case_totals([*cases, case(9, cost_usd=None), case(10, cost_usd=None)])
    assert (unpriced.cost_per_case_usd, unpriced.unpriced_cases) == (None, 2)
    empty = case_totals([])
    assert (empty.cost_per_case_usd, empty.latency_ms, empty.latency_p95_ms) == (None, None, None)


# --- comparison -------------------------------------------------------------------------


def test_comparison_lists_changed_cases_and_regressions() -> None:
    baseline = evaluation(
        case(1, grade(True, verdict(0.9))),
        case(2, grade(True, verdict(0.9))),
        case(3, grade(False, verdict(0.2)), ending="human_review"),
        case(4, grade(True, verdict(0.2)), ending="human_review"),
        case(5, grade(True, verdict(0.9))),
    )
    current = evaluation(
        case(1, grade(True, verdict(0.9))),
        case(2, grade(False, verdict(0.9))),  # correct -> wrong
        case(3, grade(True, verdict(0.2)), ending="human_review"),  # wrong -> correct
        case(4, grade(True, verdict(0.8))),  # escalated -> passed; ending changed
        case(5, grade(True, verdict(0.3)), ending="human_review"),  # passed -> escalated
        case(6, grade(True, verdict(0.9))),  # on one side only
    )
    comparison = compare(baseline, current)
    assert comparison.changed("correct→wrong") == ["case-2"]
    assert comparison.changed("wrong→correct", STEP) == ["case-3"]
    assert comparison.changed("escalated→passed") == ["case-4"]
    assert comparison.changed("passed→escalated") == ["case-5"]
    assert comparison.changed("ending changed") == ["case-4", "case-5"]
    assert comparison.unmatched_cases == 1
    (step,) = comparison.steps
    figures = step.figures()
    assert figures["precision"].baseline == 1.0
    assert figures["precision"].current == pytest.approx(3 / 4)
    assert figures["precision"].delta == pytest.approx(-1 / 4)
    assert figures["accuracy"].delta == pytest.approx(5 / 6 - 4 / 5)
    assert comparison.regressions(0.02) == [
        "classify: precision of what passes fell by 25.0 points, from 100.0% to 75.0% "
        "(at most 2 allowed)"
    ]
    assert comparison.regressions(0.25) == []


def test_a_drop_of_exactly_the_allowance_is_no_regression() -> None:
    """50 cases: 46 right, then 45 (2 points: allowed), then 44 (4 points: not)."""

    def right_of_fifty(right: int) -> EvalResult:
        return evaluation(*(case(i, grade(i <= right)) for i in range(1, 51)), gates={})

    base = right_of_fifty(46)
    assert compare(base, right_of_fifty(45)).regressions(0.02) == []
    assert compare(base, right_of_fifty(44)).regressions(0.02) == [
        "classify: accuracy fell by 4.0 points, from 92.0% to 88.0% (at most 2 allowed)",
        "classify: precision of what passes fell by 4.0 points, from 92.0% to 88.0% "
        "(at most 2 allowed)",
    ]
    data = compare(base, right_of_fifty(44)).to_json()
    assert data["steps"][0]["figures"]["accuracy"]["delta"] == pytest.approx(-0.04)
    assert [c["case"] for c in data["changes"]] == ["case-45", "case-46"]
