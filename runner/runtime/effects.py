"""Tool calls for a run: input and output checked against the tool's schemas, retried
under its policy, and effects (`effect: true`) through the effect ledger.

Effect protocol: the key is the tool's rendered `idempotency_key` (else one per run and
step). A key the ledger has `done` is not called again: its result is reused. Otherwise
the call is made ready first (the client made, an http request built: what can fail
before anything is sent fails then), a `started` row is committed, the call is sent, and
`done` is written with the step's checkpoint. A key left `started` (a crash during the
call) is in doubt: a person looks, unless the tool is `idempotent` (then it is sent again
with the same key). A non-idempotent effect is never retried after a failure that may
have reached the other side (a timeout once sent, a dropped connection, a 5xx, output
that cannot be kept); a failure before anything was sent (a refused connection) is
retried and never in doubt.

Output is checked before it is kept: what no store keeps as it is, or more than the
tool's `max_output_bytes` as JSON, is an `invalid_output` error.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from runner.core import templates
from runner.core.errors import Attempt, RetriesExhaustedError, StepError, ToolError
from runner.core.events import EffectEvent, Event
from runner.core.vocabulary import EffectStatus, ErrorKind, Outcome
from runner.kinds.base import Call, StepResult, ToolCall, attempt_events, failure
from runner.kinds.registry import TOOL_KINDS
from runner.lang.compiler import CompiledFlow
from runner.lang.model import Step, Tool
from runner.lang.schema import instance_problems
from runner.runtime.inputs import storage_problems
from runner.runtime.retry import Clock, Retrier, WaitTooLong
from runner.store.base import Store

Send = Callable[[], Any]  # one attempt of a prepared call


@runtime_checkable
class Preparing(Protocol):
    """A tool client that makes a call ready before sending it (an http request built),
    so that an effect's ledger says `started` only when all that is left is to send."""

    def prepare(self, call: Call) -> Send: ...


