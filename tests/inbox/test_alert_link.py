"""A `notify` alert links to the run's page in the review inbox when RUNNER_PUBLIC_URL
says where the inbox is (`run.url`); without it the link is empty."""

from __future__ import annotations

from pathlib import Path

import pytest
from scripted_server import Reply, ScriptedServer

from runner.lang.load import load_flow
from runner.runtime.engine import Engine
from runner.store.sql import SqlStore

FLOW = """\
version: 1
name: held
input: {type: object, required: [order], properties: {order: {type: string}}}
tools:
  chat:
    http: {method: POST, url: "HOOK/hook", json: {text: "{{ args.text }}"}}
notify:
  tool: chat
  args: {text: "{{ run.flow }} {{ run.status }} at {{ run.step }}: {{ run.url }}"}
  on: [escalated]
steps:
  - id: sign
    approval: {title: "Order {{ input.order }}"}
on_error: dead_letter
"""


@pytest.mark.parametrize(
    ("public_url", "link"),
    [
        ("https://inbox.example.org/", "https://inbox.example.org/runs/{run}"),
        ("http://10.0.0.5:8080/review", "http://10.0.0.5:8080/review/runs/{run}"),
        (None, ""),
    ],
    ids=["https", "under-a-path", "unset"],
)
def test_an_alert_links_to_the_run_page_when_the_inbox_address_is_set(
    tmp_path: Path, http_server: ScriptedServer, public_url: str | None, link: str
) -> None:
    http_server.script("/hook", Reply(200, {"ok": True}))
    flow = tmp_path / "held.yaml"
    flow.write_text(FLOW.replace("HOOK", http_server.url), encoding="utf-8")
    environ = {"RUNNER_PUBLIC_URL": public_url} if public_url else {}
    store = SqlStore(f"sqlite:///{tmp_path / 'runs.db'}")
    result = Engine(store, environ=environ).start(load_flow(flow), {"order": "A-1"})
    store.close()
    (sent,) = http_server.wait_for_requests(1, path="/hook")
    expected = f"held escalated at sign: {link.format(run=result.run_id)}"
    assert sent.json() == {"text": expected}
