"""`runner test` on the shipped flow tests, on deliberately broken copies of the flows,
and on test files with mistakes in them.

The shipped test files (flows/*.test.yaml, examples/*.test.yaml) must pass and exercise
every route they can reach. A flow that is broken on purpose (a lowered confidence
threshold, a removed fallback, a swapped route, a loosened policy) must make at least
one case fail, with a diff that names the difference. Output written for authors is
compared exactly.
"""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml

from runner.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
TEST_FILES = {
    "flows/support.test.yaml": "flows/support.yaml",
    "examples/invoice.test.yaml": "examples/invoice.yaml",
    "examples/leads.test.yaml": "examples/leads.yaml",
    "examples/order_sync.test.yaml": "examples/order_sync.yaml",
    "examples/refund.test.yaml": "examples/refund.yaml",
}
# Error routes of switch and policy steps: their conditions and texts read only values
# that the flows' schemas guarantee, so no scripted answer or tool result can make them
# fail, and the test language has no way to make a step fail on its own.
SECONDS = re.compile(r"\(\d+\.\d s\)$")


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["test", *argv], out=out)
    return code, out.getvalue()


def case_lines(output: str, name: str) -> list[str]:
    """The lines printed under one case: its FAIL line and its differences."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line in (f"  PASS {name}", f"  FAIL {name}"))
    end = start + 1
    while end < len(lines) and lines[end].startswith("       "):
        end += 1
    return lines[start:end]


def failed_cases(output: str) -> list[str]:
    return [line[len("  FAIL ") :] for line in output.splitlines() if line.startswith("  FAIL ")]


def copy_flow(flow: str, into: Path, test_text: str | None = None) -> Path:
    """Copy a flow, its tools folder, its labelled examples and its test file (or
    `test_text`) into `into`."""
    source = ROOT / flow
    shutil.copytree(source.parent / "tools", into / "tools")
    shutil.copy(source, into / source.name)
    for examples in source.parent.glob(f"{source.stem}.examples.jsonl"):
        shutil.copy(examples, into / examples.name)
    test_file = into / (source.stem + ".test.yaml")
    if test_text is None:
        shutil.copy(source.with_name(source.stem + ".test.yaml"), test_file)
    else:
        test_file.write_text(test_text, encoding="utf-8")
    return test_file


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} is not in {path.name} exactly once"
    path.write_text(text.replace(old, new), encoding="utf-8")


# -- the shipped flow tests ----------------------------------------------------------------
def test_shipped_flow_tests_pass_and_write_junit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    junit = tmp_path / "j.xml"
    code, output = run("flows/", "examples/", "--junit", str(junit))
    assert code == 0, output
    expected = {
        path: [c["name"] for c in yaml.safe_load((ROOT / path).read_text())["cases"]]
        for path in TEST_FILES
    }
    total = sum(len(names) for names in expected.values())
    lines = output.splitlines()
    assert SECONDS.sub("(T s)", lines[-1]) == f"{total} cases: {total} passed, 0 failed (T s)"
    assert [line for line in lines if line.startswith("  route not exercised")] == []
    assert any(re.fullmatch(r"route coverage: (\d+)/\1 \(100%\)", line) for line in lines)
    for names in expected.values():
        for name in names:
            assert case_lines(output, name) == [f"  PASS {name}"]
    suites = ElementTree.parse(junit).getroot()
    assert suites.tag == "testsuites"
    found = {suite.get("name"): suite for suite in suites}
    assert sorted(found) == sorted(expected)
    for path, names in expected.items():
        suite = found[path]
        assert (suite.get("tests"), suite.get("failures")) == (str(len(names)), "0")
        assert [case.get("name") for case in suite] == names
        assert all(case.get("classname") == path for case in suite)
    assert suites.findall(".//failure") == []


def test_shipped_flow_tests_cover_every_route(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, output = run("flows/", "examples/", "--min-coverage", "100")
    assert code == 0, output


def test_every_flow_has_a_test_file_beside_it() -> None:
    flows = sorted(
        str(p.relative_to(ROOT))
        for folder in ("flows", "examples")
        for p in (ROOT / folder).glob("*.yaml")
        if ".test." not in p.name
    )
    assert flows == sorted(TEST_FILES.values())
    for test_file in TEST_FILES:
        first = (ROOT / test_file).read_text(encoding="utf-8").splitlines()[0]
        assert first == "# yaml-language-server: $schema=../schemas/flowtest.v1.json"


# -- broken flows make cases fail --------------------------------------------------------
BREAKS = [
    pytest.param(
        "examples/invoice.yaml",
        "min: 0.9}",
        "min: 0.5}",
        ["an extraction the model is unsure of goes to a person"],
        ["status: expected escalated, got completed", "effects.record_invoice: expected 0, got 1"],
        id="threshold-invoice",
    ),
    pytest.param(
        "examples/refund.yaml",
        "min: 0.85}",
        "min: 0.5}",
        ["an unsure assessment goes to a person, never to the bank"],
        [
            "status: expected escalated, got completed",
            "reason: expected it to contain 'below 0.85', got ''",
            "effects.issue_refund: expected 0, got 1",
        ],
        id="threshold-refund",
    ),
    pytest.param(
        "examples/invoice.yaml",
        "    on_error: human_review\n",
        "",
        ["a ledger that stays locked sends the invoice to a person, not to the queue"],
        [
            "status: expected escalated, got failed (reason: step book failed: failed after 1 "
            "attempt: #1 exception: sqlite3.OperationalError: database is locked)",
            "ending: expected human_review, got dead_letter (reason: step book failed: failed "
            "after 1 attempt: #1 exception: sqlite3.OperationalError: database is locked)",
        ],
        id="fallback-removed-invoice",
    ),
    pytest.param(
        "examples/refund.yaml",
        "    on_error: human_review\n",
        "",
        ["the payments provider refuses the refund, so a person looks at it at once"],
        [
            "status: expected escalated, got failed (reason: step refund failed: failed after "
            "1 attempt: #1 http_4xx: 402 card expired)"
        ],
        id="fallback-removed-refund",
    ),
    pytest.param(
        "flows/support.yaml",
        "    on_error: human_review\n",
        "    on_error: dead_letter\n",
        ["the knowledge base times out three times, so a person answers instead of a guess"],
        [
            "ending: expected human_review, got dead_letter (reason: step context failed: "
            "failed after 3 attempts: #1-3 timeout: scripted timeout)"
        ],
        id="fallback-changed-support",
    ),
    pytest.param(
        "examples/leads.yaml",
        'next: hand_to_sales\n      - when: "steps.score.output.score >= 40"\n'
        "        next: nurture",
        'next: nurture\n      - when: "steps.score.output.score >= 40"\n'
        "        next: hand_to_sales",
        [
            "a VP at a large software company is handed to sales and announced once",
            "a manager at a mid-sized company goes to the nurture list",
            "the enrichment API rate limits twice, then answers",
            "the CRM is down for the hot lead, so nobody is alerted about it",
            "the chat webhook was deleted, so a person looks at the hot lead",
            "a chat message that timed out may have been posted, so it is not posted again",
            "the CRM is down for the warm lead, so it waits in the dead-letter queue",
        ],
        [
            "steps (- expected, + actual):\n"
            "      company\n"
            "      person\n"
            "      score\n"
            "      route\n"
            "    + nurture\n"
            "    - hand_to_sales\n"
            "    - alert",
            "effects.alert_sales: expected 1, got 0",
        ],
        id="swapped-branches-leads",
    ),
    pytest.param(
        "flows/support.yaml",
        'deny: "(?i)we(\'ll| will) refund"',
        'deny: "(?i)we\'ll refund"',
        ["a draft that promises a refund is held for a person"],
        [
            "status: expected escalated, got completed",
            "effects.send_reply: expected 0, got 1",
            'outputs.check.violations.0.policy: expected "no_refund_promise", got null',
        ],
        id="policy-loosened-support",
    ),
    pytest.param(
        "examples/invoice.yaml",
        'check: "text | float <= 10000"',
        'check: "text | float <= 20000"',
        ["an invoice above 10,000 waits for a manager"],
        [
            "status: expected escalated, got completed",
            "reason: expected it to contain 'policy under_approval_limit: The invoice total is "
            "above 10,000', got ''",
        ],
        id="policy-loosened-invoice",
    ),
    pytest.param(
        "examples/order_sync.yaml",
        "detect: [credit_card, iban, phone, email]",
        "detect: [credit_card, iban, email]",
        ["a gift message with a phone number is not printed"],
        [
            "status: expected escalated, got completed",
            'outputs.gift_message.violations.0.rule: expected "phone", got null',
        ],
        id="policy-loosened-order-sync",
    ),
]


@pytest.mark.parametrize(("flow", "old", "new", "failing", "differences"), BREAKS)
def test_a_broken_flow_fails_its_tests(
    tmp_path: Path, flow: str, old: str, new: str, failing: list[str], differences: list[str]
) -> None:
    test_file = copy_flow(flow, tmp_path / "copy")
    edit(tmp_path / "copy" / Path(flow).name, old, new)
    junit = tmp_path / "j.xml"
    code, output = run(str(test_file), "--junit", str(junit))
    assert code == 1, output
    assert failed_cases(output) == failing
    printed = case_lines(output, failing[0])
    assert printed[0] == f"  FAIL {failing[0]}"
    for difference in differences:
        block = ["       " + line for line in difference.split("\n")]
        assert any(printed[i : i + len(block)] == block for i in range(1, len(printed))), "\n".join(
            printed
        )
    failures = [
        case.get("name")
        for case in ElementTree.parse(junit).getroot().iter("testcase")
        if case.find("failure") is not None
    ]
    assert failures == failing


def test_the_unbroken_copy_passes(tmp_path: Path) -> None:
    """The copies above fail because of the edit, not because they are copies."""
    for flow in TEST_FILES.values():
        test_file = copy_flow(flow, tmp_path / Path(flow).stem)
        code, output = run(str(test_file))
        assert code == 0, output
        assert failed_cases(output) == []


# -- route coverage ------------------------------------------------------------------------
ONE_CASE = """\
version: 1
cases:
  - name: a clear billing ticket is answered once
    input: {ticket: {id: T-1, subject: Charged twice, body: My card was charged twice.}}
    llm:
      classify: [{category: billing, confidence: 0.9}]
      draft: [{reply: "Sorry about the double charge: we are looking into it today."}]
    tools:
      send_reply: [{result: {status: sent}}]
    expect: {status: completed}
