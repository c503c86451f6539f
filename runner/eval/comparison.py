"""Two evaluations of a flow on the same data side by side (`runner eval --against REV`):
each step's figures and how they moved, the cases whose outcome changed, and the figures
that fell by more than allowed (the caller exits 1 when there are any)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.eval.metrics import Figures, GateFigures, StepFigures, measure
from runner.eval.results import CaseResult, EvalResult

# The figures a pull request must not lower by more than `max_regression`.
GUARDED = {"accuracy": "accuracy", "precision": "precision of what passes"}
_NOISE = 1e-12  # a drop of exactly max_regression is allowed, float rounding or not


@dataclass(frozen=True)
class CaseChange:
    """A case whose outcome differs: at a step (`correct` -> `wrong`, `passed` ->
    `escalated`, or back), or in how its run ended (`step` None, before and after are
    endings)."""

    index: int  # the case's line in the data file
    case: str  # the case's id
    step: str | None
    before: str
    after: str

    @property
    def kind(self) -> str:
        """`correct→wrong`, `passed→escalated`, ... or `ending changed`."""
        return "ending changed" if self.step is None else f"{self.before}→{self.after}"

    def to_json(self) -> dict[str, Any]:
        return {**vars(self), "kind": self.kind}


@dataclass(frozen=True)
class Movement:
    """One figure on both sides; `delta` is current minus baseline (None unless both)."""

    baseline: float | None
    current: float | None

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline

    def to_json(self) -> dict[str, float | None]:
        return {"baseline": self.baseline, "current": self.current, "delta": self.delta}


@dataclass(frozen=True)
class StepComparison:
    """One step on both sides; a side is None when only the other grades the step."""

    step: str
    baseline: StepFigures | None
    current: StepFigures | None

    def figures(self) -> dict[str, Movement]:
        """The step's headline figures (accuracy, coverage, ...) on both sides."""
        before = self.baseline.headline() if self.baseline else {}
        after = self.current.headline() if self.current else {}
        names = dict.fromkeys([*before, *after])
        return {name: Movement(before.get(name), after.get(name)) for name in names}

    def gates(self) -> dict[str, dict[str, Movement]]:
        """Per gate: its current min, its AUROC and its recommended min on both sides."""
        before = {g.gate: g for g in (self.baseline.gates if self.baseline else ())}
        after = {g.gate: g for g in (self.current.gates if self.current else ())}
        return {
            name: _gate_movements(before.get(name), after.get(name))
            for name in dict.fromkeys([*before, *after])
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "figures": {name: m.to_json() for name, m in self.figures().items()},
            "gates": {
                gate: {name: m.to_json() for name, m in movements.items()}
                for gate, movements in self.gates().items()
            },
        }


def _gate_movements(before: GateFigures | None, after: GateFigures | None) -> dict[str, Movement]:
    def read(gate: GateFigures | None) -> dict[str, float | None]:
        if gate is None:
            return {"min": None, "auroc": None, "lowest_min": None}
        recommended = gate.recommended
        lowest = recommended.min if recommended else None
        return {"min": gate.min, "auroc": gate.auroc, "lowest_min": lowest}

    old, new = read(before), read(after)
    return {name: Movement(old[name], new[name]) for name in old}


@dataclass(frozen=True)
class Comparison:
    """A baseline evaluation (the flow at `--against REV`) and the current one."""

    baseline: Figures
    current: Figures
    steps: tuple[StepComparison, ...]
    changes: tuple[CaseChange, ...]  # by case, in the data file's order
    unmatched_cases: int  # cases on one side only (the data files differ)

    def totals(self) -> dict[str, Movement]:
        """Cost, latency and model calls per case on both sides."""
        before, after = self.baseline.totals.to_json(), self.current.totals.to_json()
        return {name: Movement(before[name], after[name]) for name in before}

    def changed(self, kind: str, step: str | None = None) -> list[str]:
        """The ids of the cases with this kind of change (at this step, if given)."""
        return [c.case for c in self.changes if c.kind == kind and (step is None or c.step == step)]

    def regressions(self, max_regression: float) -> list[str]:
        """Each guarded figure that fell by more than `max_regression` (absolute: 0.02 is
        2 points), said in a sentence."""
        found = []
        for step in self.steps:
            figures = step.figures()
            for name, label in GUARDED.items():
                movement = figures.get(name)
                delta = movement.delta if movement else None
                if movement is None or delta is None or -delta <= max_regression + _NOISE:
                    continue
                found.append(
                    f"{step.step}: {label} fell by {-delta * 100:.1f} points, from "
                    f"{movement.baseline:.1%} to {movement.current:.1%} "
                    f"(at most {max_regression * 100:g} allowed)"
                )
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "target_precision": self.current.target_precision,
            "confidence": self.current.confidence,
            "totals": {name: m.to_json() for name, m in self.totals().items()},
            "steps": [step.to_json() for step in self.steps],
            "changes": [change.to_json() for change in self.changes],
            "unmatched_cases": self.unmatched_cases,
        }


def compare(
    baseline: EvalResult,
    current: EvalResult,
    target_precision: float = 0.9,
    confidence: float = 0.95,
) -> Comparison:
    """Set two evaluations on the same data side by side; cases are matched by their line
    in the data file."""
    before = measure(baseline, target_precision, confidence)
    after = measure(current, target_precision, confidence)
    names = dict.fromkeys([*current.steps, *baseline.steps])
    steps = tuple(StepComparison(name, before.step(name), after.step(name)) for name in names)
    old = {case.index: case for case in baseline.cases}
    new = {case.index: case for case in current.cases}
    changes = tuple(
        change
        for index in sorted(old.keys() & new.keys())
        for change in _case_changes(old[index], new[index])
    )
    return Comparison(before, after, steps, changes, len(old.keys() ^ new.keys()))


def _case_changes(old: CaseResult, new: CaseResult) -> list[CaseChange]:
    changes = []
    for grade in new.grades:
        was = old.grade(grade.step)
        if was is None or not (was.reached and grade.reached):
            continue
        outcomes = [
            (_answer(was.correct), _answer(grade.correct)),
            (_verdict(was.passed), _verdict(grade.passed)),
        ]
        for before, after in outcomes:
            if before != after:
                changes.append(CaseChange(new.index, new.id, grade.step, before, after))
    if old.ending != new.ending:
        changes.append(CaseChange(new.index, new.id, None, old.ending, new.ending))
    return changes


def _answer(correct: bool) -> str:
    return "correct" if correct else "wrong"


def _verdict(passed: bool) -> str:
    return "passed" if passed else "escalated"
