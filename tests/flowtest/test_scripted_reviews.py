"""Flow tests that script people: a case's `reviews:` decide its run's escalations, in
the order the run stops, through the review desk.

The flow is tests/flowtest/payout/payout.yaml: a switch sends goodwill claims to a
person; `finance`, an approval step (reviewers: [finance], an amount proposed from the
input, a deadline, `on_rejected: done`, `on_expired: dead_letter`), decides the payout;
`pay` (a scripted effect) pays `steps.finance.output.amount`; a model writes a note, a
policy check holds one that promises, and `send` (a scripted effect) sends it.

Each case is run through `runner test` (its printed lines compared whole) and through
`runner.flowtest.cases` (the arguments each scripted tool received, the routes taken).
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.cli.main import main
from runner.core.vocabulary import DecisionKind
from runner.flowtest.cases import load_test_file, run_case
from runner.flowtest.reviews import ACTIONS

PAYOUT = Path(__file__).resolve().parent / "payout"
SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "flowtest.v1.json"
SECONDS = re.compile(r"\(\d+\.\d s\)$")
RUN_ID = re.compile(r"\b\d{8}-\d{6}-[0-9a-f]{8}\b")
PAID = "We paid on claim C-1."
PROMISE = "We guarantee it shows tomorrow."


def case(
    reviews: str, expect: str, *, kind: str = "refund", notes: tuple[str, ...] = (PAID,)
) -> str:
    """One case of the payout flow, its tools answering, its model writing `notes`."""
    answers = ", ".join(json.dumps({"message": note}) for note in notes)
    return f"""\
version: 1
cases:
  - name: the case
    input: {{claim: {{id: C-1, amount: 120, kind: {kind}}}}}
    llm: {{note: [{answers}]}}
    tools: {{pay: [{{result: {{payment_id: p-1}}}}], send: [{{result: {{sent: true}}}}]}}
    reviews: {reviews}
    expect: {expect}
