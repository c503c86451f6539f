"""The novelty gate reads its examples file once, and again only when it changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runner.core.errors import LLMError
from runner.kinds.confidence.similarity import Similarity


def test_the_examples_file_is_read_again_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "examples.jsonl"
    path.write_text('{"text": "a", "output": {"k": "x"}}\n', encoding="utf-8")
    gate = Similarity()
    first = gate._examples(path)
    assert gate._examples(path) is first  # unchanged: not read again

    path.write_text('{"text": "b", "output": {"k": "y"}}\n', encoding="utf-8")
    os.utime(path, ns=(1, 1))  # a different modification time, whatever the clock
    digest, examples = gate._examples(path)
    assert digest != first[0]
    assert [e.text for e in examples] == ["b"]


def test_a_missing_examples_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(LLMError, match="cannot read examples file"):
        Similarity()._examples(tmp_path / "gone.jsonl")
