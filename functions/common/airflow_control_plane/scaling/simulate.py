"""Replay a task trace through the scaling policy, beside always-on workers and plain KEDA.

Trace: CSV with a header ``arrival,duration,queue`` and an optional ``scheduled`` column;
``arrival`` (and ``scheduled``) in seconds from the start of the day or as ``HH:MM[:SS]``,
``duration`` in seconds. ``scheduled`` is the due time of the scheduled DAG run the task
belongs to (what the scheduler knows in advance as ``dag.next_dagrun_create_after``); empty
for manual or triggered runs. Queues must be in the queue map.

Model (per queue, in ticks of ``tick`` seconds, the scaler every ``evaluate_every`` seconds):

- a worker runs ``concurrency`` tasks at once and holds up to ``concurrency *
  prefetch_multiplier`` (Celery prefetch with late acks: the extra ones wait *on that worker*,
  reserved); a new worker is ready ``startup_delay`` seconds after it is asked for and is
  billed from that moment (Fargate bills from image pull); free capacity takes tasks FIFO,
  first worker first; the wait of a task is its start minus its arrival;
- **policy**: :func:`policy.decide` with per-worker idle clocks and the idle period from the
  start-up time (``startup_seconds`` of the queue is set to ``startup_delay``). Every worker
  holds scale-in protection; the workers the decision names are *drained*: they keep taking
  tasks until the cancel reaches them (the race window: the next tick's dispatch can still
  hand them a task, prefetch included), then a worker that got a task is kept (its consumer
  re-added; counted as ``raced``) and an idle one is released and stopped. ECS stops only
  released workers, so nothing is killed;
- **keda**: ``ceil((queued + running) / concurrency)`` clamped, applied at each evaluation with
  no idle period and no protection; on scale-in ECS picks workers by zone balance, not by load
  (a seeded random choice); a busy worker gets the Fargate stop timeout (``stop_timeout``, at
  most 120 s) to finish: tasks with more left are killed and retried from the start;
- **policy+wake**: the policy, plus the scheduler-side wake-up (:mod:`.wakeup`): a task
  published to a queue with no worker triggers an evaluation at once;
- **policy+prewarm**: policy+wake, plus pre-warm: scheduled runs due within the lead time
  (the queue's ``prewarm_seconds``, else start-up + evaluation interval) count as demand;
- **always-on**: ``max`` workers all day;
- **lower bound** (clairvoyant): ``ceil(active tasks / concurrency)`` workers at every instant,
  every task starting on arrival, no start-up: no online scaler can cost less.

Not modelled: Fargate start-up jitter, broker outages, the database lagging the broker.
"""

from __future__ import annotations

import bisect
import csv
import math
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from airflow_control_plane.errors import InvalidInputError
from airflow_control_plane.scaling.config import QueueScaling
from airflow_control_plane.scaling.policy import (
    Action,
    QueueDemand,
    ScaleMemory,
    WorkerCount,
    WorkerView,
    decide,
    keda_desired,
)

DAY = 86400.0
_EPOCH = datetime(2026, 1, 5, tzinfo=UTC)  # the policy wants datetimes; any fixed day works


class Strategy(StrEnum):
    POLICY = "policy"
    POLICY_WAKE = "policy+wake"
    POLICY_PREWARM = "policy+prewarm"
    KEDA = "keda"
    ALWAYS_ON = "always-on"


_WAKING = frozenset({Strategy.POLICY_WAKE, Strategy.POLICY_PREWARM})
POLICIES = (Strategy.POLICY, Strategy.POLICY_WAKE, Strategy.POLICY_PREWARM)


@dataclass(frozen=True)
class TraceTask:
    arrival: float
    duration: float
    queue: str
    scheduled: float | None = None  # due time of its scheduled DAG run, if any


@dataclass(frozen=True)
class SimulationSettings:
    startup_delay: float = 45.0
    evaluate_every: float = 60.0
    tick: float = 5.0
    stop_timeout: float = 120.0
    seed: int = 7
    horizon: float | None = None  # default: end of the last day the trace touches
    prefetch_multiplier: int = 1  # Airflow's default worker_prefetch_multiplier


