"""The engine: runs a run step by step on its compiled machine, durably.

Each step's outcome (ok, error, low_confidence, violation, a branch, in_doubt) is a
trigger on the run's machine, which names the next position. The step's checkpoint,
the new position, its effect-ledger row and its events commit in one transaction, so
a process killed anywhere leaves the run at a step boundary or inside a recorded
effect. Completed steps never run again; an effect never runs twice for one key.

The engine is the loop only: each step kind runs itself (`runner.kinds`), tool calls
and the effect ledger are `runner.runtime.effects`, model calls a `Session`, and
alerts a hook after the run.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from runner.core.errors import (
    BudgetExceededError,
    InputError,
    RetriesExhaustedError,
    StepError,
    StoreError,
)
from runner.core.events import BudgetReached, now
from runner.core.llm import Embedder, LLMClient
from runner.core.vocabulary import ENDINGS, STOPS, ErrorKind, Outcome, RunStatus
from runner.kinds.base import StepResult, ToolCall, attempts_of, failure
from runner.kinds.registry import STEP_KINDS
from runner.lang.compiler import CompiledFlow, machine_position
from runner.lang.model import Step
from runner.runtime.effects import ToolCaller
from runner.runtime.inputs import DEFAULT_MAX_INPUT_BYTES, check_input, new_run_id
from runner.runtime.limits import step_limit_reached, step_limit_route
from runner.runtime.locate import load_pinned
from runner.runtime.parking import Parked, parking, prior_attempts
from runner.runtime.redact import check_environment, redactor
from runner.runtime.retry import Clock, Retrier, SystemClock
from runner.runtime.session import Session, Usage
from runner.runtime.stepend import commit_step, finished_event, reason, review_due
from runner.runtime.upgrade import check_upgrade
from runner.runtime.versions import flow_version
from runner.runtime.visit import Environment, RunState, Visit
from runner.store.base import Store
from runner.store.leases import Heartbeat, owner_id
from runner.store.records import Checkpoint, FlowVersion, RunRecord, StepCommit

__all__ = [
    "DEFAULT_MAX_INPUT_BYTES",
    "Engine",
    "RunHook",
    "RunInterrupted",
    "RunResult",
    "check_input",
    "new_run_id",
]


@dataclass(frozen=True)
class RunResult:
    """Where a run stands after the engine stopped driving it."""

    run_id: str
    status: str
    position: str
    reason: str | None = None
    error: Any = None


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run. It stays at its last checkpoint, `position`, with its lease
    given up, for `runner resume` to continue."""

    def __init__(self, run_id: str, position: str) -> None:
        super().__init__(run_id, position)
        self.run_id = run_id
        self.position = position


class RunHook(Protocol):
    """Work after a run stops (an alert, a metric): never part of the run's state."""

    def after_run(
        self, engine: Engine, compiled: CompiledFlow, state: RunState, commit: StepCommit
    ) -> None: ...


