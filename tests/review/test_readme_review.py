"""README.md's review examples work as printed.

The `approval` step of README's "Approval steps" section is run inside a small flow
(python tools, a SQLite store in the default place under the working directory), and
every `$ runner review ...` line of its console transcripts runs as written: its output
must be what README prints below it, after run ids, ages, times and durations are
matched up. The option synopses in README's command table must name options that exist.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.cli.main import main
from runner.lang.load import load_flow
from runner.review.proposals import content_hash
from runner.runtime.engine import Engine
from runner.store.sql import SqlStore

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
RUN_ID = re.compile(r"\b\d{8}-\d{6}-[0-9a-f]{8}\b")

TOOLS = """\
def assess(order):
    return {"amount": 480, "reason": "The chair arrived broken."}


def pay(amount):
    return {"paid": amount}


def draft(ticket):
    return {"reply": "We will refund you today."}


def send(ticket, body):
    return {"sent": True}
"""

# README's approval step, between the step that assesses and the step that pays.
REFUND = """\
version: 1
name: refund
input: {{type: object, required: [order]}}
tools:
  assess:
    python: tools.readme_tools:assess
    input: {{type: object, required: [order]}}
    output: {{type: object, required: [amount, reason]}}
  pay_refund:
    python: tools.readme_tools:pay
    input: {{type: object, required: [amount]}}
    output: {{type: object, required: [paid]}}
    effect: true
    idempotency_key: "refund-{{{{ input.order }}}}"
steps:
  - id: assess
    tool: assess
    args: {{order: "{{{{ input.order }}}}"}}
{steps}on_error: dead_letter
"""

# The support reply README's second transcript edits: held by a policy on its draft.
REPLIES = """\
version: 1
name: replies
input: {type: object, required: [ticket]}
tools:
  draft:
    python: tools.readme_tools:draft
    input: {type: object, required: [ticket]}
    output: {type: object, required: [reply], properties: {reply: {type: string}}}
  send:
    python: tools.readme_tools:send
    input: {type: object, required: [ticket, body]}
    output: {type: object, required: [sent]}
    effect: true
    idempotency_key: "reply-{{ input.ticket }}"
policies:
  no_refund: {deny: "(?i)refund", message: only billing staff promise refunds}
steps:
  - id: draft
    tool: draft
    args: {ticket: "{{ input.ticket }}"}
  - id: check
    policies: [no_refund]
    text: "{{ steps.draft.output.reply }}"
  - id: send
    tool: send
    args: {ticket: "{{ input.ticket }}", body: "{{ steps.draft.output.reply }}"}
on_error: dead_letter
"""


def section(title: str) -> str:
    """README's text under the heading `title`, up to the next heading."""
    match = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#)", README, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)


def transcript(block: str) -> list[tuple[str, str]]:
    """A console block as (command, what it prints) pairs."""
    steps: list[tuple[str, str]] = []
    for line in block.splitlines(keepends=True):
        if line.startswith("$ "):
            steps.append((line[2:].strip(), ""))
        else:
            steps[-1] = (steps[-1][0], steps[-1][1] + line)
    return steps


def normal(text: str) -> str:
    """Ages, times, durations and flow versions as placeholders."""
    for pattern, placeholder in [
        (r"\b\d+[smhd] ago\b", "<AGE> ago"),
        (r"(?m)  \d+[smhd]$", "  <AGE>"),
        (r"\b\d{4}-\d\d-\d\d \d\d:\d\d UTC\b", "<DUE>"),
        (r"\+ *\d+\.\d{3}s", "+<T>"),
        (r"\d+\.\d ms\)", "<MS> ms)"),
        (r"\(\d+\.\d\d s\)", "(<S> s)"),
        (r"version [0-9a-f]{12}\b", "version <DIGEST>"),
    ]:
        text = re.sub(pattern, placeholder, text)
    return text