class ToolCaller:
    """Makes one flow version's tool calls against a store's effect ledger. Tool clients
    are made once per flow version and tool; `overrides` replace them by tool name
    (scripted tools in flow tests)."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        rng: random.Random,
        *,
        http_transport: Any = None,
        overrides: Mapping[str, ToolCall] | None = None,
    ) -> None:
        self.store, self.clock, self.rng = store, clock, rng
        self.http_transport = http_transport
        self.overrides = dict(overrides or {})
        self._clients: dict[tuple[str, str], ToolCall] = {}

    def call_tool(
        self,
        compiled: CompiledFlow,
        step: Step,
        tool: Tool,
        args: Any,
        ctx: Mapping[str, Any],
        run_id: str,
        default_key: str,
        owner: str | None = None,
    ) -> StepResult:
        """Call a tool for a step; `ctx` is what the tool's templates read besides args.
        An effect starts only while `owner` (when given) holds the run's lease."""
        problems = instance_problems(tool.input_schema, args)
        if problems:
            raise ToolError(
                f"arguments do not match tool {tool.name}'s input schema: " + "; ".join(problems),
                ErrorKind.INVALID_INPUT,
            )
        tool_ctx = {**ctx, "args": args}
        request = TOOL_KINDS[tool.kind].request(tool, tool_ctx)
        key = None
        if tool.effect:
            key = (
                str(templates.render(tool.idempotency_key, tool_ctx))
                if tool.idempotency_key
                else default_key
            )
        call = Call(args, step.timeout_seconds or tool.timeout_seconds, key, request)
        send = self.prepared(compiled, tool, call)  # before the ledger says `started`
        if key is not None:
            return self._effect(step, tool, send, (run_id, owner), key)
        output, attempts = self.send(step, tool, send)
        return StepResult(Outcome.OK, output, len(attempts) + 1, attempt_events(step, attempts))

    def call(
        self, compiled: CompiledFlow, step: Step, tool: Tool, call: Call, *, effect: bool = False
    ) -> tuple[Any, list[Attempt]]:
        """The tool's output under its retry policy, and the attempts that failed."""
        return self.send(step, tool, self.prepared(compiled, tool, call), effect=effect)

    def prepared(self, compiled: CompiledFlow, tool: Tool, call: Call) -> Send:
        """The call ready to send: whatever can fail before it is sent fails here."""
        client = self.client(compiled, tool)
        if not isinstance(client, Preparing):
            return functools.partial(client, call)
        try:
            return client.prepare(call)
        except StepError as exc:  # told like a call that failed once: nothing was sent
            raise RetriesExhaustedError([Attempt(1, exc.kind, str(exc), None)], exc) from exc

    def send(
        self, step: Step, tool: Tool, send: Send, *, effect: bool = False
    ) -> tuple[Any, list[Attempt]]:
        """A prepared call's output under the tool's retry policy, and the attempts that
        failed."""
        failed: list[Attempt] = []

        def attempt() -> Any:
            value = send()
            check_output(tool, value)
            problems = instance_problems(tool.output_schema, value)
            if problems:
                raise ToolError(
                    "output does not match the tool's output schema: " + "; ".join(problems),
                    ErrorKind.INVALID_OUTPUT,
                )
            return value

        def retryable(exc: StepError) -> bool:
            # A non-idempotent effect that may have happened is never blindly re-sent.
            unsafe = effect and not tool.idempotent
            return not (unsafe and isinstance(exc, ToolError) and exc.maybe_sent)

        retrier = Retrier(step.retry or tool.retry, self.clock, self.rng, retryable, failed.append)
        return retrier.call(attempt), failed

    def _effect(
        self, step: Step, tool: Tool, send: Send, run: tuple[str, str | None], key: str
    ) -> StepResult:
        run_id, owner = run
        existing = self.store.start_effect(key, run_id, step.id, tool.name, owner)
        if existing is not None and existing.status == EffectStatus.DONE:
            event = EffectEvent(
                step_id=step.id, key=key, status="reused", first_run=existing.run_id
            )
            return StepResult(Outcome.OK, existing.result, 0, [event])
        if existing is not None and not tool.idempotent:
            return in_doubt(step, key, "a previous attempt started and never finished")
        try:
            output, attempts = self.send(step, tool, send, effect=True)
        except WaitTooLong:  # the run is parked: this call starts again when it is due
            self.store.set_aside_effect(key, run_id, owner)
            raise
        except RetriesExhaustedError as exc:
            if isinstance(exc.last, ToolError) and exc.last.maybe_sent and not tool.idempotent:
                return in_doubt(step, key, str(exc.last), attempt_events(step, exc.attempts))
            result = failure(step, exc, exc.attempts)
            result.effect = (key, EffectStatus.FAILED, {"error": str(exc)})
            return result
        events = attempt_events(step, attempts)
        status = "resent" if existing is not None else EffectStatus.DONE.value
        events.append(EffectEvent(step_id=step.id, key=key, status=status))
        return StepResult(
            Outcome.OK, output, len(attempts) + 1, events, (key, EffectStatus.DONE, output)
        )

    def client(self, compiled: CompiledFlow, tool: Tool) -> ToolCall:
        """The tool's client for this flow version, made once."""
        if tool.name in self.overrides:
            return self.overrides[tool.name]
        cache_key = (compiled.flow.digest, tool.name)
        if cache_key not in self._clients:
            self._clients[cache_key] = TOOL_KINDS[tool.kind].connect(
                tool,
                flow_file=Path(compiled.flow.document.file),
                http_transport=self.http_transport,
            )
        return self._clients[cache_key]


def check_output(tool: Tool, value: Any) -> None:
    """Refuse output no store keeps as it is, or larger than the tool's
    `max_output_bytes` as JSON. The call returned: an effect happened (`maybe_sent`)."""
    problems = storage_problems(value, "output")
    if problems:
        raise ToolError(
            "output cannot be stored as it is: " + "; ".join(problems[:5]),
            ErrorKind.INVALID_OUTPUT,
            maybe_sent=True,
        )
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > tool.max_output_bytes:
        raise ToolError(
            f"the output is {size:,} bytes of JSON, more than max_output_bytes "
            f"({tool.max_output_bytes:,})",
            ErrorKind.INVALID_OUTPUT,
            maybe_sent=True,
        )


def in_doubt(step: Step, key: str, why: str, events: list[Event] | None = None) -> StepResult:
    """The outcome of an effect that may have happened: a person must look."""
    reason = f"effect {key} may have happened ({why}); check before approving"
    event = EffectEvent(step_id=step.id, key=key, status=ErrorKind.IN_DOUBT.value, why=why)
    return StepResult(
        Outcome.IN_DOUBT,
        None,
        1,
        [*(events or []), event],
        reason=reason,
        error={"kind": ErrorKind.IN_DOUBT.value, "message": reason},
    )
