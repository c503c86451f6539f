"""Text embeddings for the novelty confidence gate: unit vectors, cached by content.

`local/minilm` is all-MiniLM-L6-v2, computed in this process (`runner.runtime.minilm`);
any other model string goes to litellm's `embedding` call (a hosted model, or an
OpenAI-compatible server at `api_base`). Every vector is kept in an SQLite file, keyed
by the sha256 of the model name and the text, so a text is embedded once per model,
across runs and processes. Failures are LLMErrors, with the kinds model calls use.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from runner.core.errors import LLMError
from runner.runtime.local_models import cache_dir
from runner.runtime.models import translate_error

Vectors = npt.NDArray[np.float32]  # one unit vector per row

BATCH = 32  # texts per model call
LOOKUP = 500  # keys per cache query, under SQLite's limit on parameters


def _minilm(texts: Sequence[str]) -> Vectors:
    from runner.runtime import minilm

    return minilm.model().encode(texts)


# The embedding models computed in-process, by model string.
LOCAL: dict[str, Callable[[Sequence[str]], Vectors]] = {"local/minilm": _minilm}


class Embeddings:
    """Embeds texts with a named model, each text once per model: its vector is read
    from the cache when it is there. Several threads may call `embed` at once."""

    def __init__(self, cache_path: Path | None = None) -> None:
        self.cache_path = cache_path or cache_dir() / "embeddings.sqlite3"
        self._lock = threading.Lock()  # one connection, one user at a time
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.cache_path, timeout=30, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # a cache: losing a write is fine
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS vectors"
                " (key BLOB PRIMARY KEY, vector BLOB NOT NULL) WITHOUT ROWID"
            )
        except (OSError, sqlite3.Error) as exc:
            raise LLMError(f"embedding cache {self.cache_path}: {exc}", "exception") from exc

    def embed(
        self,
        model: str,
        texts: Sequence[str],
        *,
        api_base: str | None = None,
        timeout_seconds: float | None = None,
        keep: bool = True,
    ) -> list[list[float]]:
        """Unit-length vectors, one per text, in order; with `keep` False the ones
        computed now are not written to the cache."""
        if model.startswith("local/") and model not in LOCAL:
            raise LLMError(
                f"model {model}: unknown local embedding model; known: {', '.join(LOCAL)}",
                "http_4xx",
            )
        keys = [_key(model, text) for text in texts]
        found = self._cached(keys)
        # Each missing text once, similar lengths together (less padding for local models).
        unseen = dict.fromkeys(t for t, k in zip(texts, keys, strict=True) if k not in found)
        missing = sorted(unseen, key=len)
        for start in range(0, len(missing), BATCH):
            batch = missing[start : start + BATCH]
            vectors = self._compute(model, batch, api_base, timeout_seconds)
            fresh = {_key(model, t): v.tobytes() for t, v in zip(batch, vectors, strict=True)}
            if keep:
                self._keep(fresh)
            found.update(fresh)
        return [np.frombuffer(found[key], dtype=np.float32).tolist() for key in keys]

    def close(self) -> None:
        """Close the cache file; `embed` fails after this."""
        with self._lock:
            self._db.close()

    def _compute(
        self, model: str, texts: list[str], api_base: str | None, timeout: float | None
    ) -> Vectors:
        local = LOCAL.get(model)
        if local is None:
            return _hosted(model, texts, api_base, timeout)
        try:
            return local(texts)
        except LLMError as exc:  # its wheel could not be downloaded, or failed its sha256
            raise LLMError(f"model {model}: {exc}", exc.kind, exc.retry_after) from exc
        except OSError as exc:  # its files could not be written or read
            raise LLMError(f"model {model}: {exc}", "connection") from exc
        except Exception as exc:
            raise LLMError(f"model {model}: {type(exc).__name__}: {exc}", "exception") from exc

    def _cached(self, keys: list[bytes]) -> dict[bytes, bytes]:
        """The cached vectors among `keys`, by key."""
        unique = list(dict.fromkeys(keys))
        found: dict[bytes, bytes] = {}
        with self._lock, _cache_errors(self.cache_path):
            for start in range(0, len(unique), LOOKUP):
                chunk = unique[start : start + LOOKUP]
                marks = ",".join("?" * len(chunk))
                query = f"SELECT key, vector FROM vectors WHERE key IN ({marks})"
                found.update(self._db.execute(query, chunk).fetchall())
        return found

    def _keep(self, vectors: dict[bytes, bytes]) -> None:
        # Another thread or process may have stored the same text: the same vector.
        with self._lock, _cache_errors(self.cache_path), self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO vectors (key, vector) VALUES (?, ?)", vectors.items()
            )


@contextmanager
def _cache_errors(path: Path) -> Iterator[None]:
    """Turns an SQLite failure into an LLMError naming the cache file."""
    try:
        yield
    except sqlite3.Error as exc:
        raise LLMError(f"embedding cache {path}: {exc}", "exception") from exc


def _key(model: str, text: str) -> bytes:
    return hashlib.sha256(json.dumps([model, text]).encode("utf-8")).digest()


def _hosted(model: str, texts: list[str], api_base: str | None, timeout: float | None) -> Vectors:
    """Vectors from litellm's `embedding` call, scaled to unit length."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    # Retrying is the flow's retry policy's job. (litellm 1.110's OpenAI route reads 0 as
    # "its default", so an OpenAI-style server still sees up to 3 attempts per call.)
    kwargs: dict[str, Any] = {"model": model, "input": list(texts), "max_retries": 0}
    if timeout is not None:
        kwargs["timeout"] = timeout
    if api_base:
        kwargs["api_base"] = api_base
        kwargs["api_key"] = os.environ.get("OPENAI_API_KEY", "none")
    try:
        response = litellm.embedding(**kwargs)
    except Exception as exc:
        raise translate_error(litellm, exc, model) from exc
    return _unit_vectors(model, response, len(texts))


def _unit_vectors(model: str, response: Any, count: int) -> Vectors:
    """The response's vectors in input order, checked and scaled to unit length."""
    items = [_as_dict(item) for item in (getattr(response, "data", None) or [])]
    try:
        items.sort(key=lambda item: int(item.get("index", 0)))
        rows = [[float(x) for x in item["embedding"]] for item in items]
    except (KeyError, TypeError, ValueError) as exc:
        raise LLMError(f"model {model}: malformed embeddings: {exc}", "invalid_output") from exc
    if len(rows) != count or len({len(row) for row in rows}) > 1:
        raise LLMError(
            f"model {model}: expected {count} embeddings of one size, got sizes "
            f"{[len(row) for row in rows]}",
            "invalid_output",
        )
    vectors = np.array(rows, dtype=np.float64).reshape(count, -1)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if not (np.isfinite(norms).all() and (norms > 0).all()):
        raise LLMError(f"model {model}: an embedding is zero or not finite", "invalid_output")
    unit: Vectors = (vectors / norms).astype(np.float32)
    return unit


def _as_dict(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        return item
    return {"embedding": getattr(item, "embedding", None), "index": getattr(item, "index", 0)}
