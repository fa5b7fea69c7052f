"""The scaling decision: a pure function of demand, worker counts, the idle clock and the time.

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
5. Down carefully: a lower count needs a complete signal (database, broker and the workers'
   scale-in protection all read), an empty queue (nothing queued, nothing waiting in the
   broker) and that state held for the whole idle period. The target is then the largest
   count needed during the idle period, never below what running tasks need, never below the
   number of workers holding scale-in protection (busy workers), never below min.
   Zero is reached only when nothing is queued or running.

The idle clock (:class:`ScaleMemory`) is stored, not derived: "no backlog since T" cannot be
read cheaply from ``task_instance`` (no index on ``end_date``/``queued_dttm``), and a stored
clock also covers broker-only demand. The policy returns the next memory; the service stores
it (on AWS as tags on the worker service, locally in a JSON file).
"""

from __future__ import annotations

import math
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
class WorkerCount:
    """The worker service as ECS (or the local runtime) reports it."""

    desired: int
    running: int
    protected: int | None  # workers holding scale-in protection (busy); None = unknown


@dataclass(frozen=True)
class ScaleMemory:
    """The stored idle clock: since when the queue has had no backlog while over-provisioned,
    and the largest worker count needed since then."""

    idle_since: datetime | None = None
    peak_needed: int = 0


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
    )


def decide(
    scaling: QueueScaling,
    demand: QueueDemand,
    workers: WorkerCount | None,
    memory: ScaleMemory,
    now: datetime,
    *,
    hibernated: bool = False,
) -> ScalingDecision:
    """Decide the worker count of one queue's service. Pure: no I/O, time is an input."""
    hold = Action.HOLD
    if workers is None:
        reason = "worker service could not be read: holding"
        return _decision(scaling, demand, hold, 0, 0, reason, memory=memory)
    current = workers.desired
    if hibernated:
        reason = "environment is hibernated: the autoscaler does not start workers"
        return _decision(scaling, demand, hold, current, current, reason)
    if not demand.database_read and not demand.broker_read:
        reason = "neither the metadata database nor the broker could be read: holding"
        return _decision(scaling, demand, hold, current, current, reason, memory=memory)

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
        return _decision(scaling, demand, Action.SCALE_UP, current, needed, reason, needed=needed)
    if needed == current:
        reason = f"{summary}; already at {current}"
        return _decision(scaling, demand, hold, current, current, reason, needed=needed)
    return _scale_down(scaling, demand, workers, memory, now, needed, summary)


def _scale_down(
    scaling: QueueScaling,
    demand: QueueDemand,
    workers: WorkerCount,
    memory: ScaleMemory,
    now: datetime,
    needed: int,
    summary: str,
) -> ScalingDecision:
    current = workers.desired
    hold = Action.HOLD
    unread = [
        name
        for name, ok in (
            ("metadata database", demand.database_read),
            ("broker", demand.broker_read),
            ("scale-in protection", workers.protected is not None),
        )
        if not ok
    ]
    if unread:
        reason = f"{summary}; fail-safe: {', '.join(unread)} unreadable, never scale down"
        return _decision(scaling, demand, hold, current, current, reason, needed=needed, memory=memory)
    if demand.backlog > 0:
        reason = f"{summary}; {demand.backlog} task(s) waiting: no scale-down while anything is queued"
        return _decision(scaling, demand, hold, current, current, reason, needed=needed)
    idle_since = memory.idle_since or now
    peak = max(memory.peak_needed, needed) if memory.idle_since else needed
    idle_for = (now - idle_since).total_seconds()
    clock = ScaleMemory(idle_since, peak)
    if idle_for < scaling.idle_seconds:
        reason = (
            f"{summary}; queue idle for {idle_for:.0f}s of the {scaling.idle_seconds}s idle period: "
            f"keeping {current}"
        )
        return _decision(scaling, demand, hold, current, current, reason, needed=needed, memory=clock)
    assert demand.running is not None
    assert workers.protected is not None
    floor = max(scaling.min_workers, workers_for(demand.running, scaling.concurrency), workers.protected)
    target = min(max(peak, floor), current)
    if target >= current:
        reason = (
            f"{summary}; floor {floor} (min {scaling.min_workers}, running tasks need "
            f"{workers_for(demand.running, scaling.concurrency)}, {workers.protected} busy worker(s) "
            f"protected): keeping {current} until they finish"
        )
        return _decision(scaling, demand, hold, current, current, reason, needed=needed, memory=clock)
    reason = (
        f"{summary}; no backlog for {idle_for:.0f}s (idle period {scaling.idle_seconds}s), "
        f"largest need in that period {peak}, {workers.protected} busy worker(s) protected: "
        f"scaling down from {current} to {target}"
    )
    return _decision(scaling, demand, Action.SCALE_DOWN, current, target, reason, needed=needed)