"""


def write(tmp_path: Path, text: str) -> Path:
    """The payout flow and its tools in `tmp_path`, with `text` as its test file."""
    shutil.copy(PAYOUT / "payout.yaml", tmp_path / "payout.yaml")
    shutil.copytree(PAYOUT / "tools", tmp_path / "tools")
    test_file = tmp_path / "payout.test.yaml"
    test_file.write_text(text, encoding="utf-8")
    return test_file


def run(*argv: str) -> tuple[int, list[str]]:
    """`runner test ...`: the exit code and the printed lines, run ids and time replaced."""
    out = io.StringIO()
    code = main(["test", *argv], out=out)
    lines = RUN_ID.sub("<RUN>", out.getvalue()).splitlines()
    return code, [SECONDS.sub("(T s)", line) for line in lines]


def pay(amount: float) -> dict[str, Any]:
    return {"claim_id": "C-1", "amount": amount}


def send(body: str) -> dict[str, Any]:
    return {"claim_id": "C-1", "body": body}


REFUSED_POLICY = (
    "reviews[1] (approve) was refused: the edited output breaks the flow's policies:\n"
    '  policy no_promises (deny): nobody guarantees anything here: "We guarantee it by Friday."\n'
    "fix the edit, or approve it anyway with --override REASON"
)
SCRIPTS = [
    pytest.param(
        case(
            "[approve]",
            "{status: completed, decisions: [approved], outputs: {finance.amount: 120}}",
        ),
        [],
        {"pay": [pay(120)], "send": [send(PAID)]},
        id="approve-as-proposed",
    ),
    pytest.param(
        case(
            "[{approve: {set: {amount: 80}, note: the receipt shows 80}, by: Lena (finance)}]",
            "{status: completed, decisions: [approved], outputs: {finance.amount: 80}}",
        ),
        [],
        {"pay": [pay(80)], "send": [send(PAID)]},
        id="approve-with-an-edit-pays-exactly-that",
    ),
    pytest.param(
        case(
            "[{reject: no receipt}]",
            "{status: completed, ending: done, steps: [route, finance], decisions: [rejected], "
            "outputs: {finance.reason: no receipt}}",
        ),
        [],
        {"pay": [], "send": []},
        id="reject-takes-on-rejected",
    ),
    pytest.param(
        case(
            "[expire]",
            "{status: failed, ending: dead_letter, steps: [route, finance], decisions: [expired]}",
        ),
        [],
        {"pay": [], "send": []},
        id="expire-takes-on-expired",
    ),
    pytest.param(
        case(
            "[approve, approve]",
            "{status: completed, steps: [route, finance, pay, note, check, send], "
            "decisions: [approved, approved]}",
            kind="goodwill",
        ),
        [],
        {"pay": [pay(120)], "send": [send(PAID)]},
        id="a-switch-escalation-then-the-approval-step",
    ),
    pytest.param(
        case(
            "[approve, {approve: {set: {message: We guarantee it by Friday.}, "
            "override: legal agreed}}]",
            "{status: completed, outputs: {note.message: We guarantee it by Friday.}}",
            notes=(PROMISE,),
        ),
        [],
        {"pay": [pay(120)], "send": [send("We guarantee it by Friday.")]},
        id="override-sends-an-edit-that-breaks-a-policy",
    ),
    pytest.param(
        case(
            '[approve, {approve: {set: {message: "42"}}}]',
            "{status: completed, outputs: {note.message: '42'}}",
            notes=(PROMISE,),
        ),
        [],
        {"pay": [pay(120)], "send": [send("42")]},
        id="an-edit-keeps-its-yaml-type",
    ),
    pytest.param(
        case(
            "[approve, {approve: {set: {message: We guarantee it by Friday.}}}]",
            "{status: completed}",
            notes=(PROMISE,),
        ),
        [
            REFUSED_POLICY,
            "status: expected completed, got escalated (reason: policy no_promises: "
            "nobody guarantees anything here)",
        ],
        {"pay": [pay(120)], "send": []},
        id="an-edit-that-breaks-a-policy-is-refused",
    ),
    pytest.param(
        case(
            "[approve, {approve: {set: {message: We guarantee it by Friday.}}, "
            "refused: breaks the flow's policies}, {approve: {set: {message: Paid.}}}]",
            "{status: completed, decisions: [approved, approved]}",
            notes=(PROMISE,),
        ),
        [],
        {"pay": [pay(120)], "send": [send("Paid.")]},
        id="an-expected-refusal-then-a-fixed-edit",
    ),
    pytest.param(
        case(
            "[{approve: {set: {amount: -5}}, refused: does not match the output schema}, approve]",
            "{status: completed, decisions: [approved], outputs: {finance.amount: 120}}",
        ),
        [],
        {"pay": [pay(120)], "send": [send(PAID)]},
        id="an-edit-that-breaks-the-schema-is-refused-as-expected",
    ),
    pytest.param(
        case("[{approve: {set: {amount: -5}}}]", "{status: completed}"),
        [
            "reviews[0] (approve) was refused: the edited output does not match the output "
            "schema of step finance: amount: must be more than 0, found -5",
            "status: expected completed, got escalated (reason: Pay 120 on claim C-1)",
        ],
        {"pay": [], "send": []},
        id="an-edit-that-breaks-the-schema-fails-the-case",
    ),
    pytest.param(
        case(
            "[{approve: {set: {amount: 80}}, refused: does not match}]",
            "{status: completed}",
        ),
        [
            "reviews[0] (approve): expected it to be refused with 'does not match', but it "
            "was accepted"
        ],
        {"pay": [pay(80)], "send": [send(PAID)]},
        id="an-expected-refusal-that-does-not-come",
    ),
    pytest.param(
        case(
            "[{approve: {set: {amount: -5}}, refused: breaks the flow's policies}]",
            "{status: escalated}",
        ),
        [
            'reviews[0] (approve): expected a refusal containing "breaks the flow\'s policies", '
            "got: the edited output does not match the output schema of step finance: amount: "
            "must be more than 0, found -5"
        ],
        {"pay": [], "send": []},
        id="a-refusal-for-another-reason",
    ),
    pytest.param(
        case("[{approve: {set: {branch: 2}}}]", "{status: escalated}", kind="goodwill"),
        [
            "reviews[0] (approve) was refused: run <RUN> stopped at `route`, a route with "
            "nothing to edit: approve or reject it as it is; to let a person change values, "
            "add an `approval` step to the flow"
        ],
        {"pay": [], "send": []},
        id="an-edit-at-a-switch-is-refused",
    ),
    pytest.param(
        case("[{approve: , by: Sam}]", "{status: escalated}"),
        [
            "reviews[0] (approve) was refused: only finance may decide at `finance`; 'Sam' is "
            'not one of them (name your group in parentheses: --as "Your Name (finance)")'
        ],
        {"pay": [], "send": []},
        id="someone-who-is-not-a-reviewer-is-refused",
    ),
    pytest.param(
        case("[approve, approve, {reject: too late}]", "{status: completed}"),
        ["2 scripted reviews were not used: the run is completed, not waiting for review"],
        {"pay": [pay(120)], "send": [send(PAID)]},
        id="reviews-not-used",
    ),
    pytest.param(
        case("[{reject: no receipt}, expire]", "{status: completed}"),
        ["1 scripted review was not used: the run is completed, not waiting for review"],
        {"pay": [], "send": []},
        id="a-review-not-used-after-a-rejection",
    ),
    pytest.param(
        case("[approve, expire]", "{status: escalated}", notes=(PROMISE,)),
        [
            "reviews[1] (expire) was refused: the review at `check` has no deadline (no "
            "`expires_after_seconds` applies to it), so it cannot expire"
        ],
        {"pay": [pay(120)], "send": []},
        id="an-expiry-without-a-deadline",
    ),
    pytest.param(
        case(
            "[approve, {expire: , refused: no deadline}]",
            "{status: escalated, stopped_at: check, decisions: [approved]}",
            notes=(PROMISE,),
        ),
        [],
        {"pay": [pay(120)], "send": []},
        id="an-expiry-without-a-deadline-as-expected",
    ),
    pytest.param(
        case(
            "[approve, {retry: note}]",
            "{status: completed, steps: [route, finance, pay, note, check, note, check, send], "
            "decisions: [approved, retried]}",
            notes=(PROMISE, PAID),
        ),
        [],
        {"pay": [pay(120)], "send": [send(PAID)]},
        id="retry-from-a-step",
    ),
    pytest.param(
        case(
            "[approve]",
            "{status: escalated, stopped_at: finance, decisions: [approved, rejected]}",
            kind="goodwill",
        ),
        ["decisions: expected [approved, rejected], got [approved]"],
        {"pay": [], "send": []},
        id="decisions-that-differ-and-an-escalation-left-waiting",
    ),
]


@pytest.mark.parametrize(("text", "differences", "calls"), SCRIPTS)
def test_scripted_reviews(
    tmp_path: Path, text: str, differences: list[str], calls: dict[str, Any]
) -> None:
    """What `runner test` prints under the case, and what each scripted tool received."""
    test_file = write(tmp_path, text)
    code, lines = run(str(test_file))
    verdict = "FAIL" if differences else "PASS"
    printed = [line for line in lines if line.startswith(("  PASS", "  FAIL", "       "))]
    shown = [f"       {line}" for difference in differences for line in difference.split("\n")]
    assert printed == [f"  {verdict} the case", *shown]
    assert code == (1 if differences else 0)
    test = load_test_file(test_file)
    result = run_case(test, test.cases[0])
    assert result.calls == calls


ROUTES = [
    pytest.param(
        case("[approve]", "{status: completed}"),
        {
            "route": "default",
            "finance": "awaiting_approval ok",
            "pay": "ok",
            "note": "ok",
            "check": "ok",
            "send": "ok",
        },
        id="approval-step-approved",
    ),
    pytest.param(
        case("[{reject: no}]", "{status: completed}"),
        {"route": "default", "finance": "awaiting_approval rejected"},
        id="approval-step-rejected",
    ),
    pytest.param(
        case("[expire]", "{status: failed}"),
        {"route": "default", "finance": "awaiting_approval expired"},
        id="approval-step-expired",
    ),
    pytest.param(
        case("[approve]", "{status: escalated}", kind="goodwill"),
        {"route": "case_1 default", "finance": "awaiting_approval"},
        id="switch-approved-takes-its-default",
    ),
    pytest.param(
        case("[approve, approve]", "{status: completed}", notes=(PROMISE,)),
        {
            "route": "default",
            "finance": "awaiting_approval ok",
            "pay": "ok",
            "note": "ok",
            "check": "violation ok",  # not the draft's `approved` checkpoint
            "send": "ok",
        },
        id="policy-approved-takes-the-checks-route-not-the-drafts",
    ),
]


@pytest.mark.parametrize(("text", "routes"), ROUTES)
def test_the_routes_decisions_take(tmp_path: Path, text: str, routes: dict[str, str]) -> None:
    """An approval takes the stopped step's success route; a rejection or an expiry the
    approval step's `rejected` or `expired` route (step -> its triggers taken)."""
    test = load_test_file(write(tmp_path, text))
    result = run_case(test, test.cases[0])
    assert result.passed, result.differences
    assert result.routes == {
        (step, t) for step, triggers in routes.items() for t in triggers.split()
    }