class Shell:
    """`runner` as a person types it, in a folder with its store in the default place."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.root = root
        self.capsys = capsys
        (root / "tools").mkdir()
        (root / "tools" / "readme_tools.py").write_text(TOOLS)
        (root / ".runner").mkdir()
        self.store = SqlStore(f"sqlite:///{root / '.runner' / 'runner.db'}")
        self.ids: dict[str, str] = {}  # a real run id -> the one README prints

    def start(self, name: str, flow: str, data: dict[str, str]) -> str:
        path = self.root / f"{name}.yaml"
        path.write_text(flow)
        result = Engine(self.store).start(load_flow(path), data)
        assert result.status == "escalated", result
        return result.run_id

    def run(self, command: str) -> tuple[int, str]:
        """The command's exit code and what it printed (errors first, as a terminal
        shows a decision's name before the run it continues)."""
        argv = shlex.split(command)
        assert argv[0] == "runner", command
        for real, printed in self.ids.items():
            argv = [arg.replace(printed, real) for arg in argv]
        self.capsys.readouterr()
        out = io.StringIO()
        code = main(argv[1:], out=out)
        text = self.capsys.readouterr().err + out.getvalue()
        for real, printed in self.ids.items():
            text = text.replace(real, printed)
        return code, text


@pytest.fixture
def shell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Shell]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNNER_DB", raising=False)
    made = Shell(tmp_path, capsys)
    try:
        yield made
    finally:
        made.store.close()


def test_the_approval_section_runs_as_printed(shell: Shell) -> None:
    text = section("Approval steps")
    [steps] = fenced(text, "yaml")
    printed = list(dict.fromkeys(RUN_ID.findall(text)))
    assert len(printed) == 3, printed  # two refunds waiting, one support reply
    refund = REFUND.format(steps=steps)
    real = [
        shell.start("refund", refund, {"order": "O-7"}),
        shell.start("refund", refund, {"order": "O-8"}),
        shell.start("replies", REPLIES, {"ticket": "T-3"}),
    ]
    shell.ids = dict(zip(real, printed, strict=True))
    commands = [step for block in fenced(text, "console") for step in transcript(block)]
    assert len(commands) == 6
    for command, expected in commands:
        code, output = shell.run(command)
        assert normal(output) == normal(expected), command
        assert code == (1 if expected.startswith("runner: ") else 0), (command, output)


def test_what_the_approval_decided_is_what_was_paid(shell: Shell) -> None:
    """Past the printed words: the partial refund paid 300, the duplicate nothing."""
    test_the_approval_section_runs_as_printed(shell)
    o7, o8, reply = shell.ids
    assert [(c.step_id, c.output) for c in shell.store.checkpoints(o7)][-2:] == [
        ("finance", {"amount": 300, "note": "Refund for order O-7"}),
        ("pay", {"paid": 300}),
    ]
    [approved] = shell.store.decisions(o7)
    assert approved.content_hash == content_hash({"amount": 300, "note": "Refund for order O-7"})
    assert approved.decided_by == "Lena (finance)"
    assert "amount: 480 -> 300" in shell.run(f"runner show {shell.ids[o7]}")[1]
    assert shell.store.run(o8).status == "completed"  # on_rejected: done
    assert "pay" not in {c.step_id for c in shell.store.checkpoints(o8)}
    [decision] = shell.store.decisions(reply)
    assert (decision.decided_by, decision.override) == ("Ben (support)", "billing agreed by phone")


@pytest.mark.parametrize("group", ["review", "dlq"])
def test_the_command_table_names_options_that_exist(
    group: str, capsys: pytest.CaptureFixture[str]
) -> None:
    row = next(line for line in README.splitlines() if line.startswith(f"| `runner {group} "))
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", row))
    assert named, row
    known: set[str] = set()
    for action in re.search(rf"`runner {group} ([a-z|\\]+)`", row).group(1).split("\\|"):  # type: ignore[union-attr]
        with contextlib.suppress(SystemExit):
            main([group, action, "--help"])
        known |= set(re.findall(r"--[a-z][a-z-]*", capsys.readouterr().out))
    assert named <= known, named - known