# What a scaler must do against plain KEDA on every trace (see format_report).
MAX_COST_VS_KEDA = 1.15
MAX_EXTRA_P95_WAIT_S = 15.0


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
    hours: float = 24.0
    drained: int = 0
    raced: int = 0

    @property
    def changes_per_hour(self) -> float:
        return self.scale_changes / self.hours if self.hours else 0.0


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
            raw = (row.get("scheduled") or "").strip()
            scheduled = _parse_time(raw, line) if raw else None
            if scheduled is not None and scheduled > arrival:
                raise InvalidInputError(
                    f"trace line {line}: scheduled {raw!r} is after the task's arrival {row['arrival']!r}"
                )
            tasks.append(TraceTask(arrival, duration, queue, scheduled))
    if not tasks:
        raise InvalidInputError(f"trace {path} holds no tasks")
    return sorted(tasks, key=lambda t: t.arrival)


@dataclass
class _Worker:
    name: str
    ready_at: float
    running: list[tuple[float, float]] = field(default_factory=list)  # (end time, duration)
    reserved: deque[tuple[float, float]] = field(default_factory=deque)  # (arrival, duration)
    cancelling: bool = False  # chosen for a drain: the cancel has not reached it yet
    stopping: bool = False  # KEDA: warm shutdown in progress, takes nothing new

    @property
    def busy(self) -> int:
        return len(self.running) + len(self.reserved)


@dataclass
class _QueueRun:
    scaling: QueueScaling
    strategy: Strategy
    settings: SimulationSettings
    rng: random.Random
    workers: list[_Worker] = field(default_factory=list)
    pending: deque[tuple[float, float]] = field(default_factory=deque)  # (arrival, duration)
    scheduled: list[float] = field(default_factory=list)  # due times of scheduled runs
    waits: list[float] = field(default_factory=list)
    killed: int = 0
    completed: int = 0
    changes: int = 0
    drained: int = 0
    raced: int = 0
    worker_seconds: float = 0.0
    started: int = 0
    memory: ScaleMemory = field(default_factory=ScaleMemory)

    def _new_worker(self, ready_at: float) -> _Worker:
        self.started += 1
        return _Worker(f"{self.scaling.queue}-{self.started}", ready_at)

    def _start_tasks(self, worker: _Worker, now: float) -> None:
        while worker.reserved and len(worker.running) < self.scaling.concurrency:
            arrival, duration = worker.reserved.popleft()
            self.waits.append(now - arrival)
            worker.running.append((now + duration, duration))

    def finish_and_dispatch(self, now: float) -> None:
        capacity = self.scaling.concurrency * self.settings.prefetch_multiplier
        for worker in self.workers:
            before = len(worker.running)
            worker.running = [slot for slot in worker.running if slot[0] > now]
            self.completed += before - len(worker.running)
            self._start_tasks(worker, now)
        self.workers = [w for w in self.workers if not (w.stopping and not w.running)]
        for worker in self.workers:
            if worker.ready_at > now or worker.stopping:
                continue
            while self.pending and self.pending[0][0] <= now and worker.busy < capacity:
                worker.reserved.append(self.pending.popleft())
            self._start_tasks(worker, now)

    def settle_drains(self) -> None:
        """The drain's confirmation: a chosen worker that got a task is kept, an idle one stops."""
        stopped = False
        for worker in [w for w in self.workers if w.cancelling]:
            worker.cancelling = False
            if worker.busy:
                self.raced += 1  # its consumer is added back; protection was never released
            else:
                self.workers.remove(worker)
                self.drained += 1
                stopped = True
        if stopped:
            self.changes += 1

    def draining(self) -> bool:
        return any(w.cancelling for w in self.workers)

    def counts(self, now: float) -> tuple[int, int, int]:
        waiting = sum(1 for arrival, _ in self.pending if arrival <= now)
        reserved = sum(len(w.reserved) for w in self.workers)
        running = sum(len(w.running) for w in self.workers)
        return waiting, reserved, running

    def wants_wake(self, now: float) -> bool:
        """A task waits on a queue with no worker, so the scheduler's publish hook fires now."""
        if self.strategy not in _WAKING or self.live_workers():
            return False
        return bool(self.pending) and self.pending[0][0] <= now

    def live_workers(self) -> list[_Worker]:
        return [w for w in self.workers if not w.stopping]

    def prewarm(self, now: float) -> int:
        if self.strategy is not Strategy.POLICY_PREWARM:
            return 0
        lead = self.scaling.prewarm_seconds or (self.settings.startup_delay + self.settings.evaluate_every)
        low = bisect.bisect_left(self.scheduled, now)
        high = bisect.bisect_right(self.scheduled, now + lead)
        return high - low

    def evaluate(self, now: float) -> None:
        if self.draining():
            return  # a drain runs inside one evaluation: nothing else is decided meanwhile
        waiting, reserved, running = self.counts(now)
        current = len(self.live_workers())
        if self.strategy is Strategy.KEDA:
            target = keda_desired(waiting + reserved + running, self.scaling)
            if target < current:
                self.scale_in_blind(now, current - target)
        else:
            target = self._decide(now, waiting, reserved, running, current)
        if target > current:
            self.workers.extend(
                self._new_worker(now + self.settings.startup_delay) for _ in range(target - current)
            )
        if target > current or (self.strategy is Strategy.KEDA and target < current):
            self.changes += 1  # a drain counts as a change when its workers stop (settle_drains)

    def _decide(self, now: float, waiting: int, reserved: int, running: int, current: int) -> int:
        demand = QueueDemand(
            queued=waiting + reserved, running=running, broker_waiting=waiting, prewarm=self.prewarm(now)
        )
        views = tuple(WorkerView(w.name, w.busy) for w in self.workers if w.ready_at <= now)
        workers = WorkerCount(desired=current, running=len(views), workers=views)
        decision = decide(
            self.scaling,
            demand,
            workers,
            self.memory,
            _EPOCH + timedelta(seconds=now),
            interval_s=self.settings.evaluate_every,
        )
        self.memory = decision.memory
        if decision.action is Action.SCALE_DOWN:
            chosen = set(decision.drain)
            for worker in self.workers:
                if worker.name in chosen:
                    worker.cancelling = True
            return current - len(chosen)
        return decision.target if decision.action is Action.SCALE_UP else current

    def scale_in_blind(self, now: float, count: int) -> None:
        """KEDA: ECS stops workers by zone balance, not load; busy ones get the stop timeout."""
        victims = self.rng.sample(self.live_workers(), count)
        for worker in victims:
            survivors = []
            for end, duration in worker.running:
                if end - now <= self.settings.stop_timeout:
                    survivors.append((end, duration))  # warm shutdown finishes it
                else:
                    self.killed += 1
                    self.pending.append((now, duration))  # Airflow retries it from the start
            for arrival, duration in worker.reserved:  # unacked: the broker redelivers it
                self.pending.append((arrival, duration))
            worker.reserved.clear()
            worker.running = survivors
            worker.stopping = True
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
    for configured in queues:
        # The simulated start-up is the measured one the idle period defaults from.
        scaling = replace(configured, startup_seconds=round(settings.startup_delay))
        run = _QueueRun(scaling, strategy, settings, rng)
        mine = [t for t in tasks if t.queue == scaling.queue]
        run.pending.extend((t.arrival, t.duration) for t in mine)
        run.scheduled = sorted({t.scheduled for t in mine if t.scheduled is not None})
        count = scaling.max_workers if strategy is Strategy.ALWAYS_ON else scaling.min_workers
        run.workers = [run._new_worker(0.0) for _ in range(count)]
        runs.append(run)
    steps_per_eval = max(1, round(settings.evaluate_every / settings.tick))
    step = 0
    now = 0.0
    while now < horizon or any(r.pending or any(w.busy for w in r.workers) for r in runs):
        for run in runs:
            run.finish_and_dispatch(now)
            run.settle_drains()
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
        hours=now / 3600,
        drained=sum(r.drained for r in runs),
        raced=sum(r.raced for r in runs),
    )


