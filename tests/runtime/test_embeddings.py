"""Text embeddings (runner.runtime.embeddings): the in-process model `local/minilm`,
a hosted model through litellm against a real HTTP server, and the content cache.

Tests marked `local_model` run the real all-MiniLM-L6-v2, fetched once into
RUNNER_MODEL_CACHE (default ~/.cache/runner/models). Deselect with `-m "not local_model"`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scripted_server import Received, Reply, ScriptedServer

from runner.core.errors import LLMError
from runner.runtime.embeddings import Embeddings
from runner.runtime.minilm import MiniLM

LOCAL = "local/minilm"
HOSTED = "openai/text-embedding-3-small"

# Pinned from the reference implementation, not from runner: the first 8 components of
# each sentence's vector, rounded to 5 decimals, as the transformers library's BERT model
# gives them for the same model files (mean pooling over the real tokens, unit length).
SENTENCES = ("Hello world", "A cat sits on the mat.", "The invoice was charged twice this month.")
PINNED = (
    [-0.03448, 0.03102, 0.00674, 0.02611, -0.03936, -0.1603, 0.06692, -0.00644],
    [0.12654, -0.03285, -0.02906, 0.04441, -0.04345, 0.0321, 0.04811, 0.02768],
    [-0.00601, 0.03313, 0.03363, 0.01111, -0.05959, -0.07516, -0.07631, -0.03771],
)


@pytest.fixture
def embeddings(tmp_path: Path) -> Iterator[Embeddings]:
    cache = Embeddings(tmp_path / "embeddings.sqlite3")
    try:
        yield cache
    finally:
        cache.close()


@pytest.fixture
def encoder_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The texts of every call on the local encoder, in order."""
    calls: list[list[str]] = []
    encode = MiniLM.encode

    def counted(self: MiniLM, texts: Sequence[str]) -> Any:
        calls.append(list(texts))
        return encode(self, texts)

    monkeypatch.setattr(MiniLM, "encode", counted)
    return calls


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def assert_unit(vector: Sequence[float]) -> None:
    assert math.isclose(float(np.linalg.norm(vector)), 1.0, abs_tol=1e-5)


# --- local/minilm -----------------------------------------------------------------------


@pytest.mark.local_model
def test_vectors_match_the_reference_implementation(embeddings: Embeddings) -> None:
    vectors = embeddings.embed(LOCAL, SENTENCES)
    for text, expected, vector in zip(SENTENCES, PINNED, vectors, strict=True):
        assert len(vector) == 384
        assert_unit(vector)
        assert vector[:8] == pytest.approx(expected, abs=2e-5), text


@pytest.mark.local_model
def test_similar_sentences_are_closer_than_unrelated_ones(embeddings: Embeddings) -> None:
    charged, billed, weather = embeddings.embed(
        LOCAL,
        [
            "I was charged twice for my subscription this month.",
            "My card was billed two times for the monthly plan.",
            "It will be cold and windy in the mountains tomorrow.",
        ],
    )
    assert cosine(charged, billed) > cosine(charged, weather) + 0.3
    assert cosine(charged, billed) > cosine(billed, weather) + 0.3


@pytest.mark.local_model
def test_a_long_text_is_cut_at_256_tokens(embeddings: Embeddings) -> None:
    long, longer, short = embeddings.embed(
        LOCAL, ["word " * 300, "word " * 400 + "different ending", "word " * 100]
    )
    assert long == pytest.approx(longer, abs=1e-6)
    assert long != pytest.approx(short, abs=1e-3)


@pytest.mark.local_model
def test_a_cached_text_is_not_computed_again(
    tmp_path: Path, embeddings: Embeddings, encoder_calls: list[list[str]]
) -> None:
    texts = ["first text", "second text", "first text", "third text"]
    first = embeddings.embed(LOCAL, texts)
    assert sorted(encoder_calls[0]) == ["first text", "second text", "third text"]
    assert first[0] == first[2]

    encoder_calls.clear()
    assert embeddings.embed(LOCAL, texts) == first
    assert encoder_calls == []

    # Another connection on the same file (as another process would open it).
    other = Embeddings(tmp_path / "embeddings.sqlite3")
    try:
        again = other.embed(LOCAL, ["third text", "a new text", "first text"])
    finally:
        other.close()
    assert encoder_calls == [["a new text"]]
    assert (again[0], again[2]) == (first[3], first[0])


@pytest.mark.local_model
def test_a_text_embedded_without_keep_is_not_written_to_the_cache(
    embeddings: Embeddings, encoder_calls: list[list[str]]
) -> None:
    kept = embeddings.embed(LOCAL, ["an example kept in git"])
    passing = embeddings.embed(LOCAL, ["a customer's ticket", "an example kept in git"], keep=False)
    assert encoder_calls == [["an example kept in git"], ["a customer's ticket"]]
    assert passing[1] == kept[0]  # what was cached is still read from the cache

    encoder_calls.clear()
    embeddings.embed(LOCAL, ["a customer's ticket"], keep=False)
    assert encoder_calls == [["a customer's ticket"]]  # computed again: never kept


