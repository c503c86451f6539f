"""The lean path for OpenAI-compatible servers (runner.runtime.openai_compat), against a
real HTTP server on 127.0.0.1: what is sent, what is read back, and the retry class of
every way a call fails."""

from __future__ import annotations

import math
from typing import Any

import pytest
from scripted_server import Received, Reply, ScriptedServer

from runner.core.errors import LLMError
from runner.core.llm import LLMRequest
from runner.runtime.models import LiteLLMClient

PATH = "/v1/chat/completions"


def completion(text: str = "hello", **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": "stop"}
    choice.update(extra)
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "served",
        "choices": [choice],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }


def request(server: ScriptedServer, model: str = "openai/served", **extra: Any) -> LLMRequest:
    messages = [{"role": "user", "content": "Say hello"}]
    return LLMRequest(model, messages, api_base=server.url + "/v1", timeout_seconds=5, **extra)


def test_the_request_is_litellms_and_the_answer_is_read_back(
    http_server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key-1234")
    logprobs = {
        "content": [
            {"token": "hel", "logprob": math.log(0.5), "top_logprobs": [
                {"token": "hel", "logprob": math.log(0.5)}, {"token": "hi", "logprob": -2.0}]},
        ]
    }  # fmt: skip
    http_server.script(PATH, Reply(body=completion("hello", logprobs=logprobs)))
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    answer = LiteLLMClient().complete(
        request(http_server, temperature=0, max_tokens=20, logprobs=True, schema=schema)
    )
    (sent,) = http_server.requests_to(PATH)
    body = sent.json()
    assert sent.header("Authorization") == "Bearer sk-test-key-1234"
    assert body["model"] == "served"
    assert (body["temperature"], body["max_tokens"]) == (0, 20)
    assert (body["logprobs"], body["top_logprobs"]) == (True, 20)
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"][0]["role"] == "system" and '"a"' in body["messages"][0]["content"]
    assert body["messages"][-1] == {"role": "user", "content": "Say hello"}
    assert answer.text == "hello"
    assert (answer.prompt_tokens, answer.completion_tokens) == (12, 3)
    assert answer.logprobs == (("hel", math.log(0.5), (("hel", math.log(0.5)), ("hi", -2.0))),)
    assert answer.cost_usd is None  # a self-hosted model: no price known
    assert answer.latency_ms > 0


def test_tool_calls_come_back(http_server: ScriptedServer) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": 1}'}}
    reply = completion("")
    reply["choices"][0]["message"]["tool_calls"] = [call]
    http_server.script(PATH, Reply(body=reply))
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    answer = LiteLLMClient().complete(request(http_server, tools=[tool]))
    assert http_server.requests_to(PATH)[0].json()["tools"] == [tool]
    assert [(c.id, c.name, c.arguments) for c in answer.tool_calls] == [
        ("c1", "lookup", '{"q": 1}')
    ]


def test_a_known_model_is_priced_from_litellms_table(http_server: ScriptedServer) -> None:
    http_server.script(PATH, Reply(body=completion()))
    answer = LiteLLMClient().complete(request(http_server, model="openai/gpt-4o-mini"))
    assert answer.cost_usd is not None and answer.cost_usd > 0


@pytest.mark.parametrize(
    ("reply", "kind", "said"),
    [
        (Reply(429, "slow down", {"Retry-After": "3"}), "http_429", "limiting requests (429)"),
        (Reply(503, "overloaded"), "http_5xx", "failed (503, a server error)"),
        (Reply(404, "no model"), "http_4xx", "no such model at the service (404)"),
        (Reply(401, "bad key"), "http_4xx", "API key was not accepted (401)"),
        (Reply(200, "<html>gateway</html>"), "http_5xx", "not a chat completion"),
        (Reply(200, {"choices": []}), "http_5xx", "not a chat completion"),
    ],
)
def test_each_failure_has_its_retry_class(
    http_server: ScriptedServer, reply: Reply, kind: str, said: str
) -> None:
    http_server.script(PATH, reply)
    with pytest.raises(LLMError) as caught:
        LiteLLMClient().complete(request(http_server))
    assert caught.value.kind == kind
    assert said in str(caught.value) and str(caught.value).startswith("model openai/served: ")
    if kind == "http_429":
        assert caught.value.retry_after == 3.0


def test_a_refused_connection_and_a_slow_answer(
    http_server: ScriptedServer, refused_url: str
) -> None:
    refused = LLMRequest("openai/served", [{"role": "user", "content": "x"}], api_base=refused_url)
    with pytest.raises(LLMError) as caught:
        LiteLLMClient().complete(refused)
    assert caught.value.kind == "connection"
    http_server.script(PATH, Reply(body=completion(), delay=3))
    slow = LLMRequest(
        "openai/served", [{"role": "user", "content": "x"}], api_base=http_server.url + "/v1",
        timeout_seconds=0.5,
    )  # fmt: skip
    with pytest.raises(LLMError) as caught:
        LiteLLMClient().complete(slow)
    assert caught.value.kind == "timeout"


def _seen(request: Received) -> dict[str, Any]:
    return completion(request.json()["model"])


def test_many_threads_share_one_client(http_server: ScriptedServer) -> None:
    import concurrent.futures

    http_server.script(PATH, *[Reply(body=_seen)] * 40)
    client = LiteLLMClient()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.complete(request(http_server)), range(40)))
    assert {a.text for a in answers} == {"served"}
    assert len(http_server.requests_to(PATH)) == 40


def test_the_lean_path_never_imports_litellm(http_server: ScriptedServer) -> None:
    """litellm costs seconds of CPU to import: a worker that only calls OpenAI-compatible
    servers never pays it."""
    import subprocess
    import sys

    http_server.script(PATH, Reply(body=completion("hi")))
    script = (
        "import sys\n"
        "from runner.core.llm import LLMRequest\n"
        "from runner.runtime.models import LiteLLMClient\n"
        f"r = LLMRequest('openai/gpt-4o-mini', [{{'role': 'user', 'content': 'x'}}], "
        f"api_base='{http_server.url}/v1')\n"
        "answer = LiteLLMClient().complete(r)\n"
        "print(answer.text, answer.cost_usd > 0, 'litellm' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["hi", "True", "False"], done.stderr
