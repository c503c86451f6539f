"""`runner eval` end to end, against a real HTTP server on 127.0.0.1 that speaks the
OpenAI chat-completions API. The server answers each ticket from a table made here with a
fixed seed: the label the model gives and the probability p of its first token, so the
logprobs gate scores each answer p. Every figure of the report is checked against a
computation from that table written out in this file (pairs for AUROC, a bisection on
the binomial tail for the Clopper-Pearson bound), never against runner.eval.metrics."""

from __future__ import annotations

import io
import json
import math
import random
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from scripted_server import Received, Reply, ScriptedServer

from runner.cli.main import main

CATEGORIES = ("billing", "technical", "account", "other")
SEED = 20_250_611
CASES = 120
MIN = 0.7  # the gate's min in the flow
TARGET = 0.8  # --target-precision
COMPLETIONS = "/v1/chat/completions"
HASTY = " Answer hastily."  # a prompt change: the model then gets every even ticket wrong

FLOW = """\
version: 1
name: triage
input:
  type: object
  required: [ticket]
  properties:
    ticket:
      type: object
      required: [id, body]
      additionalProperties: false
      properties: {{id: {{type: string}}, body: {{type: string}}}}
models:
  default: {{model: openai/scripted, api_base: "{api_base}", temperature: 0}}
tools:
  notify:
    python: tools.notify:send
    effect: true
  record:
    python: tools.notify:record
steps:
  - id: classify
    llm:
      prompt: |
        Classify ticket {{{{ input.ticket.id }}}} as billing, technical, account or other.{hint}
        {{{{ input.ticket.body }}}}
      output:
        type: object
        required: [category]
        properties:
          category: {{enum: [billing, technical, account, other]}}
    confidence: {{method: logprobs, min: {min}}}
    on_low_confidence: human_review
  - id: notify
    tool: notify
    args:
      ticket: "{{{{ input.ticket.id }}}}"
      category: "{{{{ steps.classify.output.category }}}}"
  - id: record
    tool: record
    args:
      category: "{{{{ steps.classify.output.category }}}}"
      sent: "{{{{ steps.notify.output }}}}"
on_error: dead_letter
"""

TOOLS = '''\
"""notify appends to a file beside this folder: an effect, which eval must never run.
record is pure: eval runs it for real."""

from pathlib import Path

SENT = Path(__file__).resolve().parent.parent / "sent.log"


def send(ticket, category):
    with SENT.open("a", encoding="utf-8") as sent:
        sent.write(f"{ticket} {category}\\n")
    return {"sent": ticket}


def record(category, sent):
    return {"category": category, "sent": sent}
'''


@dataclass(frozen=True)
class Ticket:
    """One case: what a person labelled it, what the model answers, and how sure it is."""

    case: str
    ticket: str
    label: str
    answer: str
    p: float

    @property
    def right(self) -> bool:
        return self.answer == self.label

    @property
    def number(self) -> int:
        return int(self.ticket.removeprefix("T-"))

    def line(self) -> str:
        return json.dumps(
            {
                "id": self.case,
                "input": {"ticket": {"id": self.ticket, "body": f"About {self.ticket}."}},
                "expect": {"classify.category": self.label},
            }
        )


def make_tickets(count: int = CASES, seed: int = SEED) -> list[Ticket]:
    """Right answers lean confident, wrong ones less so (none above 0.88); p has three
    decimals and is never the gate's min (a score at the min would hang on float
    rounding)."""
    rng = random.Random(seed)
    tickets = []
    for n in range(count):
        label = rng.choice(CATEGORIES)
        right = rng.random() < 0.75
        answer = label if right else rng.choice([c for c in CATEGORIES if c != label])
        p = round(rng.uniform(0.55, 0.999) if right else rng.uniform(0.3, 0.88), 3)
        if p == MIN:
            p = MIN + 0.001
        tickets.append(Ticket(f"c{n:03d}", f"T-{n:04d}", label, answer, p))
    return tickets


TICKETS = make_tickets()
BY_TICKET = {t.ticket: t for t in TICKETS}


# -- the model server ---------------------------------------------------------------------