# -- coverage -------------------------------------------------------------------------------
REJECTED = "  route not exercised: payout: finance -rejected-> done"
EXPIRED = "  route not exercised: payout: finance -expired-> dead_letter"


def shipped_cases(drop: tuple[str, ...] = (), *, reviews: bool = True) -> str:
    """payout.test.yaml without the cases whose names start with one of `drop`, and
    without any `reviews` unless `reviews` (anchors expanded)."""
    data = yaml.safe_load((PAYOUT / "payout.test.yaml").read_text(encoding="utf-8"))
    data["cases"] = [c for c in data["cases"] if not c["name"].startswith(drop or "\0")]
    for each in data["cases"]:
        if not reviews:
            each.pop("reviews", None)
    return yaml.safe_dump(data, sort_keys=False)


@pytest.mark.parametrize(
    ("drop", "missing", "percent"),
    [
        pytest.param((), [], "18/18 (100%)", id="every-case"),
        pytest.param(("finance rejects",), [REJECTED], "17/18 (94%)", id="no-rejection"),
        pytest.param(("nobody in finance",), [EXPIRED], "17/18 (94%)", id="no-expiry"),
        pytest.param(
            ("finance rejects", "nobody in finance"),
            [EXPIRED, REJECTED],
            "16/18 (89%)",
            id="approvals-only",
        ),
    ],
)
def test_coverage_reaches_100_only_with_the_review_routes(
    tmp_path: Path, drop: tuple[str, ...], missing: list[str], percent: str
) -> None:
    code, lines = run(str(write(tmp_path, shipped_cases(drop))), "--min-coverage", "100")
    assert [line for line in lines if line.startswith("  FAIL")] == []
    assert [line for line in lines if line.startswith("  route not")] == missing
    assert f"route coverage: {percent}" in lines
    assert code == (1 if missing else 0)