"""


@pytest.mark.parametrize(
    ("minimum", "code", "message"),
    [
        ("50", 1, "route coverage 38.5% is below --min-coverage 50%\n"),
        ("38.5", 1, "route coverage 38.5% is below --min-coverage 38.5%\n"),
        ("38", 0, ""),
    ],
)
def test_min_coverage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], minimum: str, code: int, message: str
) -> None:
    test_file = copy_flow("flows/support.yaml", tmp_path, ONE_CASE)
    assert run(str(test_file), "--min-coverage", minimum)[0] == code
    assert capsys.readouterr().err == message
    lines = run(str(test_file))[1].splitlines()
    assert lines[:2] == [str(test_file), "  PASS a clear billing ticket is answered once"]
    assert lines[2:-1] == [
        "  route not exercised: support: classify -error-> dead_letter",
        "  route not exercised: support: classify -low_confidence-> human_review",
        "  route not exercised: support: context -error-> human_review",
        "  route not exercised: support: draft -error-> dead_letter",
        "  route not exercised: support: check -error-> dead_letter",
        "  route not exercised: support: check -violation-> human_review",
        "  route not exercised: support: send -error-> dead_letter",
        "  route not exercised: support: send -in_doubt-> human_review",
        "route coverage: 5/13 (38%)",
    ]
    assert SECONDS.sub("(T s)", lines[-1]) == "1 case: 1 passed, 0 failed (T s)"


# -- test files with mistakes ---------------------------------------------------------------
CASE = """\
version: 1
cases:
  - name: a clear billing ticket is answered once
    input: {ticket: {id: T-1, subject: Charged twice, body: My card was charged twice.}}
