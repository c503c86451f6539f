"""The human side of runs: the review queue (escalated runs) and the dead-letter queue
(failed runs).

A person approves an escalated run (optionally editing the proposed output, which is
checked against its schema and the policies that apply to it), rejects it, or retries
it from a step; a failed run is retried after its cause is fixed, or dropped (archived,
its audit trail kept). Every decision records who, when, the sha256 of exactly the
content approved and what the person changed, and commits only if the run is still as
the person saw it: of two people deciding at once, one wins.
"""

from __future__ import annotations

import copy
import getpass
import re
import subprocess
from datetime import datetime, timedelta
from typing import Any

from runner.core.errors import InputError, StoreError, UsageError
from runner.core.vocabulary import ENDINGS, DecisionKind, EffectStatus, Outcome, RunStatus
from runner.lang.compiler import CompiledFlow
from runner.lang.schema import instance_problems
from runner.review.edits import assign, describe_hits, diff, recheck
from runner.review.proposals import Proposal, build_proposal, content_hash, outputs_of
from runner.runtime.engine import Engine, RunResult
from runner.runtime.upgrade import check_upgrade
from runner.runtime.visit import RunState, context
from runner.store.leases import owner_id
from runner.store.records import Checkpoint, Decision, RunRecord, now

__all__ = ["Desk", "Proposal", "content_hash", "reviewer"]


