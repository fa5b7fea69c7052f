"""Replay a task trace through the scaling policy, beside always-on workers and plain KEDA.

Trace: CSV with a header ``arrival,duration,queue``; ``arrival`` in seconds from the start of
the day or as ``HH:MM[:SS]``, ``duration`` in seconds. Queues must be in the queue map.

Model (per queue, in ticks of ``tick`` seconds, the scaler every ``evaluate_every`` seconds):

- a worker runs ``concurrency`` tasks at once; a new worker is ready ``startup_delay`` seconds
  after it is asked for and is billed from that moment (Fargate bills from image pull);
- tasks wait FIFO for a free slot; the wait of a task is start minus arrival;
- **policy**: :func:`policy.decide` with the idle period; busy workers hold scale-in protection
  (protected = workers running a task) and ECS stops only unprotected workers on scale-in;
- **keda**: ``ceil((queued + running) / concurrency)`` clamped, applied at each evaluation with
  no idle period and no protection; on scale-in ECS picks workers by zone balance, not by load
  (modelled as a seeded random choice); a busy worker gets the Fargate stop timeout
  (``stop_timeout``, at most 120 s) to finish: tasks with more left are killed and retried;
- **policy+wake**: the policy, plus the scheduler-side wake-up (:mod:`.wakeup`): a task
  published to a queue with no worker triggers an evaluation at once instead of at the next
  scheduled tick;
- **always-on**: ``max`` workers all day.

Not modelled: pre-warm (a trace has no schedule), Celery prefetch, Fargate start-up jitter.
"""

from __future__ import annotations

import csv
import math
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from airflow_control_plane.errors import InvalidInputError
from airflow_control_plane.scaling.config import QueueScaling
from airflow_control_plane.scaling.policy import (
    Action,
    QueueDemand,
    ScaleMemory,
    WorkerCount,
    decide,
    keda_desired,
)

DAY = 86400.0
_EPOCH = datetime(2026, 1, 5, tzinfo=UTC)  # the policy wants datetimes; any fixed day works


class Strategy(StrEnum):
    POLICY = "policy"
    POLICY_WAKE = "policy+wake"
    KEDA = "keda"
    ALWAYS_ON = "always-on"


@dataclass(frozen=True)
class TraceTask:
    arrival: float
    duration: float
    queue: str


@dataclass(frozen=True)
class SimulationSettings:
    startup_delay: float = 45.0
    evaluate_every: float = 60.0
    tick: float = 5.0
    stop_timeout: float = 120.0
    seed: int = 7
    horizon: float | None = None  # default: end of the last day the trace touches


@dataclass(frozen=True)
class StrategyResult:
    strategy: Strategy
    worker_hours: float
    p50_wait: float
    p95_wait: float
    max_wait: float
    tasks_killed: int
    tasks_completed: int
    scale_changes: int


def _parse_time(value: str, line: int) -> float:
    text = value.strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError(text)
            return parts[0] * 3600 + parts[1] * 60 + (parts[2] if len(parts) == 3 else 0.0)
        return float(text)
    except ValueError:
        raise InvalidInputError(
            f"trace line {line}: arrival {value!r} is not seconds or HH:MM[:SS]"
        ) from None


def load_trace(path: Path, known_queues: Iterable[str] | None = None) -> list[TraceTask]:
    """Read a trace CSV; every malformed line is reported with its number."""
    known = set(known_queues) if known_queues is not None else None
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise InvalidInputError(f"cannot read trace {path}: {exc}") from None
    tasks: list[TraceTask] = []
    with handle:
        reader = csv.DictReader(row for row in handle if row.strip() and not row.lstrip().startswith("#"))
        missing = {"arrival", "duration", "queue"} - set(reader.fieldnames or [])
        if missing:
            raise InvalidInputError(
                f"trace {path}: header must name arrival,duration,queue; missing {sorted(missing)}"
            )
        for line, row in enumerate(reader, start=2):
            arrival = _parse_time(row["arrival"], line)
            try:
                duration = float(row["duration"])
            except (TypeError, ValueError):
                raise InvalidInputError(
                    f"trace line {line}: duration {row['duration']!r} is not a number"
                ) from None
            queue = (row["queue"] or "").strip()
            if duration <= 0 or arrival < 0 or not queue:
                raise InvalidInputError(
                    f"trace line {line}: need arrival >= 0, duration > 0 and a queue: {row}"
                )
            if known is not None and queue not in known:
                raise InvalidInputError(
                    f"trace line {line}: queue {queue!r} is not in the queue map {sorted(known)}"
                )
            tasks.append(TraceTask(arrival, duration, queue))
    if not tasks:
        raise InvalidInputError(f"trace {path} holds no tasks")
    return sorted(tasks, key=lambda t: t.arrival)