class Engine:
    """Starts and resumes runs against one store. Safe to share between threads: the
    only per-engine state is caches of compiled flows and tool clients, and the
    heartbeat that keeps the leases of running steps."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock | None = None,
        environ: Mapping[str, str] | None = None,
        http_transport: Any = None,
        rng: random.Random | None = None,
        llm: LLMClient | None = None,
        embedder: Embedder | None = None,
        tools: Mapping[str, ToolCall] | None = None,
        faults: Mapping[str, str] | None = None,
        max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        hooks: Sequence[RunHook] | None = None,
    ) -> None:
        from runner.runtime.alerts import Alerts
        from runner.runtime.tracing import tracing

        self.store = store
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        # A snapshot: templates read `env.X` and `secret.X` from it on every step.
        self.environ = Environment(os.environ if environ is None else environ)
        self.max_input_bytes = max_input_bytes
        self.tools = ToolCaller(
            store, self.clock, self.rng, http_transport=http_transport, overrides=tools
        )
        self.hooks: list[RunHook] = list(hooks if hooks is not None else [Alerts(), *tracing()])
        self._faults = dict(faults or {})  # step id -> message: failures flow tests inject
        self._llm = llm
        self._embedder = embedder
        self._llm_lock = threading.Lock()
        self._flows: dict[str, CompiledFlow] = {}
        self._versions: dict[str, FlowVersion] = {}
        self._redactors: dict[str, Callable[[Any], Any]] = {}
        self._heartbeat = Heartbeat(store)
        # A worker's: set, runs stop at their next step boundary and give their lease up;
        # a retry wait over park_after s parks the run (runtime.parking) instead.
        self.draining = threading.Event()
        self.park_after: float | None = None

    # -- entry points ------------------------------------------------------------------
    def start(
        self, compiled: CompiledFlow, input_value: Any, *, run_id: str | None = None
    ) -> RunResult:
        """Check the input, pin the flow version, create the run and drive it."""
        check_input(compiled, input_value, self.max_input_bytes)
        check_environment(compiled, self.environ)
        digest = compiled.flow.digest
        if digest not in self._versions:
            self._versions[digest] = flow_version(compiled)
        self._flows.setdefault(digest, compiled)
        owner = owner_id()
        run_id = run_id or new_run_id()
        self.store.create_run(run_id, self._versions[digest], input_value, compiled.first, owner)
        state = RunState(run_id, compiled.flow.name, input_value, {}, 0, owner=owner)
        return self._drive(compiled, state, compiled.first, owner)

    def resume(
        self, run_id: str, *, from_step: str | None = None, flow: CompiledFlow | None = None
    ) -> RunResult:
        """Continue a run that was interrupted (running) or failed (dead letter), at the
        step where it stopped, or at `from_step`. Completed steps are not run again. With
        `flow`, the run moves to that (fixed) version of its flow first."""
        record = self.store.run(run_id)
        if flow is not None:
            check_upgrade(self.store, record, flow)
        compiled = flow or self.flow(record.flow_digest)
        if from_step is not None and compiled.flow.find(from_step) is None:
            raise StoreError(f"flow {compiled.flow.name} has no step {from_step}")
        reopen: str | None
        if record.status == RunStatus.FAILED:
            reopen = from_step or record.failed_step or compiled.first
        elif record.status == RunStatus.RUNNING:
            reopen = from_step
        elif record.status == RunStatus.ESCALATED:
            raise StoreError(
                f"run {record.id} waits for human review at "
                f"{record.failed_step}: see `runner review show {record.id}`, "
                "then approve, reject or retry it"
            )
        elif record.status == RunStatus.QUEUED:
            due = f", due {record.due_at:%Y-%m-%d %H:%M:%S} UTC" if record.due_at else ""
            why = f" ({record.reason})" if record.reason else ""
            raise StoreError(
                f"run {record.id} is queued for a worker{due}{why}: `runner worker` "
                "on this store runs it"
            )
        else:
            raise StoreError(f"run {record.id} is {record.status}; there is nothing to resume")
        check_environment(compiled, self.environ)  # before the claim: a failed run stays so
        owner = owner_id()
        self.store.claim(record.id, owner, statuses=(record.status,), reopen_at=reopen)
        if flow is not None:
            self.adopt(record.id, owner, flow)
        return self.continue_claimed(record.id, owner)

    def adopt(self, run_id: str, owner: str, compiled: CompiledFlow) -> None:
        """Move a run `owner` holds to `compiled`'s version of its flow."""
        digest = compiled.flow.digest
        self._versions.setdefault(digest, flow_version(compiled))
        self._flows.setdefault(digest, compiled)
        self.store.repin(run_id, owner, self._versions[digest])

    def continue_claimed(
        self, run_id: str, owner: str, record: RunRecord | None = None
    ) -> RunResult:
        """Drive a run that `owner` holds the lease of, from its stored position. A
        worker gives the `record` its claim returned (saving reads: a run that took no
        step has no checkpoints; only a run parked until `due_at` has earlier attempts)."""
        record = record or self.store.run(run_id)
        compiled = self.flow(record.flow_digest)
        try:
            check_environment(compiled, self.environ)
        except InputError:
            self.store.release(record.id, owner)
            raise
        done = self.store.checkpoints(record.id) if record.steps_run else []
        state = RunState(
            run_id=record.id,
            flow=compiled.flow.name,
            input=record.input,
            outputs={c.step_id: c.output for c in done if c.outcome != Outcome.ERROR},
            seq=max((c.seq for c in done), default=0),
            usage=Usage(record.llm_calls, record.tokens, record.cost_usd),
            owner=owner,
        )
        if self.park_after is not None and record.due_at is not None:  # a parked run
            state.prior_attempts = prior_attempts(self.store.events(run_id), record.position)
        return self._drive(compiled, state, record.position, owner)

    def flow(self, digest: str) -> CompiledFlow:
        """The compiled flow a run pinned, by its digest, found wherever the command
        runs (its tools import from where the flow is)."""
        if digest not in self._flows:
            self._flows[digest] = load_pinned(self.store.flow_version(digest))
        return self._flows[digest]

    # -- the loop ----------------------------------------------------------------------
    def _drive(self, compiled: CompiledFlow, state: RunState, at: str, owner: str) -> RunResult:
        position = machine_position(compiled, at)
        commit: StepCommit | None = None
        try:
            while position.state not in ENDINGS:
                if self.draining.is_set():
                    return RunResult(state.run_id, RunStatus.RUNNING, position.state)
                commit = self._advance(compiled, position, state, owner)
                if commit.position != position.state:  # the step limit's route: no trigger
                    position = machine_position(compiled, commit.position)
        except Parked as parked:  # back in the queue, lease given up: a worker goes on
            return RunResult(state.run_id, RunStatus.QUEUED, position.state, parked.reason)
        except KeyboardInterrupt as stop:  # the run stays where its last commit left it
            raise RunInterrupted(state.run_id, commit.position if commit else at) from stop
        finally:
            if commit is None or commit.status == RunStatus.RUNNING:  # stopped early: let go
                self.store.release(state.run_id, owner)
        assert commit is not None
        for hook in self.hooks:
            hook.after_run(self, compiled, state, commit)
        return RunResult(state.run_id, commit.status, commit.position, commit.reason, commit.error)

    def _advance(
        self, compiled: CompiledFlow, position: Any, state: RunState, owner: str
    ) -> StepCommit:
        step = compiled.flow.step(position.state)
        started = now()
        dest = step_limit_route(compiled.flow, step.id, state.seq)
        if dest is not None:  # the step does not run
            result = step_limit_reached(step, compiled.flow.max_steps)
        else:
            with (
                self._heartbeat.holding(state.run_id, owner),  # a long step keeps its run
                parking(self.store, state, owner, step, self.park_after),
            ):
                result = self._run_step(compiled, step, state)
            position.trigger(str(result.outcome))
            dest = position.state
        commit = self._commit(compiled, step, state, result, dest, started)
        commit_step(self.store, state.run_id, owner, commit, self.clock)
        if result.outcome != Outcome.ERROR:
            state.outputs[step.id] = commit.checkpoint.output
        return commit

    def _commit(
        self,
        compiled: CompiledFlow,
        step: Step,
        state: RunState,
        result: StepResult,
        dest: str,
        started: Any,
    ) -> StepCommit:
        """What a finished step writes, with the flow's secrets taken out."""
        state.seq += 1
        redact = self.redactor(compiled)
        stopped = dest in STOPS
        outcome = str(result.outcome)  # plain text on disk, whatever the kind returned
        finished = finished_event(step, result, dest, started, redact)
        effect = result.effect
        return StepCommit(
            checkpoint=Checkpoint(
                state.seq,
                step.id,
                outcome,
                dest,
                redact(result.output),
                result.attempts,
                started,
                now(),
            ),
            position=dest,
            status=str(ENDINGS.get(dest, RunStatus.RUNNING)),
            events=[*(e.redacted(redact) for e in result.events), finished],
            effect=(effect[0], str(effect[1]), redact(effect[2])) if effect else None,
            failed_step=step.id if stopped else None,
            reason=redact(reason(step, result, dest)),
            error=redact(result.error) if stopped else None,
            usage=(state.usage.llm_calls, state.usage.tokens, state.usage.cost_usd),
            due_at=review_due(compiled, step, dest),
        )

    def _run_step(self, compiled: CompiledFlow, step: Step, state: RunState) -> StepResult:
        try:
            if step.id in self._faults:
                raise StepError(self._faults[step.id], ErrorKind.INJECTED)
            kind = STEP_KINDS.get(step.kind)
            if kind is None:
                raise StepError(
                    f"{step.kind} steps cannot run in this version of runner", ErrorKind.UNSUPPORTED
                )
            return kind.run(step, Visit(self, compiled, step, state))
        except BudgetExceededError as exc:
            return StepResult(
                Outcome.BUDGET_EXCEEDED,
                None,
                0,
                [BudgetReached(step_id=step.id, message=str(exc))],
                reason=str(exc),
                error={"kind": exc.kind, "message": str(exc)},
            )
        except (RetriesExhaustedError, StepError) as exc:
            return failure(step, exc, attempts_of(exc))

    # -- what steps use ----------------------------------------------------------------
    def redactor(self, compiled: CompiledFlow) -> Callable[[Any], Any]:
        """Removes the flow's secrets from anything about to be stored."""
        digest = compiled.flow.digest
        if digest not in self._redactors:
            self._redactors[digest] = redactor(compiled, self.environ)
        return self._redactors[digest]

    def llm_client(self) -> LLMClient:
        """The model client: the one given, else litellm with local models (made once)."""
        with self._llm_lock:  # runs on several threads must share one (one local server)
            if self._llm is None:
                from runner.runtime.local_models import LocalModels
                from runner.runtime.models import LiteLLMClient

                self._llm = LiteLLMClient(LocalModels())
            return self._llm

    def session(self, compiled: CompiledFlow, step: Step, state: RunState) -> Session:
        """Model calls for one step, sharing the run's usage for its budget."""

        def retrier(policy: Any, on_attempt: Callable[[Any], None]) -> Retrier:
            return Retrier(policy, self.clock, self.rng, None, on_attempt)

        return Session(
            compiled.flow,
            step,
            self.llm_client(),
            retrier,
            state.usage,
            self.environ,
            self.embedder,
        )

    def embedder(self) -> Embedder:
        """Text embeddings: the embedder given, else runner's own (made once)."""
        with self._llm_lock:
            if self._embedder is None:
                from runner.runtime.embeddings import Embeddings

                self._embedder = Embeddings()
            return self._embedder
