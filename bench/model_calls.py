"""runner's own CPU per model call: through litellm, and on the lean path for
OpenAI-compatible servers (runner.runtime.openai_compat), in one process, interleaved.

An OpenAI-compatible server in a separate process (its CPU is not counted) answers at
once; this process makes `--calls` calls one after another on each path, in `--rounds`
interleaved rounds, and reports the CPU time (user + system) per call of each round and
the ratio of the medians.

    .venv/bin/python bench/model_calls.py [--calls 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

SERVER = r"""
import json, socket, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = json.dumps({
    "id": "c", "object": "chat.completion", "model": "served",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "hello"}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}).encode()

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def cpu() -> float:
    times = os.times()
    return times.user + times.system


def round_of(call: Any, calls: int) -> float:
    """CPU ms per call over `calls` calls."""
    started = cpu()
    for _ in range(calls):
        call()
    return (cpu() - started) * 1000 / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())  # type: ignore[union-attr]
        results = measure(f"http://127.0.0.1:{port}/v1", args.calls, args.rounds)
    finally:
        server.terminate()
    report(results, args.json)


def measure(base: str, calls: int, rounds: int) -> dict[str, list[float]]:
    import litellm

    from runner.core.llm import LLMRequest
    from runner.runtime.models import LiteLLMClient

    client = LiteLLMClient()
    request = LLMRequest("openai/served", [{"role": "user", "content": "Say hello"}], api_base=base)
    kwargs = client._arguments(litellm, request)

    def through_litellm() -> None:
        litellm.completion(**kwargs)

    def lean() -> None:
        client.complete(request)

    for warm in (through_litellm, lean):  # imports, connection pools
        round_of(warm, 20)
    results: dict[str, list[float]] = {"litellm": [], "lean": []}
    for _ in range(rounds):
        results["litellm"].append(round_of(through_litellm, calls))
        results["lean"].append(round_of(lean, calls))
        time.sleep(0.1)
    return results


def report(results: dict[str, list[float]], as_json: bool) -> None:
    medians = {name: statistics.median(values) for name, values in results.items()}
    if as_json:
        print(json.dumps({"rounds": results, "median_ms": medians}, indent=2))
        return
    print("| path | CPU ms per call (median) | rounds |")
    print("| --- | --- | --- |")
    for name, values in results.items():
        print(f"| {name} | {medians[name]:.3f} | {', '.join(f'{v:.3f}' for v in values)} |")
    print(f"\nlean / litellm: {medians['lean'] / medians['litellm']:.3f}")


if __name__ == "__main__":
    main()
