"""Alerts: when a run is escalated or fails, tell people through the flow's `notify`
tool. A hook after the run, not part of it: the alert is retried like any tool call,
and its failure is recorded as an event without touching the run's state.

The alert's templates read `run.url`: the run's page in the review inbox of
`runner serve`, when RUNNER_PUBLIC_URL (the inbox's public address, `serve
--public-url`) is set in the worker's environment; empty otherwise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from runner.core import templates
from runner.core.errors import StepError
from runner.core.events import AlertSent
from runner.kinds.base import Call
from runner.kinds.registry import TOOL_KINDS
from runner.lang.compiler import CompiledFlow
from runner.runtime.visit import RunState
from runner.store.records import StepCommit

if TYPE_CHECKING:
    from runner.runtime.engine import Engine

PUBLIC_URL = "RUNNER_PUBLIC_URL"


def run_url(environ: Mapping[str, str], run_id: str) -> str:
    """The run's page in the review inbox (`<public url>/runs/<id>`), or "" when
    RUNNER_PUBLIC_URL does not say where the inbox is."""
    base = (environ.get(PUBLIC_URL) or "").strip().rstrip("/")
    return f"{base}/runs/{quote(run_id, safe='')}" if base else ""


class Alerts:
    """The after-run hook that sends a flow's `notify` alert."""

    def after_run(
        self, engine: Engine, compiled: CompiledFlow, state: RunState, commit: StepCommit
    ) -> None:
        notify = compiled.flow.notify
        if notify is None or commit.status not in notify.on:
            return
        tool = compiled.flow.tools[notify.tool]
        run = {
            "id": state.run_id,
            "flow": state.flow,
            "status": commit.status,
            "step": commit.failed_step,
            "reason": commit.reason,
            "url": run_url(engine.environ, state.run_id),
        }
        ctx: dict[str, Any] = {
            "run": run,
            "input": state.input,
            "env": engine.environ,
            "secret": engine.environ,
        }
        step = compiled.flow.step(commit.checkpoint.step_id)
        try:
            args = templates.render_tree(dict(notify.args), ctx)
            request = TOOL_KINDS[tool.kind].request(tool, {**ctx, "args": args})
            key = f"alert:{state.run_id}:{commit.checkpoint.seq}"
            call = Call(args, tool.timeout_seconds, key, request)
            _, attempts = engine.tools.call(compiled, step, tool, call)
            event = AlertSent(tool=tool.name, status="sent", attempts=len(attempts) + 1)
        except StepError as exc:
            event = AlertSent(tool=tool.name, status="failed", error=str(exc))
        engine.store.add_events(state.run_id, [event.redacted(engine.redactor(compiled))])