def reviewer(given: str | None) -> str:
    """Who decides: `--as`, else git's user.name, else the OS user."""
    if given:
        return given
    try:
        name = subprocess.run(
            ["git", "config", "user.name"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        name = ""
    return name or getpass.getuser()


class Desk:
    """Review and dead-letter operations on one engine's store."""

    def __init__(
        self, engine: Engine, *, hand_off: bool = False, any_reviewer: bool = False
    ) -> None:
        self.engine = engine
        self.store = engine.store
        # With hand_off a decision that sends the run on leaves it for a worker (running,
        # unleased) instead of driving it here: a web request must not run the flow.
        self.hand_off = hand_off
        # With any_reviewer the steps' `reviewers` are not asked: the caller vouches that
        # whoever decides may decide anything (the inbox's administrators).
        self.any_reviewer = any_reviewer

    # -- reading -----------------------------------------------------------------------
    def queue(
        self, status: str = RunStatus.ESCALATED, flow: str | None = None, limit: int = 200
    ) -> list[Proposal]:
        return [
            self.proposal(r.id, r)
            for r in self.store.list_runs(status=status, flow=flow, limit=limit)
        ]

    def proposal(self, run_id: str, record: RunRecord | None = None) -> Proposal:
        record = record or self.store.run(run_id)
        return build_proposal(self.store, self.engine.flow(record.flow_digest), record)

    # -- deciding ----------------------------------------------------------------------
    def approve(
        self,
        run_id: str,
        by: str,
        *,
        content: Any = None,
        edited: bool = False,
        sets: tuple[str, ...] = (),
        note: str | None = None,
        expect_hash: str | None = None,
        override: str | None = None,
    ) -> RunResult:
        """Accept the proposal (as edited) and continue the run on the stopped step's
        success route. An edit must fit the output schema and pass the policies that
        apply to it, unless `override` says why it may go anyway."""
        proposal = self._escalated(run_id, expect_hash, by)
        value, changed = _decided_value(proposal, content, edited, sets)
        self._fits(proposal, value, changed)
        compiled = self.engine.flow(proposal.run.flow_digest)
        overridden = self._passes_policies(compiled, proposal, value, override) if changed else {}
        position = compiled.route(proposal.step_id, compiled.flow.step(proposal.step_id).success)
        checkpoint = self._checkpoint(
            proposal.run, proposal.target, Outcome.APPROVED, position, value
        )
        decision = Decision(
            proposal.run.id,
            proposal.step_id,
            DecisionKind.APPROVED,
            by,
            content_hash(value),
            note,
            value if changed else None,
            diff=diff(proposal.content, value) if changed else None,
            override=override if changed else None,
            overrides=overridden or None,
        )
        effect = (
            (proposal.effect_key, EffectStatus.DONE.value, value) if proposal.effect_key else None
        )
        return self._move(proposal.run, decision, position, checkpoint, effect)

    def reject(self, run_id: str, by: str, reason: str) -> RunResult:
        """Close the run (nothing more of it runs), or take the stopped step's
        `on_rejected` route when it has one."""
        proposal = self._escalated(run_id, None, by)
        decision = Decision(
            proposal.run.id,
            proposal.step_id,
            DecisionKind.REJECTED,
            by,
            proposal.content_hash,
            reason,
        )
        compiled = self.engine.flow(proposal.run.flow_digest)
        step = compiled.flow.step(proposal.step_id)
        if Outcome.REJECTED in step.routes():
            position = compiled.route(step.id, Outcome.REJECTED)
            checkpoint = self._checkpoint(
                proposal.run, step.id, Outcome.REJECTED, position, {"reason": reason}
            )
            return self._move(proposal.run, decision, position, checkpoint, None)
        self.store.decide(
            proposal.run, decision, status=RunStatus.REJECTED, position=proposal.run.position
        )
        return RunResult(proposal.run.id, RunStatus.REJECTED, proposal.run.position)

    def retry(
        self,
        run_id: str,
        by: str,
        from_step: str | None,
        note: str | None = None,
        statuses: tuple[str, ...] = (RunStatus.ESCALATED,),
        flow: CompiledFlow | None = None,
    ) -> RunResult:
        """Run again from a step (the stopped one by default). For an effect held in
        doubt, this is the person's word that it did not happen: it may be sent again.
        With `flow`, the run goes on with that (fixed) version of its flow."""
        record = self.store.run(run_id)
        if record.status not in statuses:
            raise StoreError(f"run {record.id} is {record.status}, not {' or '.join(statuses)}")
        if flow is not None:
            check_upgrade(self.store, record, flow)
        compiled = flow or self.engine.flow(record.flow_digest)
        start = from_step or record.failed_step or compiled.first
        if compiled.flow.find(start) is None:
            raise UsageError(f"flow {compiled.flow.name} has no step {start}")
        proposal = self.proposal(record.id, record)
        decision = Decision(
            record.id, record.failed_step, DecisionKind.RETRIED, by, None, note or f"from {start}"
        )
        effect = None
        if proposal.effect_key:
            effect = (
                proposal.effect_key,
                EffectStatus.FAILED.value,
                {"error": "a person said it did not happen"},
            )
        return self._move(record, decision, start, None, effect, upgrade=flow)

    def drop(self, run_id: str, by: str, note: str | None = None) -> None:
        """Archive a failed run; its input, error and audit trail stay."""
        record = self.store.run(run_id)
        if record.status != RunStatus.FAILED:
            raise StoreError(f"run {record.id} is {record.status}; only failed runs are dropped")
        decision = Decision(record.id, record.failed_step, DecisionKind.DROPPED, by, None, note)
        self.store.decide(record, decision, status=RunStatus.ARCHIVED, position=record.position)

    def expire(
        self, at: datetime | None = None, *, unscheduled: bool = False
    ) -> list[tuple[str, str]]:
        """Take the expiry route of every run whose review is overdue at `at` (now):
        (run, route taken) for each. With `unscheduled`, also runs escalated before
        review deadlines were recorded, by their flow's `review` policy."""
        at = at or now()
        due = self.store.due_runs(at, limit=1000)
        if unscheduled:
            due += [
                r
                for r in self.store.list_runs(status=RunStatus.ESCALATED, limit=10_000)
                if r.due_at is None and self._overdue_by_policy(r, at)
            ]
        moved = []
        for record in due:
            route = self._expire(record)
            if route is not None:
                moved.append((record.id, route))
        return moved

    # -- helpers -----------------------------------------------------------------------
    def _escalated(self, run_id: str, expect_hash: str | None, by: str) -> Proposal:
        proposal = self.proposal(run_id)
        if proposal.run.status != RunStatus.ESCALATED:
            raise StoreError(
                f"run {proposal.run.id} is {proposal.run.status}, not waiting for review"
            )
        if expect_hash and len(expect_hash) < 8:
            raise UsageError("--hash needs at least 8 characters of the hash shown")
        if expect_hash and not proposal.content_hash.startswith(expect_hash.lower()):
            raise StoreError(
                f"run {proposal.run.id}: the proposal changed since it was shown "
                f"(hash {expect_hash[:12]}, now {proposal.content_hash[:12]}); "
                "look at it again"
            )
        if not self.any_reviewer:
            _may_decide(proposal, by)
        return proposal

    def _fits(self, proposal: Proposal, value: Any, changed: bool) -> None:
        problems = instance_problems(proposal.schema, value)
        if problems:
            what = "the edited output" if changed else "the proposed output"
            hint = "" if changed else "; give the output with --edit or --set"
            raise InputError(
                f"{what} does not match the output schema of step "
                f"{proposal.target}: " + "; ".join(problems) + hint
            )

    def _passes_policies(
        self, compiled: CompiledFlow, proposal: Proposal, value: Any, override: str | None
    ) -> dict[str, str]:
        """Refuse an edit that breaks a policy check that reads it, unless overridden;
        the checks overridden -> the fingerprint of the text the person approved."""
        record = proposal.run
        outputs = {**outputs_of(self.store, record.id), proposal.target: value}
        state = RunState(record.id, record.flow_name, record.input, outputs, 0)
        found = recheck(compiled.flow, proposal.target, context(state, self.engine.environ))
        hits = [hit for _, step_hits in found.values() for hit in step_hits]
        if hits and not override:
            listed = "\n  ".join(describe_hits(hits))
            raise InputError(
                f"the edited output breaks the flow's policies:\n  {listed}\n"
                "fix the edit, or approve it anyway with --override REASON"
            )
        return {step_id: fingerprint for step_id, (fingerprint, _) in found.items()}

    def _checkpoint(
        self, record: RunRecord, step_id: str, outcome: str, position: str, output: Any
    ) -> Checkpoint:
        seq = max((c.seq for c in self.store.checkpoints(record.id)), default=0) + 1
        return Checkpoint(seq, step_id, outcome, position, output, 0, now(), now())

    def _expire(self, record: RunRecord) -> str | None:
        compiled = self.engine.flow(record.flow_digest)
        step = compiled.flow.find(record.failed_step or record.position)
        seconds, route = step.review_expiry(compiled.flow) if step else (None, "dead_letter")
        waited = f"unreviewed for {seconds:g} s" if seconds else "unreviewed"
        decision = Decision(
            record.id, record.failed_step, DecisionKind.EXPIRED, "runner", None, waited
        )
        checkpoint = None
        if step is not None and Outcome.EXPIRED in step.routes():
            route = compiled.route(step.id, Outcome.EXPIRED)
            checkpoint = self._checkpoint(record, step.id, Outcome.EXPIRED, route, None)
        try:
            self._move(record, decision, route, checkpoint, None)
        except StoreError:
            return None  # decided meanwhile: nothing to expire
        return route

    def _overdue_by_policy(self, record: RunRecord, at: datetime) -> bool:
        compiled = self.engine.flow(record.flow_digest)
        step = compiled.flow.find(record.failed_step or record.position)
        seconds = step.review_expiry(compiled.flow)[0] if step else None
        return seconds is not None and record.updated_at + timedelta(seconds=seconds) <= at

    def _move(
        self,
        record: RunRecord,
        decision: Decision,
        position: str,
        checkpoint: Checkpoint | None,
        effect: Any,
        upgrade: CompiledFlow | None = None,
    ) -> RunResult:
        if position in ENDINGS:
            status = ENDINGS[position]
            self.store.decide(
                record,
                decision,
                status=status,
                position=position,
                checkpoint=checkpoint,
                effect=effect,
            )
            return RunResult(record.id, status, position)
        owner = owner_id()
        self.store.decide(
            record,
            decision,
            status=RunStatus.RUNNING,
            position=position,
            owner=owner,
            checkpoint=checkpoint,
            effect=effect,
        )
        if upgrade is not None:
            self.engine.adopt(record.id, owner, upgrade)
        if self.hand_off:
            self.store.release(record.id, owner)  # a worker claims it (and is woken)
            return RunResult(record.id, RunStatus.RUNNING, position)
        return self.engine.continue_claimed(record.id, owner)


def _decided_value(
    proposal: Proposal, content: Any, edited: bool, sets: tuple[str, ...]
) -> tuple[Any, bool]:
    """The value a person approves (the proposal, replaced or edited) and whether they
    changed it; a route with nothing to edit refuses changes."""
    changed = edited or bool(sets)
    if changed and not proposal.editable:
        raise InputError(
            f"run {proposal.run.id} stopped at `{proposal.step_id}`, a route "
            "with nothing to edit: approve or reject it as it is; to let a "
            "person change values, add an `approval` step to the flow"
        )
    value = content if edited else copy.deepcopy(proposal.content)
    for assignment in sets:
        value = assign(value, assignment)
    return value, changed


def _may_decide(proposal: Proposal, by: str) -> None:
    """Only the step's reviewers decide: a name, or a group named in parentheses after
    it (`Lena (finance)` decides for `finance`)."""
    allowed = proposal.reviewers
    if not allowed:
        return
    groups = re.findall(r"\(([^()]*)\)", by)
    names = {by.strip(), re.sub(r"\s*\([^()]*\)", "", by).strip(), *map(str.strip, groups)}
    if not names & set(allowed):
        raise InputError(
            f"only {', '.join(allowed)} may decide at `{proposal.step_id}`; "
            f"{by!r} is not one of them (name your group in parentheses: "
            f'--as "Your Name ({allowed[0]})")'
        )
