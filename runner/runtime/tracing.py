"""Traces of runs for OpenTelemetry, made from their audit trail (optional).

On when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set and
the `otel` extra is installed; set without it, runner says so once on stderr and runs
untraced. Spans go out as OTLP over HTTP; the SDK reads the other OTEL_* variables
itself (headers, compression, timeout, service name, sampler ...). service.name is
`runner` unless one of those names it.

Nothing is traced while a run runs. When the engine stops driving a run (a `RunHook`),
the events of that drive (after the run's last RunStarted, RunResumed or DecisionMade)
are read back from the store and made into spans with explicit times: the drive, a child
per step visit, under a step one per model call and per tool call attempt. Stored events
are redacted, so no secret reaches a span.

Times: a step ends at its StepFinished's `at` and lasts its `ms`; a model answer ends at
its ModelCalled's `at` and lasts its `latency_ms`. A tool call has no event of its own:
a tool step's last attempt ends with its step (if it succeeded), an agent's tool call at
its AgentCall. A failed attempt's event is written when its call ends, so attempts with
no duration of their own share, in order, what their retry waits leave of the time from
the step's previous call (or its start) to the next known time.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from runner.core import events as ev
from runner.core.notices import notice
from runner.core.vocabulary import Outcome, RunStatus
from runner.kinds.steps.tool import ToolStep
from runner.lang.compiler import CompiledFlow
from runner.runtime.visit import RunState
from runner.store.records import StepCommit

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

    from runner.runtime.engine import Engine, RunHook

ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
SERVICE_NAME = "runner"
_MISSING = (
    "{name} is set but OpenTelemetry is not installed "
    "(pip install 'runner-flows[otel]'); runs are not traced"
)
# litellm's provider prefixes whose OpenTelemetry name (gen_ai.provider.name) differs.
_PROVIDER_NAMES = {
    "azure": "azure.ai.openai", "azure_ai": "azure.ai.inference", "bedrock": "aws.bedrock",
    "gemini": "gcp.gemini", "vertex_ai": "gcp.vertex_ai", "mistral": "mistral_ai",
    "watsonx": "ibm.watsonx.ai", "xai": "x_ai"
}  # fmt: skip
_DRIVES = {ev.RunStarted: "start", ev.RunResumed: "resume", ev.DecisionMade: "decision"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_lock = threading.RLock()
_exporters: dict[tuple[tuple[str, str], ...], Exporter | None] = {}
_warned: set[str] = set()


def tracing() -> list[RunHook]:
    """The tracing hook, when an OTLP endpoint is set (the engine's default hooks)."""
    config = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("OTEL_")))
    settings = dict(config)
    endpoint = next((name for name in ENDPOINTS if settings.get(name)), None)
    if endpoint is None or settings.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return []
    with _lock:  # one exporter per process and configuration, whatever the threads
        if config not in _exporters:
            _exporters[config] = Exporter.made(endpoint)
        exporter = _exporters[config]
    return [] if exporter is None else [Tracing(exporter)]


def warn_once(message: str) -> None:
    """Say `message` on stderr, the first time only."""
    with _lock:
        if message in _warned:
            return
        _warned.add(message)
    notice(message, level="warning")


@dataclass
class Tracing:
    """The run hook that exports the spans of the drive that just ended."""

    exporter: Exporter

    def after_run(
        self, engine: Engine, compiled: CompiledFlow, state: RunState, commit: StepCommit
    ) -> None:
        try:
            events = engine.store.events(state.run_id)
            self.exporter.export(plan_drive(compiled, state, commit, events))
        except Exception as exc:  # a trace is never worth failing a run over
            warn_once(f"a run could not be traced: {type(exc).__name__}: {exc}")


# -- the spans of a drive, planned from its events -------------------------------------
@dataclass
class Planned:
    """A span to make: name, times, attributes, status, span events and children."""

    name: str
    start: datetime
    end: datetime
    attributes: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # the status message of a span whose status is ERROR
    client: bool = False  # span kind CLIENT (a model call), else INTERNAL
    notes: list[tuple[str, datetime, dict[str, Any]]] = field(default_factory=list)
    children: list[Planned] = field(default_factory=list)


def plan_drive(
    compiled: CompiledFlow, state: RunState, commit: StepCommit, events: Sequence[ev.Event]
) -> Planned:
    """The span of the run's last drive, ending now, with its steps' spans under it."""
    opener, drive = drive_of(events)
    ended = ev.now()
    steps = [plan_step(compiled, finished, own) for finished, own in visits(drive)]
    begun = opener.at if opener is not None else ended
    flow = compiled.flow
    usage = state.usage
    run = Planned(
        f"run {flow.name}",
        min([begun, *(s.start for s in steps)]),
        max([ended, *(s.end for s in steps)]),
        _attributes(
            {
                "runner.run.id": state.run_id,
                "runner.flow.name": flow.name,
                "runner.flow.digest": flow.digest,
                "runner.run.drive": _DRIVES.get(type(opener)) if opener else None,
                "runner.run.status": commit.status,
                "runner.run.position": commit.position,
                "runner.run.llm_calls": usage.llm_calls,
                "runner.run.tokens": usage.tokens,
                "runner.cost_usd": usage.cost_usd,
            }
        ),
        children=steps,
    )
    if commit.status == RunStatus.FAILED:
        run.error = commit.reason or "the run failed"
    run.notes = [_note(e) for e in drive if isinstance(e, ev.AlertSent)]
    return run