"""
MISTAKES = [
    pytest.param(
        "support.test.yaml",
        CASE + "    tool:\n      send_reply: [{result: {status: sent}}]\n"
        "    expect: {status: completed}\n",
        ["support.test.yaml:5:5: cases[0].tool: unknown key `tool`; did you mean `tools`?"],
        id="unknown-key",
    ),
    pytest.param(
        "support.test.yaml",
        CASE + "    llm:\n      clasify: [{category: billing, confidence: 0.9}]\n"
        "    tools:\n      send_reply: [{result: {status: sent}}]\n"
        "    expect: {status: completed, retries: {sendd: 1}, effects: {send_replies: 1}}\n",
        [
            "support.test.yaml:6:7: cases[0].llm.clasify: the flow has no model step `clasify`; "
            "did you mean `classify`?",
            "support.test.yaml:9:43: cases[0].expect.retries.sendd: the flow has no step "
            "`sendd`; did you mean `send`?",
            "support.test.yaml:9:64: cases[0].expect.effects.send_replies: the flow has no "
            "tool `send_replies`; did you mean `send_reply`?",
        ],
        id="unknown-step-and-tool",
    ),
    pytest.param(
        "support.test.yaml",
        CASE + "    tools:\n      send_reply: [{result: {status: sent}, error: timeout}]\n"
        "    expect: {status: completed}\n",
        [
            "support.test.yaml:6:20: cases[0].tools.send_reply[0]: a tool result has exactly "
            "one of `result`, `error`; found `result` and `error`"
        ],
        id="result-and-error",
    ),
    pytest.param(
        "support.test.yaml",
        "version: 1\nflow: support_v2.yaml\n"
        + CASE[len("version: 1\n") :]
        + "    expect: {status: completed}\n",
        ["support.test.yaml:2:7: flow: no flow file support_v2.yaml"],
        id="missing-flow-named",
    ),
    pytest.param(
        "ghost.test.yaml",
        CASE + "    expect: {status: completed}\n",
        ["ghost.test.yaml:1:1: (top level): no flow file ghost.yaml"],
        id="missing-flow-beside",
    ),
    pytest.param(
        "support.test.yaml",
        CASE + "    tools:\n      send_reply: [{result: {status: sent}]\n"
        "    expect: {status: completed}\n",
        [
            "support.test.yaml:6:43: (file): this `]` closes the mapping opened with `{` at "
            "line 6, column 20: close that mapping with `}` first (brackets close in the "
            "reverse order they open)"
        ],
        id="yaml-syntax",
    ),
]


@pytest.mark.parametrize(("name", "text", "problems"), MISTAKES)
def test_a_test_file_with_mistakes_is_reported_located(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str, problems: list[str]
) -> None:
    copy_flow("flows/support.yaml", tmp_path, "version: 1\n")
    (tmp_path / name).write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code, output = run(name)
    assert code == 1
    lines = output.splitlines()
    assert lines[:-2] == problems
    assert (
        SECONDS.sub("(T s)", lines[-1])
        == "0 cases: 0 passed, 0 failed; 1 test file with problems (T s)"
    )


# -- tools that must be scripted -----------------------------------------------------------
@pytest.mark.parametrize(
    ("flow", "text", "case", "message"),
    [
        pytest.param(
            "flows/support.yaml",
            ONE_CASE.replace("    tools:\n      send_reply: [{result: {status: sent}}]\n", ""),
            "a clear billing ticket is answered once",
            "tool send_reply changes the world or calls out (python, effect): script its results "
            "under `tools: {send_reply: [...]}`",
            id="python-effect",
        ),
        pytest.param(
            "examples/leads.yaml",
            """\
