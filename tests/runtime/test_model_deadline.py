"""A model call's `timeout_seconds` is a deadline for the whole call, whatever the client
does meanwhile (a model served in-process that never answers included)."""

from __future__ import annotations

import threading
import time

import pytest

from runner.core.errors import LLMError
from runner.runtime.models import within


def test_a_call_that_never_returns_is_a_timeout_at_the_deadline() -> None:
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(LLMError) as caught:
        within(0.3, lambda: release.wait(30))
    waited = time.monotonic() - started
    release.set()
    assert caught.value.kind == "timeout"
    assert str(caught.value) == "no answer within 0.3 s"
    assert 0.3 <= waited < 5


def test_a_call_within_its_deadline_gives_its_result_or_its_error() -> None:
    assert within(5, lambda: 42) == 42

    def broken() -> None:
        raise ValueError("upstream said no")

    with pytest.raises(ValueError, match="upstream said no"):
        within(5, broken)
