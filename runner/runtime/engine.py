"""The engine: runs a run step by step on its compiled machine, durably.

Each step's outcome (ok, error, low_confidence, violation, a branch, in_doubt) is a
trigger on the run's machine, which names the next position. The step's checkpoint,
the new position, its effect-ledger row and its events commit in one transaction, so
a process killed anywhere leaves the run at a step boundary or inside a recorded
effect. Completed steps never run again; an effect never runs twice for one key.
"""

from __future__ import annotations

import json
import os
import random
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from runner.core import templates
from runner.lang.compiler import CompiledFlow, machine_position
from runner.core.errors import InputError, StepError, StoreError, ToolError
from runner.lang.load import load_flow_text
from runner.runtime.models import LLMClient
from runner.runtime.session import BudgetExceededError, Session, Usage, judge_policy, run_llm_step
from runner.lang.model import ENDINGS, AgentStep, LlmStep, PolicyStep, Step, SwitchStep, Tool, ToolStep
from runner.store.records import Checkpoint, Event, FlowVersion, StepCommit, now
from runner.runtime.redact import redactor
from runner.runtime.retry import Attempt, Clock, Retrier, RetriesExhaustedError, SystemClock
from runner.lang.schema import instance_problems
from runner.store.sql import SqlStore, owner_id
from runner.kinds.tools.builtin import TOOL_KINDS, Call, ToolKind
from runner.runtime.versions import flow_version

DEFAULT_MAX_INPUT_BYTES = 1024 * 1024


@dataclass(frozen=True)
class RunResult:
    """Where a run stands after the engine stopped driving it."""

    run_id: str
    status: str
    position: str
    reason: str | None = None
    error: Any = None


@dataclass
class StepResult:
    """What a step produced: its outcome (a trigger) and what to record."""

    outcome: str
    output: Any = None
    attempts: int = 1
    events: list[Event] = field(default_factory=list)
    effect: tuple[str, str, Any] | None = None
    error: Any = None
    reason: str | None = None


@dataclass
class _RunState:
    run_id: str
    flow: str
    input: Any
    outputs: dict[str, Any]
    seq: int
    usage: Usage = field(default_factory=Usage)