def token(text: str, logprob: float = 0.0) -> dict[str, Any]:
    return {
        "token": text,
        "logprob": logprob,
        "bytes": None,
        "top_logprobs": [{"token": text, "logprob": logprob, "bytes": None}],
    }


def answer_to(ticket: Ticket, hasty: bool) -> tuple[str, float]:
    """The model's answer and p: the table's, or when hasty and the ticket's number is
    even, a wrong label at 0.95 (it passes the gate)."""
    if hasty and ticket.number % 2 == 0:
        return next(c for c in CATEGORIES if c not in (ticket.label, ticket.answer)), 0.95
    return ticket.answer, ticket.p


def completion(request: Received) -> dict[str, Any]:
    """The table's answer to the ticket named in the prompt: JSON content, and tokens that
    spell it exactly, the label's first character at log(p), every other token certain."""
    messages = request.json()["messages"]
    prompt = "\n".join(m["content"] for m in messages if isinstance(m.get("content"), str))
    found = re.search(r"T-\d{4}", prompt)
    assert found is not None, prompt
    answer, p = answer_to(BY_TICKET[found.group()], HASTY in prompt)
    content = json.dumps({"category": answer})
    tokens = [
        token('{"'),
        token("category"),
        token('":'),
        token(' "'),
        token(answer[0], math.log(p)),
        token(answer[1:]),
        token('"}'),
    ]
    assert "".join(t["token"] for t in tokens) == content
    return {
        "id": f"chatcmpl-{found.group()}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "scripted",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": {"content": tokens},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 60, "completion_tokens": 7, "total_tokens": 67},
    }


@pytest.fixture(scope="module")
def model() -> Iterator[ScriptedServer]:
    """One server for the module, so that the answer cache its first evaluation fills
    serves the others; tests count the requests they cause."""
    server = ScriptedServer()
    server.script(COMPLETIONS, *[Reply(body=completion)] * 5000)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def requests(server: ScriptedServer) -> int:
    return len(server.requests_to(COMPLETIONS))


# -- files and the command ----------------------------------------------------------------


def write_flow(folder: Path, server: ScriptedServer, min_: float = MIN, hint: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tools").mkdir(exist_ok=True)
    (folder / "tools" / "notify.py").write_text(TOOLS, encoding="utf-8")
    flow = folder / "flow.yaml"
    text = FLOW.format(api_base=f"{server.url}/v1", min=min_, hint=hint)
    flow.write_text(text, encoding="utf-8")
    return flow


def write_data(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def run_eval(*args: str | Path) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["eval", *map(str, args)], out=out)
    return code, out.getvalue()


def run_json(*args: str | Path) -> dict[str, Any]:
    code, out = run_eval(*args, "--format", "json", "--target-precision", str(TARGET))
    assert code == 0, out
    report: dict[str, Any] = json.loads(out)
    return report


def only_step(report: dict[str, Any]) -> dict[str, Any]:
    """The report's one graded step, classify."""
    steps: list[dict[str, Any]] = report["steps"]
    assert [s["step"] for s in steps] == ["classify"]
    return steps[0]


def only_gate(report: dict[str, Any]) -> dict[str, Any]:
    """classify's one gate, logprobs."""
    gates: list[dict[str, Any]] = only_step(report)["gates"]
    assert [g["gate"] for g in gates] == ["logprobs"]
    return gates[0]


@dataclass(frozen=True)
class Shared:
    """The first evaluation of the module, from its own working directory."""

    folder: Path
    flow: Path
    data: Path
    cache: Path
    report: dict[str, Any]
    requests: int
    before: set[str]  # the folder's files before the evaluation


@pytest.fixture(scope="module")
def shared(model: ScriptedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    folder = tmp_path_factory.mktemp("eval")
    flow = write_flow(folder, model)
    data = write_data(folder / "cases.jsonl", [t.line() for t in TICKETS])
    cache = folder / "answers.sqlite3"
    before = {str(p.relative_to(folder)) for p in folder.rglob("*")}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        asked = requests(model)
        report = run_json("flow.yaml", "--data", "cases.jsonl", "--cache", cache.name)
        yield Shared(folder, flow, data, cache, report, requests(model) - asked, before)


# -- the expected figures, from the table ---------------------------------------------------


def binomial_upper_tail(k: int, n: int, p: float) -> float:
    """P[X >= k] for X ~ Binomial(n, p), summed term by term."""
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))


