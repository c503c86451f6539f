"""Moving a stopped run to a changed flow (`runner resume RUN --flow FILE`): after the
cause of a failure is fixed in the flow, the run goes on with the new text instead of
the version it pinned, as long as the steps it completed still exist."""

from __future__ import annotations

from runner.core.errors import InputError
from runner.core.vocabulary import Outcome
from runner.lang.compiler import CompiledFlow
from runner.store.base import Store
from runner.store.records import RunRecord


def check_upgrade(store: Store, record: RunRecord, compiled: CompiledFlow) -> None:
    """Refuse a flow the run cannot move to: another flow, or one that lost a step the
    run completed (its output would be gone) or the step where it stopped."""
    flow = compiled.flow
    if flow.name != record.flow_name:
        raise InputError(
            f"{flow.document.file} is flow `{flow.name}`; run {record.id} is of flow "
            f"`{record.flow_name}`"
        )
    ids = {s.id for s in flow.steps}
    done = [c.step_id for c in store.checkpoints(record.id) if c.outcome != Outcome.ERROR]
    missing = sorted({*done, record.failed_step or record.position} - ids - {None})
    if missing:
        raise InputError(
            f"run {record.id} cannot move to {flow.document.file}: it has no step "
            + ", ".join(f"`{m}`" for m in missing)
            + " (the run completed or stopped there)"
        )