def drive_of(events: Sequence[ev.Event]) -> tuple[ev.Event | None, list[ev.Event]]:
    """The event that opened the last drive of a run, and the events after it."""
    for index in range(len(events) - 1, -1, -1):
        if isinstance(events[index], tuple(_DRIVES)):
            return events[index], list(events[index + 1 :])
    return None, list(events)


def visits(drive: Sequence[ev.Event]) -> Iterator[tuple[ev.StepFinished, list[ev.Event]]]:
    """Each step visit's StepFinished with the events of that visit before it."""
    pending: dict[str, list[ev.Event]] = {}
    for event in drive:
        if isinstance(event, ev.StepFinished):
            yield event, pending.pop(event.step_id or "", [])
        elif event.step_id is not None:
            pending.setdefault(event.step_id, []).append(event)


def plan_step(compiled: CompiledFlow, finished: ev.StepFinished, events: list[ev.Event]) -> Planned:
    """A step visit's span, with its model and tool calls under it."""
    end = finished.at
    start = end - timedelta(milliseconds=finished.ms)
    step = compiled.flow.find(finished.step_id)
    span = Planned(
        f"step {finished.step_id}",
        start,
        end,
        _attributes(
            {
                "runner.step.id": finished.step_id,
                "runner.step.kind": step.kind if step else None,
                "runner.step.outcome": finished.outcome,
                "runner.route": finished.route,
                "runner.attempts": finished.attempts,
            }
        ),
    )
    if finished.error:
        span.error = str(finished.error.get("message") or finished.outcome)
    ordered = sorted(events, key=lambda e: e.at)  # agents record some events early
    lane = Lane(start, end, step.tool if isinstance(step, ToolStep) else None)
    for event in ordered:
        lane.add(event)
    span.children = lane.close(finished)
    span.notes = [_note(e) for e in ordered if isinstance(e, _NOTED)]
    gates = [e.passed for e in ordered if isinstance(e, ev.ConfidenceScored)]
    if gates:
        span.attributes["runner.confidence.passed"] = all(gates)
    return span


class Lane:
    """Lays a step visit's calls out in time, in the order of their events."""

    def __init__(self, start: datetime, end: datetime, tool: str | None) -> None:
        self.cursor, self.end, self.tool = start, end, tool
        self.failed: list[ev.AttemptFailed] = []
        self.spans: list[Planned] = []

    def add(self, event: ev.Event) -> None:
        if isinstance(event, ev.AttemptFailed):
            self.failed.append(event)
        elif isinstance(event, ev.ModelCalled):
            answered = _within(event.at, self.cursor, self.end)
            began = max(self.cursor, answered - timedelta(milliseconds=event.latency_ms))
            self._share(began, None)
            span = model_span(event.model, began, answered)
            span.attributes.update(_model_use(event))
            self.spans.append(span)
            self.cursor = answered
        elif isinstance(event, ev.AgentCall):
            self._share(_within(event.at, self.cursor, self.end), tool_span(event.tool))

    def close(self, finished: ev.StepFinished) -> list[Planned]:
        """The visit's calls: a tool step's last attempt, if it succeeded, ends with it."""
        succeeded = finished.outcome == Outcome.OK and finished.attempts > len(self.failed)
        if self.tool is not None and succeeded:
            self._share(self.end, tool_span(self.tool))
        elif self.failed:
            self._share(_within(self.failed[-1].at, self.cursor, self.end), None)
        return self.spans

    def _share(self, until: datetime, last: Planned | None) -> None:
        """Place the failed attempts waiting (then `last`, whose time is unknown too)
        before `until`: they share what their waits leave of the time since the cursor."""
        name = last.attributes.get("gen_ai.tool.name") if last else self.tool
        pieces = [(failed_span(a, name), a.wait or 0.0) for a in self.failed]
        pieces += [(last, 0.0)] if last is not None else []
        self.failed = []
        if pieces:
            spare = (until - self.cursor).total_seconds() - sum(w for _, w in pieces)
            each = timedelta(seconds=max(spare, 0.0) / len(pieces))
            at = self.cursor
            for span, wait in pieces:
                span.start, span.end = min(at, until), min(at + each, until)
                at = span.end + timedelta(seconds=wait)
                self.spans.append(span)
            span.end = max(span.start, until - timedelta(seconds=wait))  # rounding aside
        self.cursor = max(self.cursor, until)