def lower_bound(k: int, n: int) -> float:
    """The lower end of the two-sided 95% Clopper-Pearson interval for k of n: the p at
    which P[X >= k] = 0.025, found by bisection (the tail grows with p)."""
    if k == 0:
        return 0.0
    low, high = 0.0, 1.0
    for _ in range(200):
        middle = (low + high) / 2
        if binomial_upper_tail(k, n, middle) < 0.025:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def pairs_auroc(tickets: Sequence[Ticket]) -> float:
    """Over every (right, wrong) pair: 1 when the right answer scores higher, a half for
    a tie."""
    right = [t.p for t in tickets if t.right]
    wrong = [t.p for t in tickets if not t.right]
    wins = sum(1.0 if r > w else 0.5 if r == w else 0.0 for r in right for w in wrong)
    return wins / (len(right) * len(wrong))


def passing(tickets: Sequence[Ticket], min_: float) -> list[Ticket]:
    return [t for t in tickets if t.p >= min_]


def precision(tickets: Sequence[Ticket]) -> float:
    return sum(t.right for t in tickets) / len(tickets)


def lowest_min(tickets: Sequence[Ticket], target: float) -> float | None:
    """The lowest of the candidate mins (every score, and the current min) at which the
    answers passing have a lower bound of at least `target`."""
    for min_ in sorted({t.p for t in tickets} | {MIN}):
        through = passing(tickets, min_)
        bound = lower_bound(sum(t.right for t in through), len(through))
        assert abs(bound - target) > 1e-6, "a bound this close to the target is a coin toss"
        if bound >= target:
            return min_
    return None


def test_the_lower_bound_here_matches_the_closed_form_when_every_answer_is_right() -> None:
    for n in (1, 5, 17, 40):
        assert lower_bound(n, n) == pytest.approx(0.025 ** (1 / n), abs=1e-12)


# -- the figures ----------------------------------------------------------------------------


def test_the_report_figures_equal_those_computed_from_the_model_table(shared: Shared) -> None:
    step = only_step(shared.report)
    through = passing(TICKETS, MIN)
    assert shared.report["cases"] == CASES
    assert (step["cases"], step["reached"]) == (CASES, CASES)
    assert step["correct"] == sum(t.right for t in TICKETS)
    assert step["passing"] == len(through)
    assert step["passing_correct"] == sum(t.right for t in through)
    assert step["accuracy"] == pytest.approx(precision(TICKETS), abs=1e-12)
    assert step["coverage"] == pytest.approx(len(through) / CASES, abs=1e-12)
    assert step["precision"] == pytest.approx(precision(through), abs=1e-12)
    assert step["escalation_rate"] == pytest.approx(1 - len(through) / CASES, abs=1e-12)

    gate = only_gate(shared.report)
    assert gate["method"] == "logprobs"
    assert gate["min"] == MIN
    assert gate["auroc"] == pytest.approx(pairs_auroc(TICKETS), abs=1e-12)
    expected = lowest_min(TICKETS, TARGET)
    assert expected is not None and expected > MIN  # the table makes the target reachable
    assert gate["target_precision"] == TARGET
    assert gate["lowest_min"] == pytest.approx(expected, abs=1e-9)
    at = gate["at_lowest_min"]
    assert (at["passing"], at["correct"]) == (
        len(passing(TICKETS, expected)),
        sum(t.right for t in passing(TICKETS, expected)),
    )
    assert at["lower_bound"] == pytest.approx(lower_bound(at["correct"], at["passing"]), abs=1e-9)


def test_the_logprobs_gate_scores_each_answer_the_probability_of_its_first_token(
    shared: Shared,
) -> None:
    table = only_gate(shared.report)["table"]
    mins = [row["min"] for row in table]
    assert mins == sorted(mins)
    assert mins == pytest.approx(sorted({t.p for t in TICKETS} | {MIN}), abs=1e-9)
    for row in table:
        through = passing(TICKETS, row["min"] - 1e-9)
        assert (row["passing"], row["correct"]) == (len(through), sum(t.right for t in through))