version: 1
env: {ENRICH_API_URL: https://enrich.test, ENRICH_API_KEY: k, CRM_URL: https://crm.test,
      CRM_TOKEN: t, SALES_WEBHOOK_URL: https://chat.test}
cases:
  - name: a hot lead is handed to sales
    input: {lead: {email: dana@bigcorp.example, company_domain: bigcorp.example}}
    tools:
      lookup_person: [{result: {title: VP Sales}}]
      update_crm: [{result: {id: c-1}}]
      alert_sales: [{result: {ok: true}}]
    expect: {status: completed}
""",
            "a hot lead is handed to sales",
            "tool lookup_company changes the world or calls out (http): script its results "
            "under `tools: {lookup_company: [...]}`",
            id="http-read",
        ),
    ],
)
def test_an_unscripted_tool_that_calls_out_fails_the_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flow: str, text: str, case: str, message: str
) -> None:
    outbox = tmp_path / "outbox.jsonl"
    monkeypatch.setenv("RUNNER_OUTBOX", str(outbox))
    test_file = copy_flow(flow, tmp_path / "copy", text)
    code, output = run(str(test_file))
    assert code == 1
    assert case_lines(output, case) == [f"  FAIL {case}", "       " + message]
    assert not outbox.exists()


def test_the_readme_example_passes(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(
        r"```yaml\n(# yaml-language-server: \$schema=\.\./schemas/flowtest"
        r"\.v1\.json\n.*?)```",
        readme,
        re.DOTALL,
    )
    assert len(blocks) == 1
    test_file = copy_flow("flows/support.yaml", tmp_path, blocks[0])
    code, output = run(str(test_file))
    assert code == 0, output
    assert (
        output.splitlines()[1]
        == "  PASS a send that times out may have gone out, so it is not sent again"
    )