class Engine:
    """Starts and resumes runs against one store. Safe to share between threads: the
    only per-engine state is caches of compiled flows and tool instances."""

    def __init__(self, store: SqlStore, *, clock: Clock | None = None,
                 environ: Mapping[str, str] | None = None, http_transport: Any = None,
                 rng: random.Random | None = None, llm: LLMClient | None = None,
                 tools: Mapping[str, ToolKind] | None = None,
                 faults: Mapping[str, str] | None = None,
                 max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES) -> None:
        self.store = store
        self._tool_overrides = dict(tools or {})  # by tool name: fakes for flow tests
        self._faults = dict(faults or {})  # step id -> message: failures flow tests inject
        self._llm = llm
        self._llm_lock = threading.Lock()
        self.clock = clock or SystemClock()
        # A snapshot: templates read `env.X` and `secret.X` from it on every step.
        self.environ = _Env(os.environ if environ is None else environ)
        self.http_transport = http_transport
        self.rng = rng or random.Random()
        self.max_input_bytes = max_input_bytes
        self._flows: dict[str, CompiledFlow] = {}
        self._versions: dict[str, FlowVersion] = {}
        self._redactors: dict[str, Callable[[Any], Any]] = {}
        self._tools: dict[tuple[str, str], ToolKind] = {}

    # -- entry points ------------------------------------------------------------------
    def start(self, compiled: CompiledFlow, input_value: Any, *,
              run_id: str | None = None) -> RunResult:
        """Check the input, pin the flow version, create the run and drive it."""
        check_input(compiled, input_value, self.max_input_bytes)
        digest = compiled.flow.digest
        if digest not in self._versions:
            self._versions[digest] = flow_version(compiled)
        self._flows.setdefault(digest, compiled)
        owner = owner_id()
        run_id = run_id or new_run_id()
        self.store.create_run(run_id, self._versions[digest], input_value, compiled.first,
                              owner)
        state = _RunState(run_id, compiled.flow.name, input_value, {}, 0)
        return self._drive(compiled, state, compiled.first, owner)

    def resume(self, run_id: str, *, from_step: str | None = None) -> RunResult:
        """Continue a run that was interrupted (running) or failed (dead letter), at the
        step where it stopped, or at `from_step`. Completed steps are not run again."""
        record = self.store.run(run_id)
        compiled = self.flow(record.flow_digest)
        if from_step is not None and from_step not in {s.id for s in compiled.flow.steps}:
            raise StoreError(f"flow {compiled.flow.name} has no step {from_step}")
        reopen: str | None
        if record.status == "failed":
            reopen = from_step or record.failed_step or compiled.first
        elif record.status == "running":
            reopen = from_step
        elif record.status == "escalated":
            raise StoreError(f"run {record.id} waits for human review at "
                             f"{record.failed_step}: see `runner review show {record.id}`, "
                             "then approve, reject or retry it")
        else:
            raise StoreError(f"run {record.id} is {record.status}; there is nothing to resume")
        owner = owner_id()
        self.store.claim(record.id, owner, statuses=(record.status,), reopen_at=reopen)
        return self.continue_claimed(record.id, owner)

    def continue_claimed(self, run_id: str, owner: str) -> RunResult:
        """Drive a run that `owner` holds the lease of, from its stored position."""
        record = self.store.run(run_id)
        compiled = self.flow(record.flow_digest)
        done = self.store.checkpoints(record.id)
        state = _RunState(
            run_id=record.id, flow=compiled.flow.name, input=record.input,
            outputs={c.step_id: c.output for c in done if c.outcome != "error"},
            seq=max((c.seq for c in done), default=0),
            usage=Usage(record.llm_calls, record.tokens, record.cost_usd),
        )
        return self._drive(compiled, state, record.position, owner)

    def flow(self, digest: str) -> CompiledFlow:
        """The compiled flow a run pinned, by its digest."""
        if digest not in self._flows:
            version = self.store.flow_version(digest)
            self._flows[digest] = load_flow_text(version.text, version.path)
        return self._flows[digest]

    # -- the loop ----------------------------------------------------------------------
    def _drive(self, compiled: CompiledFlow, state: _RunState, at: str,
               owner: str) -> RunResult:
        position = machine_position(compiled, at)
        commit: StepCommit | None = None
        try:
            while position.state not in ENDINGS:
                commit = self._advance(compiled, position, state, owner)
        finally:
            if commit is None or commit.status == "running":  # stopped early: let go
                self.store.release(state.run_id, owner)
        assert commit is not None
        notify = compiled.flow.notify
        if notify is not None and commit.status in notify.on:
            self._alert(compiled, state, commit)
        return RunResult(state.run_id, commit.status, commit.position, commit.reason,
                         commit.error)

    def _alert(self, compiled: CompiledFlow, state: _RunState, commit: StepCommit) -> None:
        """Tell people a run needs them. Retried like any tool call; a failure is logged
        as an event and never touches the run's state."""
        notify = compiled.flow.notify
        assert notify is not None
        tool = compiled.flow.tools[notify.tool]
        run = {"id": state.run_id, "flow": state.flow, "status": commit.status,
               "step": commit.failed_step, "reason": commit.reason}
        ctx = {"run": run, "input": state.input, "env": self.environ, "secret": self.environ}
        step = compiled.flow.step(commit.checkpoint.step_id)
        try:
            args = templates.render_tree(dict(notify.args), ctx)
            request = _render_request(tool, {**ctx, "args": args})
            key = f"alert:{state.run_id}:{commit.checkpoint.seq}"
            call = Call(args, tool.timeout_seconds, key, request)
            _, attempts = self._call(compiled, step, tool, call)
            data: dict[str, Any] = {"tool": tool.name, "status": "sent",
                                    "attempts": len(attempts) + 1}
        except StepError as exc:
            data = {"tool": tool.name, "status": "failed", "error": str(exc)}
        self.store.add_events(state.run_id, [Event("alert", None, self.redactor(compiled)(data))])

    def _advance(self, compiled: CompiledFlow, position: Any, state: _RunState,
                 owner: str) -> StepCommit:
        step = compiled.flow.step(position.state)
        started = now()
        result = self._run_step(compiled, step, state)
        position.trigger(result.outcome)
        dest = position.state
        state.seq += 1
        redact = self.redactor(compiled)
        output = redact(result.output)
        commit = StepCommit(
            checkpoint=Checkpoint(state.seq, step.id, result.outcome, dest, output,
                                  result.attempts, started, now()),
            position=dest, status=ENDINGS.get(dest, "running"),
            events=[_redact_event(e, redact) for e in result.events] + [_step_event(
                step, result, dest, started, redact)],
            effect=(result.effect[0], result.effect[1], redact(result.effect[2]))
            if result.effect else None,
            failed_step=step.id if dest in ("dead_letter", "human_review") else None,
            reason=redact(_reason(step, result, dest)),
            error=redact(result.error) if dest in ("dead_letter", "human_review") else None,
            usage=(state.usage.llm_calls, state.usage.tokens, state.usage.cost_usd),
        )
        self.store.commit_step(state.run_id, owner, commit)
        if result.outcome != "error":
            state.outputs[step.id] = output
        return commit

    def _run_step(self, compiled: CompiledFlow, step: Step, state: _RunState) -> StepResult:
        try:
            if step.id in self._faults:
                raise StepError(self._faults[step.id], "injected")
            runner = STEP_KINDS.get(step.kind)
            if runner is None:
                raise StepError(f"{step.kind} steps cannot run in this version of runner",
                                "unsupported")
            return runner(self, compiled, step, state)
        except BudgetExceededError as exc:
            return StepResult("budget_exceeded", None, 0, [Event("budget", step.id, {
                "message": str(exc)})], reason=str(exc),
                error={"kind": exc.kind, "message": str(exc)})
        except RetriesExhaustedError as exc:
            return failure(step, exc, exc.attempts)
        except StepError as exc:
            return failure(step, exc, [Attempt(1, exc.kind, str(exc), None)])

    def redactor(self, compiled: CompiledFlow) -> Callable[[Any], Any]:
        """Removes the flow's secrets from anything about to be stored."""
        digest = compiled.flow.digest
        if digest not in self._redactors:
            self._redactors[digest] = redactor(compiled, self.environ)
        return self._redactors[digest]

    def context(self, compiled: CompiledFlow, state: _RunState) -> dict[str, Any]:
        """What step templates read."""
        return {
            "input": state.input,
            "steps": {sid: {"output": out} for sid, out in state.outputs.items()},
            "run": {"id": state.run_id, "flow": state.flow},
            "env": self.environ,
            "secret": self.environ,
        }

    # -- tool steps --------------------------------------------------------------------
    def tool_step(self, compiled: CompiledFlow, step: Step, state: _RunState) -> StepResult:
        assert isinstance(step, ToolStep)
        args = templates.render_tree(dict(step.args), self.context(compiled, state))
        return self.call_tool(compiled, step, compiled.flow.tools[step.tool], args, state,
                              f"{state.run_id}:{step.id}")

    def call_tool(self, compiled: CompiledFlow, step: Step, tool: Tool, args: Any,
                  state: _RunState, default_key: str) -> StepResult:
        """Call a tool for a step: input checked, retried, an effect through the ledger
        (keyed by the tool's idempotency key, else `default_key`)."""
        problems = instance_problems(tool.input_schema, args)
        if problems:
            raise ToolError(f"arguments do not match tool {tool.name}'s input schema: "
                            + "; ".join(problems), "invalid_input")
        tool_ctx = {"args": args, "input": state.input,  # what tool templates may read
                    "run": {"id": state.run_id, "flow": state.flow},
                    "env": self.environ, "secret": self.environ}
        request = _render_request(tool, tool_ctx)
        key = None
        if tool.effect:
            key = (str(templates.render(tool.idempotency_key, tool_ctx))
                   if tool.idempotency_key else default_key)
        call = Call(args, step.timeout_seconds or tool.timeout_seconds, key, request)
        if key is not None:
            return self._effect(compiled, step, tool, call, state)
        output, attempts = self._call(compiled, step, tool, call)
        return StepResult("ok", output, len(attempts) + 1, _attempt_events(step, attempts))

    def _call(self, compiled: CompiledFlow, step: Step, tool: Tool, call: Call,
              *, effect: bool = False) -> tuple[Any, list[Attempt]]:
        impl = self._tool(compiled, tool)
        failed: list[Attempt] = []

        def attempt() -> Any:
            value = impl(call)
            problems = instance_problems(tool.output_schema, value)
            if problems:
                raise ToolError("output does not match the tool's output schema: "
                                + "; ".join(problems), "invalid_output")
            return value

        def retryable(exc: StepError) -> bool:
            # A non-idempotent effect that may have happened is never blindly re-sent.
            unsafe = effect and not tool.idempotent
            return not (unsafe and isinstance(exc, ToolError) and exc.maybe_sent)

        retrier = Retrier(step.retry or tool.retry, self.clock, self.rng, retryable,
                          failed.append)
        return retrier.call(attempt), failed

    def _effect(self, compiled: CompiledFlow, step: Step, tool: Tool, call: Call,
                state: _RunState) -> StepResult:
        key = call.idempotency_key or ""
        self._tool(compiled, tool)  # ready before the ledger says `started`
        existing = self.store.start_effect(key, state.run_id, step.id, tool.name)
        if existing is not None and existing.status == "done":
            event = Event("effect", step.id, {"key": key, "status": "reused",
                                              "first_run": existing.run_id})
            return StepResult("ok", existing.result, 0, [event])
        if existing is not None and not tool.idempotent:
            return _in_doubt(step, key, "a previous attempt started and never finished")
        try:
            output, attempts = self._call(compiled, step, tool, call, effect=True)
        except RetriesExhaustedError as exc:
            if isinstance(exc.last, ToolError) and exc.last.maybe_sent and not tool.idempotent:
                return _in_doubt(step, key, str(exc.last), _attempt_events(step, exc.attempts))
            result = failure(step, exc, exc.attempts)
            result.effect = (key, "failed", {"error": str(exc)})
            return result
        events = _attempt_events(step, attempts)
        status = "resent" if existing is not None else "done"
        events.append(Event("effect", step.id, {"key": key, "status": status}))
        return StepResult("ok", output, len(attempts) + 1, events, (key, "done", output))

    def _tool(self, compiled: CompiledFlow, tool: Tool) -> ToolKind:
        if tool.name in self._tool_overrides:
            return self._tool_overrides[tool.name]
        cache_key = (compiled.flow.digest, tool.name)
        if cache_key not in self._tools:
            self._tools[cache_key] = TOOL_KINDS[tool.kind](
                tool, flow_file=Path(compiled.flow.document.file),
                http_transport=self.http_transport)
        return self._tools[cache_key]

    # -- model steps -------------------------------------------------------------------
    def llm_client(self) -> LLMClient:
        """The model client: the one given, else litellm with local models (made once)."""
        with self._llm_lock:  # runs on several threads must share one (one local server)
            if self._llm is None:
                from runner.runtime.models import LiteLLMClient
                from runner.runtime.local_models import LocalModels

                self._llm = LiteLLMClient(LocalModels())
            return self._llm

    def session(self, compiled: CompiledFlow, step: Step, state: _RunState) -> Session:
        """Model calls for one step, sharing the run's usage for its budget."""
        def retrier(policy: Any, on_attempt: Callable[[Attempt], None]) -> Retrier:
            return Retrier(policy, self.clock, self.rng, None, on_attempt)

        return Session(compiled.flow, step, self.llm_client(), retrier, state.usage,
                       self.environ)

    def llm_step(self, compiled: CompiledFlow, step: Step, state: _RunState) -> StepResult:
        assert isinstance(step, LlmStep)
        session = self.session(compiled, step, state)
        try:
            outcome, output, reason = run_llm_step(session, step,
                                                   self.context(compiled, state))
        except BudgetExceededError:
            raise
        except StepError as exc:  # the session's events already hold every attempt
            attempts = getattr(exc, "attempts", [Attempt(1, exc.kind, str(exc), None)])
            return replace(failure(step, exc, attempts), events=session.events)
        return StepResult(outcome, output, 1, session.events, reason=reason)

    def agent_step(self, compiled: CompiledFlow, step: Step, state: _RunState) -> StepResult:
        from runner.kinds.steps.agent import ToolFailedError, run_agent_step

        assert isinstance(step, AgentStep)
        session = self.session(compiled, step, state)
        try:
            output = run_agent_step(self, compiled, step, state, session,
                                    self.context(compiled, state))
        except BudgetExceededError:
            raise
        except ToolFailedError as exc:  # the tool's own outcome: error, or in doubt
            return replace(exc.result, events=session.events)
        except StepError as exc:
            attempts = getattr(exc, "attempts", [Attempt(1, exc.kind, str(exc), None)])
            return replace(failure(step, exc, attempts), events=session.events)
        return StepResult("ok", output, 1, session.events)

    # -- switch steps ------------------------------------------------------------------
    def switch_step(self, compiled: CompiledFlow, step: Step, state: _RunState) -> StepResult:
        assert isinstance(step, SwitchStep)
        ctx = self.context(compiled, state)
        for number, case in enumerate(step.cases, 1):
            if templates.evaluate(case.when, ctx):
                return StepResult(f"case_{number}", {"branch": number, "when": case.when})
        return StepResult("default", {"branch": "default"})

    def policy_step(self, compiled: CompiledFlow, step: Step, state: _RunState) -> StepResult:
        from runner.kinds.policies.builtin import check_policies

        assert isinstance(step, PolicyStep)
        ctx = self.context(compiled, state)
        text = str(templates.render(step.text, ctx))
        session = self.session(compiled, step, state)
        found = check_policies([compiled.flow.policies[p] for p in step.policies], text, ctx,
                               lambda policy, checked: judge_policy(session, policy, checked))
        events = [*session.events, *(Event("policy", step.id, v) for v in found)]
        if found:
            return StepResult("violation", {"violations": found}, events=events,
                              reason="; ".join(dict.fromkeys(  # each rule once, in order
                                  f"policy {v['policy']}: {v['message']}" for v in found)))
        return StepResult("ok", {"violations": []}, events=events)


