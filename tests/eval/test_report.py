"""The reports of an evaluation and of a comparison: Markdown carries the figures and the
sentence per gate, HTML is one well-formed page with two pictures per gate and nothing to
fetch or run, every text from the data escaped; JSON loads back to the same figures."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest

from runner.eval.comparison import compare
from runner.eval.metrics import RiskRow, measure
from runner.eval.report import render, render_comparison, thin
from runner.eval.results import CaseResult, EvalResult, GateScore, StepGrade

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = "<img onerror=x>"
ONE_GATE = {"classify": ("logprobs",)}
VOID = {"meta", "link", "br", "hr", "img", "input"}


def case(index: int, score: float | None, correct: bool, id_: str | None = None) -> CaseResult:
    """A case of the classify step under one logprobs gate at min 0.3: one model call,
    $0.002, 100 ms per line of the data file."""
    verdict = GateScore("logprobs", "logprobs", score, 0.3, score is not None and score >= 0.3)
    got = {"label": "a" if correct else "b"}
    grade = StepGrade("classify", {"label": "a"}, got, True, (verdict,))
    ending = "done" if verdict.passed else "human_review"
    return CaseResult(index, id_ or f"case-{index}", ending, (grade,), 1, 0, 0.002, 100.0 * index)


def evaluation(
    cases: Sequence[CaseResult],
    gates: Mapping[str, tuple[str, ...]] = ONE_GATE,
    revision: str | None = None,
) -> EvalResult:
    return EvalResult(
        "support", "flows/support.yaml", revision, "cases.jsonl", tuple(cases), gates, 4.2
    )


def ramp(revision: str | None = None, wrong_id: str = HOSTILE) -> EvalResult:
    """Ten wrong answers scored 0.05..0.50, thirty right ones 0.51..0.80, min 0.3: the
    lowest min for 85% is 0.51 (see test_metrics). The wrong answer at 0.5 passes."""
    cases = [case(i, round(0.05 * i, 2), False) for i in range(1, 10)]
    cases.append(case(10, 0.5, False, id_=wrong_id))
    cases += [case(10 + i, round(0.50 + 0.01 * i, 2), True) for i in range(1, 31)]
    return evaluation(cases, revision=revision)


class Page(HTMLParser):
    """Every tag of a page, checking that each element closes where it should."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.open: list[str] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open.pop() == tag, f"</{tag}> closes nothing open"

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def count(self, tag: str) -> int:
        return sum(name == tag for name, _ in self.tags)


def check_page(text: str) -> Page:
    """A page that stands alone: well formed, no script, nothing to fetch, ids unique."""
    assert text.startswith("<!DOCTYPE html>")
    assert "<script" not in text.lower()
    page = Page(text)
    assert page.open == []
    names = {tag for tag, _ in page.tags}
    assert not names & {"script", "img", "link", "iframe", "object", "embed", "image"}
    for _, attrs in page.tags:
        assert not any(name.startswith("on") for name in attrs)
        assert "src" not in attrs
        for name in ("href", "xlink:href"):
            assert attrs.get(name) is None or str(attrs[name]).startswith("#")
    assert "http:" not in text and "https:" not in text and "@import" not in text
    ids = [attrs["id"] for _, attrs in page.tags if "id" in attrs]
    assert len(ids) == len(set(ids)), "an id twice in the page"
    return page


# --- one evaluation ---------------------------------------------------------------------


def test_markdown_carries_the_figures() -> None:
    result = ramp()
    text = render(result, measure(result, target_precision=0.85), "markdown")
    assert text.startswith("# Evaluation of support\n")
    # 30 right of 40; at min 0.3 the 30 right pass with 5 wrong (0.30 to 0.50): 35 of 40.
    assert "| 40 | 40 | 75.0% | 87.5% | 85.7% | 12.5% |" in text
    # latency 100..4000 ms: p95 between the 38th and 39th, at 3805 ms.
    assert "| 40 | \\$0.002 | 2050 ms | 2050 ms | 3805 ms | 40 | 0 |" in text
    assert (
        "classify / logprobs: lowest min for 85% precision (95% lower bound): 0.51 (coverage 75%)"
        in text
    )
    assert "Method logprobs, current min 0.3, AUROC 1.000." in text
    assert "| 0.51 | 75.0% | 100.0% | 30 | 30 | 88.4% | lowest min for 85% |" in text
    assert "| 0.3 | 87.5% | 85.7% | 35 | 30 |" in text and "| current min |" in text
    risk_rows = [
        line for line in text.splitlines() if line.startswith("| 0.") or line.startswith("| 1 ")
    ]
    assert len(risk_rows) <= 12
    assert (
        "Wrong yet passed every gate (5): case-6, case-7, case-8, case-9, \\<img onerror=x\\>"
        in text
    )
    assert HOSTILE not in text


def test_markdown_says_when_the_target_is_unreachable() -> None:
    scores = [(0.9, True), (0.8, True), (0.7, True), (0.6, True), (0.4, False)]
    result = evaluation([case(i, s, ok) for i, (s, ok) in enumerate(scores, start=1)])
    text = render(result, measure(result, target_precision=0.9), "markdown")
    assert (
        "classify / logprobs: lowest min for 90% precision (95% lower bound): "
        "unreachable: at best 39.7% (lower bound) with 4 answers passing"
    ) in text
    assert "| best lower bound |" in text


