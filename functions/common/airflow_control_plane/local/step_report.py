"""Run named steps in order, printing each one's progress and duration."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True)
class StepTiming:
    step: str
    seconds: float
    detail: str


@dataclass
class StepReporter:
    echo: Callable[[str], None]
    total: int
    clock: Callable[[], float] = time.monotonic
    timings: list[StepTiming] = field(default_factory=list)

    def run(self, step: StrEnum, action: Callable[[], str]) -> str:
        number = len(self.timings) + 1
        self.echo(f"[{number}/{self.total}] {step.value} ...")
        started = self.clock()
        try:
            detail = action()
        except Exception as exc:
            self.echo(
                f"[{number}/{self.total}] {step.value} FAILED after {self.clock() - started:.1f} s: {exc}"
            )
            raise
        seconds = self.clock() - started
        self.timings.append(StepTiming(step.value, seconds, detail))
        self.echo(f"[{number}/{self.total}] {step.value} done in {seconds:.1f} s: {detail}")
        return detail

    @property
    def total_seconds(self) -> float:
        return sum(t.seconds for t in self.timings)