def model_span(model: str, start: datetime, end: datetime) -> Planned:
    """A model call's span, named and described as OpenTelemetry's GenAI conventions
    say: `chat {model}`, the provider from the model string's `provider/` prefix."""
    prefix, _, name = model.partition("/")
    provider = _PROVIDER_NAMES.get(prefix, prefix) if name else None
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": name or model,
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,
        "runner.model": model,
    }
    return Planned(f"chat {name or model}", start, end, _attributes(attributes), client=True)


def tool_span(tool: str | None) -> Planned:
    """A tool call's span (times set when it is placed)."""
    attributes = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool,
        "runner.tool.name": tool,
    }
    name = f"execute_tool {tool}" if tool else "execute_tool"
    return Planned(name, _EPOCH, _EPOCH, _attributes(attributes))


def failed_span(attempt: ev.AttemptFailed, tool: str | None) -> Planned:
    """A failed attempt's span: a model's when the event names one, else a tool's."""
    span = model_span(attempt.model, _EPOCH, _EPOCH) if attempt.model else tool_span(tool)
    span.attributes.update({"runner.attempt": attempt.attempt, "error.type": attempt.error_kind})
    span.error = f"{attempt.error_kind}: {attempt.message}"
    return span


def _model_use(event: ev.ModelCalled) -> dict[str, Any]:
    return _attributes(
        {
            "gen_ai.usage.input_tokens": event.prompt_tokens,
            "gen_ai.usage.output_tokens": event.completion_tokens,
            "runner.cost_usd": event.cost_usd,
            "runner.attempts": event.attempts,
            "runner.repair": event.repair,
        }
    )


_NOTED = (ev.ConfidenceScored, ev.PolicyFired, ev.AnswerInvalid, ev.BudgetReached, ev.EffectEvent)
_NOTE_FIELDS = {
    ev.ConfidenceScored: ("method", "gate", "score", "min", "passed"),
    ev.PolicyFired: ("policy", "rule", "message"),
    ev.AnswerInvalid: ("repair", "problem"),
    ev.BudgetReached: ("message",),
    ev.EffectEvent: ("key", "status", "first_run", "why"),
    ev.AlertSent: ("tool", "status", "attempts", "error"),
}


def _note(event: ev.Event) -> tuple[str, datetime, dict[str, Any]]:
    """A span event for a gate's verdict, a policy, a repair, an effect or an alert."""
    fields = _NOTE_FIELDS[type(event)]
    values = {f"runner.{event.kind}.{name}": getattr(event, name) for name in fields}
    return event.kind, event.at, _attributes(values)


def _attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    """The values a span can carry: None left out, anything but a scalar as text."""
    return {
        key: value if isinstance(value, str | bool | int | float) else str(value)
        for key, value in values.items()
        if value is not None
    }


def _within(at: datetime, start: datetime, end: datetime) -> datetime:
    return min(max(at, start), max(start, end))


# -- OpenTelemetry ---------------------------------------------------------------------
class Exporter:
    """Makes planned spans with the OpenTelemetry SDK and sends them, before the hook
    returns, through a batch processor (one request per drive). After a failed export
    it stops waiting for them: the processor's thread keeps sending, and the SDK
    flushes what is left when the process exits."""

    def __init__(self, provider: TracerProvider, tracer: Tracer, health: Any) -> None:
        self.provider, self.tracer, self.health = provider, tracer, health

    @classmethod
    def made(cls, endpoint: str) -> Exporter | None:
        """The process's exporter, or None (said once) without the otel packages."""
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
        except ImportError:
            warn_once(_MISSING.format(name=endpoint))
            return None

        class Watched(OTLPSpanExporter):
            failing = False

            def export(self, spans: Any) -> SpanExportResult:
                result = super().export(spans)
                self.failing = result is not SpanExportResult.SUCCESS
                return result

        resource = Resource.create()
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
        provider = TracerProvider(resource=resource)
        health = Watched()
        provider.add_span_processor(BatchSpanProcessor(health))
        return cls(provider, provider.get_tracer("runner"), health)

    def export(self, plan: Planned) -> None:
        """Make the plan's spans, then wait until they are sent (see the class)."""
        self._make(plan, None)
        if not self.health.failing:
            self.provider.force_flush()

    def _make(self, plan: Planned, parent: Any) -> None:
        from opentelemetry import trace

        span = self.tracer.start_span(
            plan.name,
            context=parent,
            kind=trace.SpanKind.CLIENT if plan.client else trace.SpanKind.INTERNAL,
            attributes=plan.attributes,
            start_time=_ns(plan.start),
        )
        for name, at, attributes in plan.notes:
            span.add_event(name, attributes, timestamp=_ns(at))
        if plan.error is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR, plan.error))
        inner = trace.set_span_in_context(span)
        for child in plan.children:
            self._make(child, inner)
        span.end(end_time=_ns(plan.end))


def _ns(at: datetime) -> int:
    """Nanoseconds since the epoch, exactly (to the microsecond a datetime has)."""
    return (at - _EPOCH) // timedelta(microseconds=1) * 1000