@dataclass
class _Worker:
    ready_at: float
    running: list[tuple[float, float]] = field(default_factory=list)  # (end time, duration)
    draining: bool = False


@dataclass
class _QueueRun:
    scaling: QueueScaling
    strategy: Strategy
    settings: SimulationSettings
    rng: random.Random
    workers: list[_Worker] = field(default_factory=list)
    pending: deque[tuple[float, float]] = field(default_factory=deque)  # (arrival, duration)
    waits: list[float] = field(default_factory=list)
    killed: int = 0
    completed: int = 0
    changes: int = 0
    worker_seconds: float = 0.0
    memory: ScaleMemory = field(default_factory=ScaleMemory)

    def finish_and_dispatch(self, now: float) -> None:
        for worker in self.workers:
            before = len(worker.running)
            worker.running = [slot for slot in worker.running if slot[0] > now]
            self.completed += before - len(worker.running)
        self.workers = [w for w in self.workers if not (w.draining and not w.running)]
        free = [w for w in self.workers if w.ready_at <= now and not w.draining]
        for worker in free:
            while (
                self.pending and self.pending[0][0] <= now and len(worker.running) < self.scaling.concurrency
            ):
                arrival, duration = self.pending.popleft()
                self.waits.append(now - arrival)
                worker.running.append((now + duration, duration))

    def counts(self, now: float) -> tuple[int, int, int]:
        queued = sum(1 for arrival, _ in self.pending if arrival <= now)
        running = sum(len(w.running) for w in self.workers)
        busy = sum(1 for w in self.workers if w.running)
        return queued, running, busy

    def wants_wake(self, now: float) -> bool:
        """policy+wake: a task waits on a queue with no worker, so the publish hook fires now."""
        if self.strategy is not Strategy.POLICY_WAKE or self.live_workers():
            return False
        return bool(self.pending) and self.pending[0][0] <= now

    def live_workers(self) -> list[_Worker]:
        return [w for w in self.workers if not w.draining]

    def evaluate(self, now: float) -> None:
        queued, running, busy = self.counts(now)
        current = len(self.live_workers())
        if self.strategy is Strategy.KEDA:
            target = keda_desired(queued + running, self.scaling)
        else:
            demand = QueueDemand(queued=queued, running=running, broker_waiting=queued)
            workers = WorkerCount(desired=current, running=current, protected=busy)
            decision = decide(self.scaling, demand, workers, self.memory, _EPOCH + timedelta(seconds=now))
            self.memory = decision.memory
            target = decision.target if decision.action is not Action.HOLD else current
        if target > current:
            self.workers.extend(_Worker(now + self.settings.startup_delay) for _ in range(target - current))
            self.changes += 1
        elif target < current:
            self.scale_in(now, current - target)
            self.changes += 1

    def scale_in(self, now: float, count: int) -> None:
        live = self.live_workers()
        # policy: ECS stops only unprotected workers, and the policy never asks for fewer than
        # the busy ones; keda: zone balance, not load, so any worker may be chosen.
        candidates = live if self.strategy is Strategy.KEDA else [w for w in live if not w.running]
        victims = self.rng.sample(candidates, min(count, len(candidates)))
        for worker in victims:
            survivors = []
            for end, duration in worker.running:
                if end - now <= self.settings.stop_timeout:
                    survivors.append((end, duration))  # warm shutdown finishes it
                else:
                    self.killed += 1
                    self.pending.append((now, duration))  # Airflow retries it from the start
            worker.running = survivors
            worker.draining = True
        self.pending = deque(sorted(self.pending))


