"""The human side of runs: the review queue (escalated runs) and the dead-letter queue
(failed runs).

A person approves an escalated run (optionally editing the proposed output, which is
checked against its schema), rejects it, or retries it from a step; a failed run is
retried after its cause is fixed, or dropped (archived, its audit trail kept). Every
decision records who, when, and the sha256 of exactly the content approved, and commits
only if the run is still as the person saw it: of two people deciding at once, one wins.
"""

from __future__ import annotations

import copy
import getpass
import hashlib
import json
import re
import subprocess
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from runner.core.errors import InputError, StoreError, UsageError
from runner.core.vocabulary import ENDINGS, DecisionKind, EffectStatus, Outcome, RunStatus
from runner.lang.model import Step
from runner.lang.schema import instance_problems
from runner.runtime.engine import Engine, RunResult
from runner.store.records import Checkpoint, Decision, RunRecord, now
from runner.store.sql import owner_id

_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True)
class Proposal:
    """What a reviewer decides on: where the run stopped, and the output it proposes."""

    run: RunRecord
    step_id: str
    target: str  # the step whose output is approved (or edited)
    content: Any
    content_hash: str
    schema: Any
    effect_key: str | None
    score: float | None
    method: str | None


def content_hash(value: Any) -> str:
    """sha256 of a value's canonical JSON: the fingerprint of what was approved."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def reviewer(given: str | None) -> str:
    """Who decides: `--as`, else git's user.name, else the OS user."""
    if given:
        return given
    try:
        name = subprocess.run(["git", "config", "user.name"], capture_output=True,
                              text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        name = ""
    return name or getpass.getuser()


class Desk:
    """Review and dead-letter operations on one engine's store."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store = engine.store

    # -- reading -----------------------------------------------------------------------
    def queue(self, status: str = RunStatus.ESCALATED, flow: str | None = None,
              limit: int = 200) -> list[Proposal]:
        return [self.proposal(r.id, r) for r in
                self.store.list_runs(status=status, flow=flow, limit=limit)]

    def proposal(self, run_id: str, record: RunRecord | None = None) -> Proposal:
        record = record or self.store.run(run_id)
        step_id = record.failed_step or record.position
        compiled = self.engine.flow(record.flow_digest)
        flow = compiled.flow
        step = flow.step(step_id) if step_id in {s.id for s in flow.steps} else None
        target = step.review_target() if step is not None else step_id
        outputs = {c.step_id: c.output for c in self.store.checkpoints(record.id)
                   if c.outcome != Outcome.ERROR}
        content = outputs.get(target)
        events = [e for e in self.store.events(record.id) if e.step_id == step_id]
        doubt = [e for e in events if e.kind == "effect" and e.data.get("status") == "in_doubt"]
        gates = [e for e in events if e.kind == "confidence"]
        target_step = flow.step(target) if target in {s.id for s in flow.steps} else None
        return Proposal(
            run=record, step_id=step_id, target=target, content=content,
            content_hash=content_hash(content), schema=_output_schema(flow, target_step),
            effect_key=doubt[-1].data["key"] if doubt and record.status == RunStatus.ESCALATED else None,
            score=gates[-1].data.get("score") if gates else None,
            method=gates[-1].data.get("method") if gates else None)

    # -- deciding ----------------------------------------------------------------------
    def approve(self, run_id: str, by: str, *, content: Any = None, edited: bool = False,
                sets: tuple[str, ...] = (), note: str | None = None,
                expect_hash: str | None = None) -> RunResult:
        """Accept the proposal (as edited) and continue the run on the stopped step's
        success route."""
        proposal = self._escalated(run_id, expect_hash)
        value = content if edited else copy.deepcopy(proposal.content)
        for assignment in sets:
            value = _assign(value, assignment)
        problems = instance_problems(proposal.schema, value)
        if problems:
            what = "the edited output" if edited or sets else "the proposed output"
            hint = "" if edited or sets else "; give the output with --edit or --set"
            raise InputError(f"{what} does not match the output schema of step "
                             f"{proposal.target}: " + "; ".join(problems) + hint)
        compiled = self.engine.flow(proposal.run.flow_digest)
        step = compiled.flow.step(proposal.step_id)
        position = compiled.route(step.id, step.success)
        checkpoint = Checkpoint(_next_seq(self.store, proposal.run.id), proposal.target,
                                Outcome.APPROVED,
                                position, value, 0, now(), now())
        decision = Decision(proposal.run.id, proposal.step_id, DecisionKind.APPROVED, by,
                            content_hash(value), note, value if (edited or sets) else None)
        effect = (proposal.effect_key, EffectStatus.DONE.value, value) if proposal.effect_key else None
        return self._move(proposal.run, decision, position, checkpoint, effect)

    def reject(self, run_id: str, by: str, reason: str) -> None:
        """Close the run: nothing more of it runs."""
        proposal = self._escalated(run_id, None)
        decision = Decision(proposal.run.id, proposal.step_id, DecisionKind.REJECTED, by,
                            proposal.content_hash, reason)
        self.store.decide(proposal.run, decision, status=RunStatus.REJECTED,
                          position=proposal.run.position)

    def retry(self, run_id: str, by: str, from_step: str | None, note: str | None = None,
              statuses: tuple[str, ...] = (RunStatus.ESCALATED,)) -> RunResult:
        """Run again from a step (the stopped one by default). For an effect held in
        doubt, this is the person's word that it did not happen: it may be sent again."""
        record = self.store.run(run_id)
        if record.status not in statuses:
            raise StoreError(f"run {record.id} is {record.status}, not {' or '.join(statuses)}")
        compiled = self.engine.flow(record.flow_digest)
        start = from_step or record.failed_step or compiled.first
        if start not in {s.id for s in compiled.flow.steps}:
            raise UsageError(f"flow {compiled.flow.name} has no step {start}")
        proposal = self.proposal(record.id, record)
        decision = Decision(record.id, record.failed_step, DecisionKind.RETRIED, by, None,
                            note or f"from {start}")
        effect = (proposal.effect_key, EffectStatus.FAILED.value, {"error": "a person said it did not happen"}) \
            if proposal.effect_key else None
        return self._move(record, decision, start, None, effect)

    def drop(self, run_id: str, by: str, note: str | None = None) -> None:
        """Archive a failed run; its input, error and audit trail stay."""
        record = self.store.run(run_id)
        if record.status != RunStatus.FAILED:
            raise StoreError(f"run {record.id} is {record.status}; only failed runs are dropped")
        self.store.decide(record, Decision(record.id, record.failed_step, DecisionKind.DROPPED, by, None,
                                           note), status=RunStatus.ARCHIVED, position=record.position)

    def expire(self) -> list[tuple[str, str]]:
        """Apply each flow's `review.expires_after_seconds`: (run, route taken) for each."""
        moved = []
        for record in self.store.list_runs(status=RunStatus.ESCALATED, limit=10_000):
            policy = self.engine.flow(record.flow_digest).flow.review
            if policy is None or policy.expires_after_seconds is None:
                continue
            if record.updated_at + timedelta(seconds=policy.expires_after_seconds) > now():
                continue
            decision = Decision(record.id, record.failed_step, DecisionKind.EXPIRED, "runner", None,
                                f"unreviewed for {policy.expires_after_seconds:g} s")
            try:
                self._move(record, decision, policy.on_expired, None, None)
            except StoreError:
                continue  # decided meanwhile: nothing to expire
            moved.append((record.id, policy.on_expired))
        return moved

    # -- helpers -----------------------------------------------------------------------
    def _escalated(self, run_id: str, expect_hash: str | None) -> Proposal:
        proposal = self.proposal(run_id)
        if proposal.run.status != RunStatus.ESCALATED:
            raise StoreError(f"run {proposal.run.id} is {proposal.run.status}, not waiting for "
                             "review")
        if expect_hash and len(expect_hash) < 8:
            raise UsageError("--hash needs at least 8 characters of the hash shown")
        if expect_hash and not proposal.content_hash.startswith(expect_hash.lower()):
            raise StoreError(f"run {proposal.run.id}: the proposal changed since it was shown "
                             f"(hash {expect_hash[:12]}, now {proposal.content_hash[:12]}); "
                             "look at it again")
        return proposal

    def _move(self, record: RunRecord, decision: Decision, position: str,
              checkpoint: Checkpoint | None, effect: Any) -> RunResult:
        if position in ENDINGS:
            status = ENDINGS[position]
            self.store.decide(record, decision, status=status, position=position,
                              checkpoint=checkpoint, effect=effect)
            return RunResult(record.id, status, position)
        owner = owner_id()
        self.store.decide(record, decision, status=RunStatus.RUNNING, position=position,
                          owner=owner, checkpoint=checkpoint, effect=effect)
        return self.engine.continue_claimed(record.id, owner)


def _output_schema(flow: Any, step: Step | None) -> Any:
    """What an approved (or edited) output must fit: the step's output schema."""
    schema = step.output_schema_in(flow) if step is not None else None
    return True if schema is None else schema


def _next_seq(store: Any, run_id: str) -> int:
    return max((c.seq for c in store.checkpoints(run_id)), default=0) + 1


def _assign(value: Any, assignment: str) -> Any:
    """Apply `path=value` (the value as JSON, else as text) to a copy of `value`."""
    path, sep, raw = assignment.partition("=")
    if not sep or not path:
        raise UsageError(f"--set takes path=value, e.g. reply=\"Hello\"; got {assignment!r}")
    try:
        new = json.loads(raw)
    except json.JSONDecodeError:
        new = raw
    parts: list[str | int] = [int(i) if i else str(k) for k, i in _PATH_PART.findall(path)]
    if not parts:
        return new
    root = copy.deepcopy(value) if isinstance(value, dict | list) else {}
    node: Any = root
    for part in parts[:-1]:
        node = node.setdefault(part, {}) if isinstance(node, dict) else node[part]
    try:
        node[parts[-1]] = new
    except (IndexError, TypeError) as exc:
        raise UsageError(f"--set {path}: no such place in the output") from exc
    return root
