"""What an evaluation found: per case, each graded step's answer against the expected
values, and every confidence gate's score and verdict. Plain records: `runner.eval.run`
makes them, `runner.eval.metrics` and `runner.eval.report` read them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GateScore:
    """One confidence gate's verdict on one answer. `name` tells the step's gates apart:
    the method, with its place when a step has two gates of one method (`logprobs#2`)."""

    name: str
    method: str
    score: float | None  # None: no valid score (it never passes)
    min: float
    passed: bool


@dataclass(frozen=True)
class StepGrade:
    """A step's answer on one case against what the case expects of it."""

    step: str
    expected: Mapping[str, Any]  # field path ("category", "a.b") -> expected value
    got: Mapping[str, Any]  # field path -> the answer's value; a missing field is absent
    reached: bool  # False: the run ended before this step answered
    gates: tuple[GateScore, ...] = ()

    @property
    def correct(self) -> bool:
        return self.reached and all(
            k in self.got and self.got[k] == v for k, v in self.expected.items()
        )

    @property
    def passed(self) -> bool:
        """Every gate passed (a step without gates always passes)."""
        return self.reached and all(g.passed for g in self.gates)

    def gate(self, name: str) -> GateScore | None:
        return next((g for g in self.gates if g.name == name), None)


@dataclass(frozen=True)
class CaseResult:
    """One case: where its run ended, its graded steps, and what its model calls cost."""

    index: int  # 1-based line of the data file
    id: str  # the case's `id`, else its line number
    ending: str  # the run's ending: done, human_review, dead_letter, ... or "refused"
    grades: tuple[StepGrade, ...]
    model_calls: int = 0
    cached_calls: int = 0  # answers that came from the cache (no call made now)
    cost_usd: float | None = 0.0  # None when a model's price is unknown
    latency_ms: float = 0.0  # the model calls' latency, as first measured
    error: str | None = None  # why the case could not run (its input was refused, ...)

    def grade(self, step: str) -> StepGrade | None:
        return next((g for g in self.grades if g.step == step), None)


@dataclass(frozen=True)
class EvalResult:
    """An evaluation of one flow (at one revision) on one data file."""

    flow: str  # the flow's name
    path: str  # the flow file evaluated
    revision: str | None  # the git revision given with --against, else None
    data: str  # the data file
    cases: tuple[CaseResult, ...]
    gates: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # step -> gate names
    seconds: float = 0.0

    @property
    def steps(self) -> list[str]:
        """The graded steps, in the order the cases name them."""
        return list(dict.fromkeys(g.step for c in self.cases for g in c.grades))