@pytest.mark.local_model
def test_threads_embedding_at_once_get_the_same_vectors(
    tmp_path: Path, embeddings: Embeddings
) -> None:
    texts = [f"Ticket {i}: a question about {topic}." for i, topic in enumerate("abcdefghij" * 4)]
    alone = Embeddings(tmp_path / "alone.sqlite3")
    try:
        expected = dict(zip(texts, alone.embed(LOCAL, texts), strict=True))
    finally:
        alone.close()
    start = threading.Barrier(4)

    def work(n: int) -> list[list[float]]:
        mine = texts[n * 7 :] + texts[: n * 7]  # the same texts, in another order
        start.wait(timeout=30)
        return embeddings.embed(LOCAL, mine)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(4)))
    for n, vectors in enumerate(results):
        mine = texts[n * 7 :] + texts[: n * 7]
        for text, vector in zip(mine, vectors, strict=True):
            assert vector == pytest.approx(expected[text], abs=1e-5)
    assert embeddings.embed(LOCAL, texts) == embeddings.embed(LOCAL, texts)


def test_an_unknown_local_model_is_refused_with_the_known_ones(embeddings: Embeddings) -> None:
    with pytest.raises(LLMError) as caught:
        embeddings.embed("local/nomodel", ["text"])
    assert caught.value.kind == "http_4xx"
    assert "local/nomodel" in str(caught.value)
    assert "local/minilm" in str(caught.value)


def test_the_default_cache_is_in_the_model_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_MODEL_CACHE", str(tmp_path / "models"))
    Embeddings().close()
    assert (tmp_path / "models" / "embeddings.sqlite3").is_file()


# --- a hosted model, through litellm ----------------------------------------------------


def openai_embeddings(request: Received) -> dict[str, Any]:
    """An OpenAI `/v1/embeddings` answer: the vector (len, 1, 2) for each input, listed
    in reverse order with its index, as the API allows."""
    inputs = request.json()["input"]
    data = [
        {"object": "embedding", "index": i, "embedding": [float(len(text)), 1.0, 2.0]}
        for i, text in enumerate(inputs)
    ]
    return {
        "object": "list",
        "model": request.json()["model"],
        "data": data[::-1],
        "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
    }


def test_a_hosted_model_gives_unit_vectors_in_order_and_cached(
    http_server: ScriptedServer, embeddings: Embeddings
) -> None:
    http_server.script("/v1/embeddings", Reply(body=openai_embeddings))
    texts = ["a", "four", "a"]
    api_base = http_server.url + "/v1"
    vectors = embeddings.embed(HOSTED, texts, api_base=api_base, timeout_seconds=10)

    (request,) = http_server.requests_to("/v1/embeddings")
    assert request.json()["model"] == "text-embedding-3-small"
    assert sorted(request.json()["input"]) == ["a", "four"]
    for text, vector in zip(texts, vectors, strict=True):
        assert_unit(vector)
        raw = [len(text), 1.0, 2.0]
        assert vector == pytest.approx([x / math.hypot(*raw) for x in raw], abs=1e-6)

    assert embeddings.embed(HOSTED, ["four", "a"], api_base=api_base) == vectors[1::-1]
    assert len(http_server.requests) == 1  # both from the cache


def test_missing_texts_are_sent_in_batches(
    http_server: ScriptedServer, embeddings: Embeddings
) -> None:
    http_server.script("/v1/embeddings", *[Reply(body=openai_embeddings)] * 3)
    texts = [f"text {i}" for i in range(70)]
    vectors = embeddings.embed(HOSTED, texts, api_base=http_server.url + "/v1")
    assert len(vectors) == 70
    sizes = [len(r.json()["input"]) for r in http_server.requests_to("/v1/embeddings")]
    assert sizes == [32, 32, 6]


def test_a_refused_request_is_an_llm_error_and_nothing_is_cached(
    http_server: ScriptedServer, embeddings: Embeddings
) -> None:
    http_server.script(
        "/v1/embeddings",
        Reply(400, {"error": {"message": "input too long", "type": "invalid_request_error"}}),
        Reply(body=openai_embeddings),
    )
    api_base = http_server.url + "/v1"
    with pytest.raises(LLMError) as caught:
        embeddings.embed(HOSTED, ["text"], api_base=api_base, timeout_seconds=10)
    assert caught.value.kind == "http_4xx"
    assert HOSTED in str(caught.value)
    assert "input too long" in str(caught.value)

    assert len(embeddings.embed(HOSTED, ["text"], api_base=api_base)) == 1
    assert len(http_server.requests) == 2


@pytest.mark.parametrize(
    "body",
    [
        {"object": "list", "data": []},
        {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0, 0]}]},
    ],
    ids=["no vectors", "zero vector"],
)
def test_an_unusable_answer_is_invalid_output(
    http_server: ScriptedServer, embeddings: Embeddings, body: dict[str, Any]
) -> None:
    http_server.script("/v1/embeddings", Reply(body=body))
    with pytest.raises(LLMError) as caught:
        embeddings.embed(HOSTED, ["text"], api_base=http_server.url + "/v1")
    assert caught.value.kind == "invalid_output"
    assert HOSTED in str(caught.value)