# -- the cache ------------------------------------------------------------------------------


def test_every_case_asked_the_model_once_then_a_second_run_asks_nothing_and_agrees(
    model: ScriptedServer, shared: Shared
) -> None:
    assert shared.requests == CASES
    assert shared.report["totals"]["model_calls"] == CASES
    assert shared.report["totals"]["cached_calls"] == 0
    asked = requests(model)
    again = run_json(shared.flow, "--data", shared.data, "--cache", shared.cache)
    assert requests(model) == asked
    assert again["steps"] == shared.report["steps"]
    assert again["totals"]["model_calls"] == 0
    assert again["totals"]["cached_calls"] == CASES


def test_no_cache_asks_the_model_again_and_gives_the_same_figures(
    model: ScriptedServer, shared: Shared, tmp_path: Path
) -> None:
    some = TICKETS[:24]
    data = write_data(tmp_path / "some.jsonl", [t.line() for t in some])
    asked = requests(model)
    fresh = run_json(shared.flow, "--data", data, "--no-cache")
    assert requests(model) - asked == len(some)
    assert fresh["totals"]["model_calls"] == len(some)
    asked = requests(model)
    cached = run_json(shared.flow, "--data", data, "--cache", shared.cache)
    assert requests(model) == asked
    assert cached["totals"]["cached_calls"] == len(some)
    assert fresh["steps"] == cached["steps"]
    assert only_step(fresh)["correct"] == sum(t.right for t in some)


# -- what eval must not do --------------------------------------------------------------------


def test_the_effect_tool_never_ran_and_no_store_file_was_made(shared: Shared) -> None:
    assert not (shared.folder / "sent.log").exists()
    after = {
        str(p.relative_to(shared.folder))
        for p in shared.folder.rglob("*")
        if "__pycache__" not in p.parts
    }
    made = after - shared.before
    assert made <= {"answers.sqlite3", "answers.sqlite3-wal", "answers.sqlite3-shm"}, made