# Step kinds -> how the engine runs them; the schema's step kinds must equal these keys.
STEP_KINDS: dict[str, Callable[[Engine, CompiledFlow, Step, _RunState], StepResult]] = {
    "llm": Engine.llm_step,
    "agent": Engine.agent_step,
    "tool": Engine.tool_step,
    "switch": Engine.switch_step,
    "policies": Engine.policy_step,
}


class _Env(dict[str, str]):
    """Environment variables as templates see them (`env.NAME`, `secret.NAME`)."""


def _render_request(tool: Tool, ctx: dict[str, Any]) -> dict[str, Any] | None:
    """The request a tool sends, rendered: an http request or an email; None for python."""
    if tool.smtp is not None:
        return {k: v if isinstance(v, int) else str(templates.render(v, ctx))
                for k, v in tool.smtp.items()}
    http = tool.http
    if http is None:
        return None
    request: dict[str, Any] = {
        "method": http.method, "url": str(templates.render(http.url, ctx)),
        "headers": {k: str(templates.render(v, ctx)) for k, v in http.headers.items()},
        "query": {k: str(templates.render(v, ctx)) for k, v in http.query.items()},
    }
    if http.has_json:
        request["json"] = templates.render_tree(http.json, ctx)
    if http.body is not None:
        request["body"] = str(templates.render(http.body, ctx))
    return request