def _percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def _horizon(tasks: Sequence[TraceTask], settings: SimulationSettings) -> float:
    if settings.horizon is not None:
        return settings.horizon
    last = max(t.arrival + t.duration for t in tasks)
    return math.ceil(last / DAY) * DAY


def simulate(
    tasks: Sequence[TraceTask],
    queues: Sequence[QueueScaling],
    strategy: Strategy,
    settings: SimulationSettings,
) -> StrategyResult:
    """Replay ``tasks`` under one strategy; every queue is simulated, results are summed."""
    rng = random.Random(settings.seed)  # noqa: S311 - a simulation, not cryptography
    horizon = _horizon(tasks, settings)
    runs = []
    for scaling in queues:
        run = _QueueRun(scaling, strategy, settings, rng)
        run.pending.extend((t.arrival, t.duration) for t in tasks if t.queue == scaling.queue)
        if strategy is Strategy.ALWAYS_ON:
            run.workers = [_Worker(0.0) for _ in range(scaling.max_workers)]
        else:
            run.workers = [_Worker(0.0) for _ in range(scaling.min_workers)]
        runs.append(run)
    steps_per_eval = max(1, round(settings.evaluate_every / settings.tick))
    step = 0
    now = 0.0
    while now < horizon or any(r.pending or any(w.running for w in r.workers) for r in runs):
        for run in runs:
            run.finish_and_dispatch(now)
            if strategy is not Strategy.ALWAYS_ON and (step % steps_per_eval == 0 or run.wants_wake(now)):
                run.evaluate(now)
                run.finish_and_dispatch(now)
            run.worker_seconds += len(run.workers) * settings.tick
        step += 1
        now = step * settings.tick
    waits = [w for run in runs for w in run.waits]
    return StrategyResult(
        strategy=strategy,
        worker_hours=sum(r.worker_seconds for r in runs) / 3600,
        p50_wait=_percentile(waits, 0.50),
        p95_wait=_percentile(waits, 0.95),
        max_wait=max(waits, default=0.0),
        tasks_killed=sum(r.killed for r in runs),
        tasks_completed=sum(r.completed for r in runs),
        scale_changes=sum(r.changes for r in runs),
    )


def compare(
    tasks: Sequence[TraceTask], queues: Sequence[QueueScaling], settings: SimulationSettings
) -> list[StrategyResult]:
    """The three strategies on the same trace, in the same run."""
    return [simulate(tasks, queues, strategy, settings) for strategy in Strategy]


def format_report(results: Sequence[StrategyResult], settings: SimulationSettings) -> str:
    always_on = next((r for r in results if r.strategy is Strategy.ALWAYS_ON), None)
    lines = [
        f"start-up delay {settings.startup_delay:.0f}s, scaler every {settings.evaluate_every:.0f}s, "
        f"tick {settings.tick:.0f}s, stop timeout {settings.stop_timeout:.0f}s",
        f"{'strategy':<12} {'worker-h':>9} {'vs always-on':>12} {'p50 wait':>9} {'p95 wait':>9} "
        f"{'max wait':>9} {'killed':>7} {'done':>6} {'changes':>8}",
    ]
    for r in results:
        relative = f"{100 * r.worker_hours / always_on.worker_hours:.1f}%" if always_on else "-"
        lines.append(
            f"{r.strategy.value:<12} {r.worker_hours:>9.2f} {relative:>12} "
            f"{r.p50_wait:>8.0f}s {r.p95_wait:>8.0f}s "
            f"{r.max_wait:>8.0f}s {r.tasks_killed:>7} {r.tasks_completed:>6} {r.scale_changes:>8}"
        )
    return "\n".join(lines)


WEEKDAY_TRACE = Path(__file__).parent / "traces" / "weekday.csv"
# The queue map the shipped trace was written for (idle period 10 min, scale to zero).
WEEKDAY_QUEUES_JSON = """[
  {"queue": "default", "service": "worker-default", "concurrency": 16, "min": 0, "max": 4,
   "idle_seconds": 600},
  {"queue": "etl", "service": "worker-etl", "concurrency": 8, "min": 0, "max": 10, "idle_seconds": 600},
  {"queue": "heavy", "service": "worker-heavy", "concurrency": 2, "min": 0, "max": 4, "idle_seconds": 600}
]"""