def test_an_effect_before_a_graded_step_is_dry_run_and_the_step_after_it_runs(
    model: ScriptedServer, shared: Shared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    flow = write_flow(tmp_path / "flow", model)
    right = [t for t in TICKETS if t.right and t.p >= MIN][:3]
    lines = [
        json.dumps(
            {
                "id": t.case,
                "input": {"ticket": {"id": t.ticket, "body": f"About {t.ticket}."}},
                "expect": {
                    "classify.category": t.label,
                    "record": {"category": t.label, "sent": None},
                },
            }
        )
        for t in right
    ]
    data = write_data(tmp_path / "cases.jsonl", lines)
    report = run_json(flow, "--data", data, "--cache", shared.cache)
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["record"]["reached"] == steps["record"]["correct"] == len(right)
    assert not (tmp_path / "flow" / "sent.log").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases.jsonl", "flow"]


# -- --against --------------------------------------------------------------------------------


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "-c",
            "user.name=Eval Test",
            "-c",
            "user.email=eval@example.com",
            "-c",
            "commit.gpgsign=false",
            *args,
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def lowered_min_repo(model: ScriptedServer, tmp_path: Path) -> Path:
    """A git repository whose last commit lowers the gate's min from 0.7 to 0.5."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    flow = write_flow(repo / "flows", model, MIN)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "min 0.7")
    write_flow(repo / "flows", model, 0.5)
    git(repo, "commit", "-q", "-am", "min 0.5")
    return flow


def test_against_an_older_revision_lists_the_changed_cases_and_fails_on_a_precision_drop(
    lowered_min_repo: Path,
    model: ScriptedServer,
    shared: Shared,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    before, after = passing(TICKETS, MIN), passing(TICKETS, 0.5)
    drop = precision(before) - precision(after)
    assert drop > 0.02  # the table makes the lower min let more wrong answers through
    newly = sorted(t.case for t in TICKETS if 0.5 <= t.p < MIN)
    asked = requests(model)
    common: list[str | Path] = [
        lowered_min_repo,
        "--data",
        shared.data,
        "--cache",
        shared.cache,
        "--against",
    ]

    code, out = run_eval(
        *common, "HEAD~1", "--format", "json", "--max-regression", f"{drop - 0.005:.4f}"
    )
    assert code == 1, out
    report = json.loads(out)
    assert report["baseline"]["revision"] == "HEAD~1"
    changes = report["changes"]
    at_step = [c for c in changes if c["step"] == "classify"]
    assert {c["kind"] for c in at_step} == {"escalated→passed"}
    assert sorted(c["case"] for c in at_step) == newly
    endings = [c for c in changes if c["step"] is None]  # they stop after the graded step now
    assert {(c["before"], c["after"]) for c in endings} == {("human_review", "graded")}
    assert sorted(c["case"] for c in endings) == newly
    (step,) = report["steps"]
    figures = step["figures"]
    assert figures["precision"]["baseline"] == pytest.approx(precision(before), abs=1e-12)
    assert figures["precision"]["current"] == pytest.approx(precision(after), abs=1e-12)
    assert figures["accuracy"]["delta"] == 0
    assert step["gates"]["logprobs"]["min"] == {"baseline": MIN, "current": 0.5, "delta": 0.5 - MIN}
    assert len(report["regressions"]) == 1
    assert "precision of what passes" in report["regressions"][0]
    assert "runner: regression: classify: precision of what passes" in capsys.readouterr().err

    code, out = run_eval(*common, "HEAD~1", "--max-regression", f"{drop + 0.005:.4f}")
    assert code == 0, out
    assert f"escalated→passed ({len(newly)}): {', '.join(newly)}" in out
    assert "regression" not in capsys.readouterr().err
    assert requests(model) == asked  # both revisions ask what the cache already holds


def test_against_a_revision_before_a_prompt_change_fails_on_the_accuracy_drop(
    model: ScriptedServer,
    shared: Shared,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    monkeypatch.chdir(tmp_path)
    repo = tmp_path / "repo"
    flow = write_flow(repo, model)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "the prompt")
    write_flow(repo, model, hint=HASTY)
    some = TICKETS[:24]
    data = write_data(tmp_path / "some.jsonl", [t.line() for t in some])
    asked = requests(model)

    code, out = run_eval(
        flow, "--data", data, "--cache", shared.cache, "--against", "HEAD", "--format", "json"
    )
    assert code == 1, out
    assert requests(model) - asked == len(some)  # only the changed prompt asks again
    report = json.loads(out)
    now = [answer_to(t, True)[0] == t.label for t in some]
    accuracy = report["steps"][0]["figures"]["accuracy"]
    assert accuracy["baseline"] == pytest.approx(precision(some), abs=1e-12)
    assert accuracy["current"] == pytest.approx(sum(now) / len(some), abs=1e-12)
    broken = sorted(t.case for t, right in zip(some, now, strict=True) if t.right and not right)
    assert broken and sorted(report_changes(report, "correct→wrong")) == broken
    assert report_changes(report, "wrong→correct") == []
    assert any(line.startswith("classify: accuracy fell") for line in report["regressions"])
    assert "runner: regression: classify: accuracy fell" in capsys.readouterr().err


def report_changes(report: dict[str, Any], kind: str) -> list[str]:
    return [c["case"] for c in report["changes"] if c["kind"] == kind]


def test_against_an_unknown_revision_is_a_usage_error(
    lowered_min_repo: Path, shared: Shared, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_data(tmp_path / "some.jsonl", [t.line() for t in TICKETS[:3]])
    code, out = run_eval(
        lowered_min_repo, "--data", data, "--cache", shared.cache, "--against", "nope"
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert out == ""
    assert "Traceback" not in err
    assert "nope" in err


def test_against_an_unknown_revision_fails_before_asking_any_model(
    lowered_min_repo: Path, model: ScriptedServer, tmp_path: Path
) -> None:
    data = write_data(tmp_path / "some.jsonl", [t.line() for t in TICKETS[:3]])
    asked = requests(model)
    code, _ = run_eval(lowered_min_repo, "--data", data, "--no-cache", "--against", "nope")
    assert code == 2
    assert requests(model) == asked


# -- the HTML report ----------------------------------------------------------------------------


def test_the_html_report_has_two_pictures_per_gate_and_no_script(
    shared: Shared, tmp_path: Path
) -> None:
    page = tmp_path / "report.html"
    code, out = run_eval(
        shared.flow,
        "--data",
        shared.data,
        "--cache",
        shared.cache,
        "--format",
        "html",
        "--output",
        page,
    )
    assert code == 0
    assert out == ""
    html = page.read_text(encoding="utf-8")
    assert html.count("<svg") == 2
    assert "<script" not in html.lower()


# -- bad input --------------------------------------------------------------------------------


def test_bad_lines_of_the_data_file_are_all_named_with_exit_code_2(
    shared: Shared, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = TICKETS[0].line()
    data = write_data(
        tmp_path / "bad.jsonl",
        [
            good,
            "{not json",
            json.dumps({"id": "x", "input": {"ticket": {"id": "T-0001", "body": "b"}}}),
            TICKETS[1].line(),
            json.dumps({"input": {}, "expect": {"triage.category": "billing"}}),
        ],
    )
    code, out = run_eval(shared.flow, "--data", data, "--no-cache")
    err = capsys.readouterr().err
    assert code == 2, err
    assert out == ""
    assert "Traceback" not in err
    named = sorted(int(n) for n in re.findall(r"bad\.jsonl:(\d+):", err))
    assert named == [2, 3, 5]
    assert "not JSON" in err
    assert "missing `expect`" in err
    assert "`triage`" in err


def test_a_missing_flow_file_is_named_without_a_traceback(
    shared: Shared, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_eval(tmp_path / "nowhere.yaml", "--data", shared.data, "--no-cache")
    err = capsys.readouterr().err
    assert code in (1, 2), err
    assert out == ""
    assert "nowhere.yaml" in err
    assert "Traceback" not in err and "internal error" not in err


def test_a_missing_data_file_is_a_usage_error(
    shared: Shared, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run_eval(shared.flow, "--data", tmp_path / "none.jsonl", "--no-cache")
    err = capsys.readouterr().err
    assert code == 2, err
    assert "none.jsonl" in err


REFUSED = json.dumps(
    {
        "id": "refused-1",
        "input": {"ticket": {"id": "T-0002", "body": "b", "extra": 1}},
        "expect": {"classify.category": "billing"},
    }
)


@pytest.mark.parametrize("fmt", ["markdown", "json"])
def test_a_case_whose_input_the_flow_refuses_is_reported_as_refused_and_the_others_graded(
    model: ScriptedServer, shared: Shared, tmp_path: Path, fmt: str
) -> None:
    data = write_data(tmp_path / "cases.jsonl", [TICKETS[0].line(), REFUSED, TICKETS[1].line()])
    asked = requests(model)
    code, out = run_eval(shared.flow, "--data", data, "--cache", shared.cache, "--format", fmt)
    assert code == 0, out
    assert requests(model) == asked
    assert "refused-1" in out
    assert "refused" in out.replace("refused-1", "")
    if fmt == "json":
        report = json.loads(out)
        step = only_step(report)
        assert report["cases"] == 3
        assert (step["cases"], step["reached"]) == (3, 2)
        assert step["correct"] == sum(t.right for t in TICKETS[:2])


def test_an_output_file_in_a_missing_folder_is_a_usage_error(
    shared: Shared,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    data = write_data(tmp_path / "some.jsonl", [t.line() for t in TICKETS[:3]])
    report = tmp_path / "missing" / "report.md"
    code, _ = run_eval(shared.flow, "--data", data, "--cache", shared.cache, "--output", report)
    err = capsys.readouterr().err
    assert code in (1, 2), err
    assert "report.md" in err


def test_a_cache_path_that_is_a_folder_is_a_usage_error(
    shared: Shared,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    data = write_data(tmp_path / "some.jsonl", [t.line() for t in TICKETS[:3]])
    code, _ = run_eval(shared.flow, "--data", data, "--cache", tmp_path)
    err = capsys.readouterr().err
    assert code in (1, 2), err
    assert str(tmp_path) in err