def failure(step: Step, exc: StepError, attempts: list[Attempt]) -> StepResult:
    """The error outcome, carrying every attempt's error (each also an event)."""
    error = {"kind": exc.kind, "message": str(exc),
             "attempts": [{"number": a.number, "kind": a.kind, "message": a.message,
                           "wait_seconds": a.wait_seconds} for a in attempts]}
    return StepResult("error", None, max(len(attempts), 1), _attempt_events(step, attempts),
                      error=error)


def _in_doubt(step: Step, key: str, why: str, events: list[Event] | None = None) -> StepResult:
    reason = f"effect {key} may have happened ({why}); check before approving"
    event = Event("effect", step.id, {"key": key, "status": "in_doubt", "why": why})
    return StepResult("in_doubt", None, 1, [*(events or []), event], reason=reason,
                      error={"kind": "in_doubt", "message": reason})


def _attempt_events(step: Step, attempts: list[Attempt]) -> list[Event]:
    return [Event("attempt_failed", step.id, {"attempt": a.number, "kind": a.kind,
                                              "message": a.message, "wait": a.wait_seconds})
            for a in attempts]


def _step_event(step: Step, result: StepResult, dest: str, started: datetime,
                redact: Callable[[Any], Any]) -> Event:
    data: dict[str, Any] = {"outcome": result.outcome, "route": dest,
                            "attempts": result.attempts,
                            "ms": round((now() - started).total_seconds() * 1000, 3)}
    if result.error:
        data["error"] = redact(result.error)
    return Event("step", step.id, data)


def _redact_event(event: Event, redact: Callable[[Any], Any]) -> Event:
    return Event(event.kind, event.step_id, redact(dict(event.data)), event.at)


def _reason(step: Step, result: StepResult, dest: str) -> str | None:
    if result.reason:
        return result.reason
    if dest in ("human_review", "dead_letter") and result.error:
        return f"step {step.id} failed: {result.error['message']}"
    return None


def check_input(compiled: CompiledFlow, value: Any, max_bytes: int) -> None:
    """Refuse input that is too large or does not match the flow's input schema."""
    size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
    if size > max_bytes:
        raise InputError(f"input is {size:,} bytes; the limit is {max_bytes:,} "
                         "(raise it with --max-input-bytes or RUNNER_MAX_INPUT_BYTES)")
    problems = instance_problems(compiled.flow.input_schema, value)
    if problems:
        listed = "\n".join(f"  input.{p}" if not p.startswith("(") else f"  input: {p}"
                           for p in problems)
        raise InputError(f"input does not match flow {compiled.flow.name}'s input schema:\n"
                         + listed)


def new_run_id() -> str:
    """A sortable, unique run id: time first, then randomness."""
    return f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"