def lower_bound_hours(tasks: Sequence[TraceTask], queues: Sequence[QueueScaling]) -> float:
    """Clairvoyant bound: ceil(active tasks / concurrency) workers at every instant, each task
    running from its arrival (no wait, no start-up), summed over queues (max not applied)."""
    seconds = 0.0
    for scaling in queues:
        events = sorted(
            [(t.arrival, 1) for t in tasks if t.queue == scaling.queue]
            + [(t.arrival + t.duration, -1) for t in tasks if t.queue == scaling.queue]
        )
        active = 0
        last = 0.0
        for at, change in events:
            seconds += math.ceil(active / scaling.concurrency) * (at - last)
            active += change
            last = at
    return seconds / 3600


@dataclass(frozen=True)
class Comparison:
    results: tuple[StrategyResult, ...]
    lower_bound_hours: float

    def result(self, strategy: Strategy) -> StrategyResult:
        return next(r for r in self.results if r.strategy is strategy)

    def verdict(self, strategy: Strategy) -> tuple[bool, str]:
        """Cost at most 1.15x KEDA's, nothing killed, p95 wait at most KEDA's + 15 s."""
        keda = self.result(Strategy.KEDA)
        mine = self.result(strategy)
        ratio = mine.worker_hours / keda.worker_hours if keda.worker_hours else 1.0
        extra = mine.p95_wait - keda.p95_wait
        ok = ratio <= MAX_COST_VS_KEDA and mine.tasks_killed == 0 and extra <= MAX_EXTRA_P95_WAIT_S
        text = (
            f"{strategy.value}: {ratio:.2f}x KEDA worker-hours (limit {MAX_COST_VS_KEDA}), "
            f"p95 wait {extra:+.0f}s vs KEDA (limit +{MAX_EXTRA_P95_WAIT_S:.0f}s), "
            f"{mine.tasks_killed} killed: {'ok' if ok else 'NOT MET'}"
        )
        return ok, text

    def to_dict(self) -> dict[str, Any]:
        """The comparison as JSON-ready data (``afctl simulate --json``): one row per strategy,
        the clairvoyant bound, and each policy's verdict against plain KEDA."""
        return {
            "lower_bound_worker_hours": self.lower_bound_hours,
            "results": [
                {
                    "strategy": r.strategy.value,
                    "worker_hours": r.worker_hours,
                    "p50_wait_s": r.p50_wait,
                    "p95_wait_s": r.p95_wait,
                    "max_wait_s": r.max_wait,
                    "tasks_killed": r.tasks_killed,
                    "tasks_completed": r.tasks_completed,
                    "scale_changes": r.scale_changes,
                    "changes_per_hour": r.changes_per_hour,
                    "drained": r.drained,
                    "raced": r.raced,
                }
                for r in self.results
            ],
            "verdicts": [
                {"strategy": s.value, "ok": ok, "text": text}
                for s in POLICIES
                for ok, text in [self.verdict(s)]
            ],
        }