def test_without_reviews_no_run_gets_past_a_person(tmp_path: Path) -> None:
    """The same cases with their `reviews` taken out: every run stays escalated where it
    first stops, so no route after a review is covered."""
    code, lines = run(str(write(tmp_path, shipped_cases(reviews=False))))
    assert code == 1
    assert [
        line[len("  route not exercised: payout: ") :] for line in lines if "not ex" in line
    ] == [
        "finance -ok-> pay",
        "finance -expired-> dead_letter",
        "finance -rejected-> done",
        "pay -ok-> note",
        "pay -error-> dead_letter",
        "note -ok-> check",
        "note -error-> dead_letter",
        "check -ok-> send",
        "check -error-> dead_letter",
        "check -violation-> human_review",
        "send -ok-> done",
        "send -error-> dead_letter",
        "send -in_doubt-> human_review",
    ]
    assert "route coverage: 5/18 (28%)" in lines


# -- mistakes in the script -------------------------------------------------------------------
HEAD = """\
version: 1
cases:
  - name: the case
    input: {claim: {id: C-1, amount: 120, kind: refund}}
    tools: {pay: [{result: {}}], send: [{result: {}}]}
    expect: {status: completed}
    reviews:
"""
MISTAKES = [
    pytest.param(
        "      - aprove\n",
        [
            '8:9: cases[0].reviews[0]: must be one of approve, expire; found "aprove"; '
            "did you mean approve?"
        ],
        id="unknown-action",
    ),
    pytest.param(
        "      - {approve: {}, reject: no}\n",
        [
            "8:9: cases[0].reviews[0]: a review has exactly one of `approve`, `reject`, `expire`, "
            "`retry`; found `approve` and `reject`"
        ],
        id="two-actions",
    ),
    pytest.param(
        "      - {by: Lena}\n",
        ["8:9: cases[0].reviews[0]: a review needs one of `approve`, `reject`, `expire`, `retry`"],
        id="no-action",
    ),
    pytest.param(
        "      - {approve: {by: Lena}}\n",
        [
            "8:20: cases[0].reviews[0].approve.by: unknown key `by`; allowed here: set, note, "
            "override"
        ],
        id="by-inside-approve",
    ),
    pytest.param(
        "      - {expire: false}\n",
        ["8:18: cases[0].reviews[0].expire: write `expire: true`, or `expire` alone; found false"],
        id="expire-false",
    ),
    pytest.param(
        "      - {reject: ''}\n",
        ["8:18: cases[0].reviews[0].reject: must not be empty"],
        id="reject-without-a-reason",
    ),
    pytest.param(
        "      - {retry: notee}\n      - {retry: nowhere}\n",
        [
            "8:17: cases[0].reviews[0].retry: the flow has no step `notee`; did you mean `note`?",
            "9:17: cases[0].reviews[1].retry: the flow has no step `nowhere`",
        ],
        id="retry-from-an-unknown-step",
    ),
    pytest.param(
        "      - {expire: true, by: Lena}\n",
        [
            "8:24: cases[0].reviews[0].by: nobody decides an expiry (the deadline passes): "
            "remove `by`"
        ],
        id="a-reviewer-for-an-expiry",
    ),
]


