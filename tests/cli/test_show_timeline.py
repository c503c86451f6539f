"""`runner show` prints a run's timeline; the same finding repeated at one step prints
once with a count, not once per occurrence."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runner.cli.main import main

FLOW = """\
version: 1
name: guard
input: {type: object, required: [text], properties: {text: {type: string}}}
policies:
  no_emails: {detect: email, message: no e-mail addresses}
steps:
  - id: check
    policies: [no_emails]
    text: "{{ input.text }}"
on_error: dead_letter
"""


def test_a_policy_that_fires_three_times_prints_once_with_a_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "guard.yaml").write_text(FLOW, encoding="utf-8")
    (tmp_path / "in.json").write_text(
        '{"text": "a@example.com, b@example.com and c@example.com"}', encoding="utf-8"
    )
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    assert (
        main(
            ["run", str(tmp_path / "guard.yaml"), "--input", str(tmp_path / "in.json"), "--db", db]
        )
        == 4
    )
    run = re.search(r"run (\S+) escalated", capsys.readouterr().out)
    assert run is not None
    assert main(["show", run.group(1), "--db", db]) == 0
    text = re.sub(r"version [0-9a-f]{12}", "version <V>", capsys.readouterr().out)
    text = re.sub(r"[0-9.]+ ms\)", "<MS> ms)", text)
    lines = [line.split("s  ", 1)[1] for line in text.splitlines() if line.startswith("  +")]
    assert lines == [
        "-                run started (flow guard, version <V>)",
        "check            policy no_emails fired (email): no e-mail addresses (x3)",
        "check            violation -> human_review  (1 attempt, <MS> ms)",
    ]