def compare(
    tasks: Sequence[TraceTask], queues: Sequence[QueueScaling], settings: SimulationSettings
) -> Comparison:
    """Every strategy on the same trace, in the same run, and the clairvoyant bound."""
    results = tuple(simulate(tasks, queues, strategy, settings) for strategy in Strategy)
    return Comparison(results, lower_bound_hours(tasks, queues))


def format_report(comparison: Comparison, settings: SimulationSettings) -> str:
    always_on = comparison.result(Strategy.ALWAYS_ON)
    bound = comparison.lower_bound_hours
    lines = [
        f"start-up delay {settings.startup_delay:.0f}s (idle period by default), scaler every "
        f"{settings.evaluate_every:.0f}s, tick {settings.tick:.0f}s, stop timeout "
        f"{settings.stop_timeout:.0f}s, prefetch x{settings.prefetch_multiplier}",
        f"{'strategy':<15} {'worker-h':>9} {'vs bound':>9} {'vs always-on':>12} {'p50 wait':>9} "
        f"{'p95 wait':>9} {'max wait':>9} {'killed':>7} {'done':>6} {'changes/h':>9} "
        f"{'drained':>8} {'raced':>6}",
    ]
    for r in comparison.results:
        relative = f"{100 * r.worker_hours / always_on.worker_hours:.1f}%" if always_on.worker_hours else "-"
        versus = f"{r.worker_hours / bound:.2f}x" if bound else "-"
        lines.append(
            f"{r.strategy.value:<15} {r.worker_hours:>9.2f} {versus:>9} {relative:>12} "
            f"{r.p50_wait:>8.0f}s {r.p95_wait:>8.0f}s {r.max_wait:>8.0f}s {r.tasks_killed:>7} "
            f"{r.tasks_completed:>6} {r.changes_per_hour:>9.1f} {r.drained:>8} {r.raced:>6}"
        )
    lines.append(
        f"{'lower bound':<15} {bound:>9.2f} {'1.00x':>9}   (clairvoyant: ceil(active tasks / concurrency) "
        "at every instant)"
    )
    lines.extend(comparison.verdict(strategy)[1] for strategy in POLICIES)
    return "\n".join(lines)


WEEKDAY_TRACE = Path(__file__).parent / "traces" / "weekday.csv"
TRACES_DIR = Path(__file__).parent / "traces"
# The queue map the shipped traces were written for (the project's defaults: scale to zero,
# idle period from the start-up time).
WEEKDAY_QUEUES_JSON = """[
  {"queue": "default", "service": "worker-default", "concurrency": 16, "min": 0, "max": 4},
  {"queue": "etl", "service": "worker-etl", "concurrency": 8, "min": 0, "max": 10},
  {"queue": "heavy", "service": "worker-heavy", "concurrency": 2, "min": 0, "max": 4}
]"""