@pytest.mark.parametrize(("reviews", "problems"), MISTAKES)
def test_mistakes_in_reviews_are_located(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reviews: str, problems: list[str]
) -> None:
    write(tmp_path, HEAD + reviews)
    monkeypatch.chdir(tmp_path)
    code, lines = run("payout.test.yaml")
    assert code == 1
    assert lines[:-2] == [f"payout.test.yaml:{p}" for p in problems]


def test_a_wrong_decision_name_is_located(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        tmp_path,
        HEAD.replace("{status: completed}", "{decisions: [approve]}") + "      - approve\n",
    )
    monkeypatch.chdir(tmp_path)
    assert run("payout.test.yaml")[1][:-2] == [
        "payout.test.yaml:6:26: cases[0].expect.decisions[0]: must be one of approved, "
        'rejected, expired, retried; found "approve"; did you mean approved?'
    ]


def test_the_schema_offers_what_the_runner_does() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    review = schema["$defs"]["review"]
    assert [o["required"][0] for o in review["then"]["oneOf"]] == list(ACTIONS)
    assert set(review["else"]["enum"]) <= set(ACTIONS)
    decisions = schema["$defs"]["expect"]["properties"]["decisions"]["items"]["enum"]
    assert set(decisions) == {d.value for d in DecisionKind} - {DecisionKind.DROPPED}
    described = [review, *review["then"]["properties"].values()]
    described += review["then"]["properties"]["approve"]["properties"].values()
    assert all(part.get("description") for part in described)