def test_html_is_one_page_with_two_pictures_per_gate() -> None:
    result = ramp()
    text = render(result, measure(result, target_precision=0.85), "html")
    page = check_page(text)
    assert page.count("svg") == 2
    assert page.count("table") == 3  # per case, the step, the gate's risk-coverage table
    assert HOSTILE not in text
    assert "&lt;img onerror=x&gt;" in text
    words = " ".join(page.text)
    assert "lowest min for 85% precision (95% lower bound): 0.51 (coverage 75%)" in words
    assert HOSTILE in words  # shown as text, literally


def test_html_draws_each_gate_of_each_step() -> None:
    def two_steps(i: int) -> CaseResult:
        gates = (
            GateScore("logprobs", "logprobs", i / 20, 0.2, i / 20 >= 0.2),
            GateScore("judge", "judge", 1 - i / 20, 0.1, 1 - i / 20 >= 0.1),
        )
        got = {"label": "a" if i % 3 else "b"}
        classify = StepGrade("classify", {"label": "a"}, got, True, gates)
        reply = StepGrade("reply", {"tone": "calm"}, {"tone": "calm"}, True, ())
        return CaseResult(i, f"case-{i}", "done", (classify, reply))

    gates = {"classify": ("logprobs", "judge"), "reply": ()}
    two_gates = evaluation([two_steps(i) for i in range(1, 20)], gates)
    page = check_page(render(two_gates, measure(two_gates), "html"))
    assert page.count("svg") == 4
    assert page.count("figure") == 2


def test_json_loads_back_to_the_figures() -> None:
    result = ramp()
    figures = measure(result, target_precision=0.85)
    data = json.loads(render(result, figures, "json"))
    assert data["flow"] == "support" and data["cases"] == 40
    assert data["steps"] == figures.to_json()["steps"]
    assert data["totals"] == figures.totals.to_json()
    assert data["steps"][0]["gates"][0]["lowest_min"] == 0.51


def test_an_unknown_format_is_refused() -> None:
    result = ramp()
    with pytest.raises(ValueError, match="no report format 'pdf': use one of json, markdown, html"):
        render(result, measure(result), "pdf")


def test_thin_keeps_the_marked_rows() -> None:
    rows = [RiskRow(i / 1000, 1000 - i, 900 - i, 1 - i / 1000, 0.5) for i in range(1000)]
    kept = thin(rows, [rows[3], rows[517]])
    assert len(kept) <= 12
    assert rows[3] in kept and rows[517] in kept
    assert kept[0] is rows[0] and kept[-1] is rows[-1]
    assert kept == sorted(kept, key=lambda row: row.min)
    assert thin(rows[:12], []) == rows[:12]


# --- a comparison -----------------------------------------------------------------------


def comparison_pair() -> tuple[EvalResult, EvalResult]:
    """The current flow got case 11 (a right answer at 0.51) wrong."""
    baseline = ramp(revision="main")
    current_cases = list(ramp().cases)
    current_cases[10] = case(11, 0.51, False)
    current = EvalResult(
        "support",
        "flows/support.yaml",
        None,
        "cases.jsonl",
        tuple(current_cases),
        {"classify": ("logprobs",)},
    )
    return baseline, current


def test_comparison_markdown_lists_changes_and_regressions() -> None:
    baseline, current = comparison_pair()
    comparison = compare(baseline, current, target_precision=0.85)
    text = render_comparison(baseline, current, comparison, "markdown", max_regression=0.02)
    assert text.startswith("# support: against main\n")
    assert "| accuracy | 75.0% | 72.5% | -2.5 points |" in text
    assert "correct→wrong (1): case-11" in text
    assert "classify: accuracy fell by 2.5 points, from 75.0% to 72.5% (at most 2 allowed)" in text
    assert "| logprobs: lowest min for the target | 0.51 | 0.52 | +0.01 |" in text
    quiet = render_comparison(baseline, current, comparison, "markdown", max_regression=0.05)
    assert "None beyond 5 points." in quiet


def test_comparison_html_and_json() -> None:
    baseline, current = comparison_pair()
    current = evaluation([replace(c, id=HOSTILE) if c.index == 11 else c for c in current.cases])
    comparison = compare(baseline, current, target_precision=0.85)
    text = render_comparison(baseline, current, comparison, "html", max_regression=0.02)
    page = check_page(text)
    assert page.count("svg") == 1  # both sides' curves in one picture per gate
    assert "correct→wrong (1): " + HOSTILE in " ".join(page.text)
    assert HOSTILE not in text
    data = json.loads(render_comparison(baseline, current, comparison, "json", max_regression=0.02))
    assert data["baseline"]["revision"] == "main"
    assert data["regressions"] == comparison.regressions(0.02)
    assert [c["case"] for c in data["changes"] if c["kind"] == "correct→wrong"] == [HOSTILE]


def test_importing_the_reports_leaves_matplotlib_alone() -> None:
    """matplotlib takes about a second to import: only drawing a picture imports it."""
    probe = (
        "import sys, runner.eval.report, runner.eval.comparison;print('matplotlib' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_a_case_that_did_not_run_is_named_with_its_reason() -> None:
    refused = CaseResult(41, "refused-1", "refused", (), error="input: 'extra' is not allowed")
    result = evaluation([*ramp().cases, refused])
    figures = measure(result, target_precision=0.85)
    text = render(result, figures, "markdown")
    assert "## Not run (1)" in text
    assert "| refused-1 | refused | input: 'extra' is not allowed |" in text
    data = json.loads(render(result, figures, "json"))
    assert data["not_run"] == [
        {
            "index": 41,
            "id": "refused-1",
            "ending": "refused",
            "error": "input: 'extra' is not allowed",
        }
    ]
    assert "refused-1" in " ".join(check_page(render(result, figures, "html")).text)
    assert "Not run" not in render(ramp(), figures, "markdown")
