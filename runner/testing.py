"""Fakes that ship with runner, for its own tests and for users' tests of their flows."""

from __future__ import annotations

from dataclasses import dataclass, field

from runner.store import SqlStore


@dataclass
class FakeClock:
    """A clock that never sleeps: `sleep` moves time forward and records the wait."""

    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def memory_store() -> SqlStore:
    """A run store that lives in memory (SQLite), with the same code as the real one."""
    return SqlStore.memory()
