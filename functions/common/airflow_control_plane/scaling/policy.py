"""The scaling decision: a pure function of demand, the workers, their idle clocks and the time.

Rules, in order (each decision carries the rule that produced it as its ``reason``):

1. Worker service unreadable, or the environment hibernated: hold (never start workers
   into a hibernated environment, never act blind).
2. No demand signal readable at all (database and broker both down): hold.
3. Desired workers = ceil(demand / concurrency), clamped to [min, max] -- the formula of the
   Airflow Helm chart's KEDA scaler -- where demand = running + max(queued, broker waiting).
   A queued task instance normally has its message in the broker, so the two are not added;
   the broker depth covers messages the database does not show (and the database being down).
   Pre-warm raises the count to cover DAG runs due within the lead time.
4. Up fast: a higher count is applied at once, even from a partial signal (fail-safe up).
5. Down per worker, at the break-even: a lower count needs a complete signal (database,
   broker and every worker's own busy count all read) and an empty queue. Each worker has its
   own idle clock (since when it has run and reserved nothing); a worker is worth keeping
   only while restarting one would cost more, so a worker idle for the idle period -- by
   default the measured worker start-up time, the ski-rental break-even -- is chosen to be
   *drained*, longest idle first, as many as the count exceeds what demand, running tasks and
   min need. The decision names those workers; the service drains them (stop consuming,
   confirm idle, release scale-in protection) and lowers the count only by the drained ones.
   Zero is reached only when nothing is queued or running.

A worker that takes a task resets its clock, so a burst never leaves a worker to be stopped
while it has work, and a flapping scale-in/scale-up pair costs at most one start-up of idle
time per worker. The clocks (:class:`ScaleMemory`) are stored, not derived; the policy returns
the next memory and the service stores it (on AWS as tags on the worker service, locally in a
JSON file).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from airflow_control_plane.scaling.config import QueueScaling


class Action(StrEnum):
    SCALE_UP = "scale_up"
    SCALE_DOWN = "scale_down"
    HOLD = "hold"


@dataclass(frozen=True)
class QueueDemand:
    """What one queue needs. ``None`` means the source could not be read."""

    queued: int | None
    running: int | None
    broker_waiting: int | None
    prewarm: int = 0

    @property
    def database_read(self) -> bool:
        return self.queued is not None and self.running is not None

    @property
    def broker_read(self) -> bool:
        return self.broker_waiting is not None

    @property
    def total(self) -> int:
        """running + max(queued, broker waiting), over what could be read."""
        return (self.running or 0) + max(self.queued or 0, self.broker_waiting or 0)

    @property
    def backlog(self) -> int:
        return max(self.queued or 0, self.broker_waiting or 0)

    def describe(self) -> str:
        def show(value: int | None) -> str:
            return "unreadable" if value is None else str(value)

        return (
            f"running {show(self.running)}, queued {show(self.queued)}, "
            f"broker waiting {show(self.broker_waiting)}, pre-warm {self.prewarm}"
        )


@dataclass(frozen=True)
class WorkerView:
    """One live worker: its Celery hostname and how many tasks it runs or holds reserved."""

    name: str
    busy: int


@dataclass(frozen=True)
class WorkerCount:
    """The worker service as ECS (or the local runtime) reports it, with each ready worker's
    busy count (``workers``; ``None`` = could not be read, which forbids any scale-down)."""

    desired: int
    running: int
    workers: tuple[WorkerView, ...] | None = None
    # Why ``workers`` is None when that is a known limit rather than a failed read (the SQS
    # broker has no Celery remote control): named in the decision's reason.
    unread_why: str = ""


@dataclass(frozen=True)
class ScaleMemory:
    """The stored per-worker idle clocks: worker name -> since when it has been idle."""

    idle_since: Mapping[str, datetime] = field(default_factory=dict)


def next_clocks(memory: ScaleMemory, workers: tuple[WorkerView, ...], now: datetime) -> ScaleMemory:
    """Advance the idle clocks: a busy worker has none, an idle one keeps its start (or starts
    now), a worker that is gone is forgotten. Pure."""
    clocks = {w.name: memory.idle_since.get(w.name, now) for w in workers if w.busy == 0}
    return ScaleMemory(clocks)


@dataclass(frozen=True)
class ScalingDecision:
    queue: str
    service: str
    action: Action
    current: int
    target: int
    reason: str
    demand: int
    needed: int
    memory: ScaleMemory = field(default_factory=ScaleMemory)
    complete_signal: bool = True
    drain: tuple[str, ...] = ()  # SCALE_DOWN: the workers to drain, then stop

    @property
    def changes_count(self) -> bool:
        return self.action is not Action.HOLD and self.target != self.current


def workers_for(tasks: int, concurrency: int) -> int:
    """ceil(tasks / concurrency), the KEDA formula before clamping."""
    return math.ceil(max(tasks, 0) / concurrency)


def keda_desired(demand: int, scaling: QueueScaling) -> int:
    """The plain Helm-chart/KEDA count: ceil(demand / concurrency) clamped to [min, max]."""
    return min(max(workers_for(demand, scaling.concurrency), scaling.min_workers), scaling.max_workers)


def _decision(
    scaling: QueueScaling,
    demand: QueueDemand,
    action: Action,
    current: int,
    target: int,
    reason: str,
    *,
    needed: int = 0,
    memory: ScaleMemory | None = None,
    drain: tuple[str, ...] = (),
) -> ScalingDecision:
    return ScalingDecision(
        queue=scaling.queue,
        service=scaling.service,
        action=action,
        current=current,
        target=target,
        reason=reason,
        demand=demand.total,
        needed=needed,
        memory=memory or ScaleMemory(),
        complete_signal=demand.database_read and demand.broker_read,
        drain=drain,
    )


def decide(
    scaling: QueueScaling,
    demand: QueueDemand,
    workers: WorkerCount | None,
    memory: ScaleMemory,
    now: datetime,
    *,
    hibernated: bool = False,
    interval_s: float = 0.0,
) -> ScalingDecision:
    """Decide the worker count of one queue's service. Pure: no I/O, time is an input.

    ``interval_s``: seconds until the next evaluation. A worker is drained at the last
    evaluation before its idle time would pass the idle period: keeping it until the next
    chance to act would pay more idle time than a restart costs (ski rental on a grid)."""
    hold = Action.HOLD
    if workers is None:
        reason = "worker service could not be read: holding"
        return _decision(scaling, demand, hold, 0, 0, reason, memory=memory)
    current = workers.desired
    clocks = memory if workers.workers is None else next_clocks(memory, workers.workers, now)
    if hibernated:
        reason = "environment is hibernated: the autoscaler does not start workers"
        return _decision(scaling, demand, hold, current, current, reason, memory=clocks)
    if not demand.database_read and not demand.broker_read:
        reason = "neither the metadata database nor the broker could be read: holding"
        return _decision(scaling, demand, hold, current, current, reason, memory=clocks)

    needed = max(
        keda_desired(demand.total, scaling),
        min(workers_for(demand.prewarm, scaling.concurrency), scaling.max_workers),
    )
    summary = (
        f"demand {demand.total} ({demand.describe()}) needs {needed} worker(s) "
        f"at concurrency {scaling.concurrency}"
    )
    if needed > current:
        reason = f"{summary}; scaling up from {current} at once"
        return _decision(
            scaling, demand, Action.SCALE_UP, current, needed, reason, needed=needed, memory=clocks
        )
    if needed == current:
        reason = f"{summary}; already at {current}"
        return _decision(scaling, demand, hold, current, current, reason, needed=needed, memory=clocks)
    return _scale_down(scaling, demand, workers, clocks, now, needed, summary, interval_s)


def _scale_down(
    scaling: QueueScaling,
    demand: QueueDemand,
    workers: WorkerCount,
    clocks: ScaleMemory,
    now: datetime,
    needed: int,
    summary: str,
    interval_s: float,
) -> ScalingDecision:
    current = workers.desired
    hold = Action.HOLD
    busy_counts = "per-worker busy counts" + (f" ({workers.unread_why})" if workers.unread_why else "")
    unread = [
        name
        for name, ok in (
            ("metadata database", demand.database_read),
            ("broker", demand.broker_read),
            (busy_counts, workers.workers is not None),
        )
        if not ok
    ]
    if unread:
        reason = f"{summary}; fail-safe: {', '.join(unread)} unreadable, never scale down"
        return _decision(scaling, demand, hold, current, current, reason, needed=needed, memory=clocks)
    if demand.backlog > 0:
        reason = f"{summary}; {demand.backlog} task(s) waiting: no scale-down while anything is queued"
        return _decision(scaling, demand, hold, current, current, reason, needed=needed, memory=clocks)
    assert demand.running is not None
    assert workers.workers is not None
    floor = max(needed, scaling.min_workers, workers_for(demand.running, scaling.concurrency))
    excess = current - floor
    idle_period = scaling.idle_period
    idle = sorted(
        ((since, name) for name, since in clocks.idle_since.items()), key=lambda item: (item[0], item[1])
    )
    ripe = [name for since, name in idle if (now - since).total_seconds() + interval_s >= idle_period]
    drain = tuple(ripe[: max(0, excess)])
    busy = sum(1 for w in workers.workers if w.busy > 0)
    state = (
        f"{len(workers.workers)} ready worker(s), {busy} busy, {len(idle)} idle "
        f"({len(ripe)} at the {idle_period}s idle period by the next evaluation in {interval_s:.0f}s)"
    )
    if not drain:
        reason = f"{summary}; {state}: keeping {current}"
        return _decision(scaling, demand, hold, current, current, reason, needed=needed, memory=clocks)
    target = current - len(drain)
    reason = f"{summary}; {state}: draining {', '.join(drain)} then scaling down from {current} to {target}"
    return _decision(
        scaling, demand, Action.SCALE_DOWN, current, target, reason, needed=needed, memory=clocks, drain=drain
    )
