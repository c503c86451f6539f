"""Model answers kept by content, so that evaluating again (another threshold, another
version of the flow that asks the same things) costs no model call.

The key is a digest of everything that shapes an answer: the model, the messages, the
schema, the sampling parameters, the tools offered, the endpoint, and which asking of
the same thing in one case this is (an agreement gate asks the same question several
times and must get its several samples back). Answers live in one SQLite file, safe to
share between threads and processes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from runner.core.errors import UsageError
from runner.core.llm import LLMClient, LLMRequest, LLMResponse, ToolCallRequest
from runner.runtime.models import TOP_LOGPROBS


class AnswerCache:
    """Answers by key, in an SQLite file (`:memory:` keeps them for this process only)."""

    def __init__(self, path: Path | str) -> None:
        try:
            if str(path) != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT)"
            )
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(f"cannot use {path} as the answer cache: {exc}") from exc
        self._lock = threading.Lock()

    def get(self, key: str) -> LLMResponse | None:
        with self._lock:
            row = self._db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else _response(json.loads(row[0]))

    def put(self, key: str, response: LLMResponse) -> None:
        data = {k: v for k, v in asdict(response).items() if k != "raw"}
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, json.dumps(data))
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _response(data: dict[str, Any]) -> LLMResponse:
    logprobs = data.get("logprobs")
    return LLMResponse(
        **{
            **data,
            "tool_calls": tuple(ToolCallRequest(**c) for c in data.get("tool_calls") or ()),
            "logprobs": None
            if logprobs is None
            else tuple((t, lp, tuple(map(tuple, alts))) for t, lp, alts in logprobs),
        }
    )


def request_key(request: LLMRequest, asking: int) -> str:
    """The digest of what shapes the answer to `request`, asked for the `asking`-th time."""
    shape = {
        "model": request.model,
        "messages": request.messages,
        "schema": request.schema,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "logprobs": TOP_LOGPROBS if request.logprobs else 0,  # how many alternatives
        "tools": request.tools,
        "api_base": request.api_base,
        "asking": asking,
    }
    text = json.dumps(shape, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CachingLLM:
    """A model client shared by an evaluation's cases: answers from the cache, else from
    `inner` (and kept). A case runs on one thread from `begin()` to `counts()`, which
    gives the calls it made and the answers the cache gave it."""

    def __init__(self, inner: LLMClient, cache: AnswerCache | None) -> None:
        self.inner = inner
        self.cache = cache
        self._case = threading.local()

    def begin(self) -> None:
        """A new case on this thread: it asks things for the first time."""
        self._case.asked = Counter()
        self._case.hits = 0
        self._case.calls = 0

    def counts(self) -> tuple[int, int]:
        """(model calls made, answers from the cache) for this thread's case."""
        return self._case.calls, self._case.hits

    def complete(self, request: LLMRequest) -> LLMResponse:
        case = self._case
        if not hasattr(case, "asked"):
            self.begin()
        base = request_key(request, 0)
        case.asked[base] += 1
        key = request_key(request, case.asked[base] - 1)
        found = self.cache.get(key) if self.cache else None
        if found is not None:
            case.hits += 1
            return found
        case.calls += 1
        response = self.inner.complete(request)
        if self.cache:
            self.cache.put(key, response)
        return response
