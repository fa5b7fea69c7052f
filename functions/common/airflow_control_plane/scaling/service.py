"""Read -> decide -> act, once per evaluation, for every configured queue.

Fail-safe: every read is guarded. A failed read becomes ``None`` in the policy's inputs (so
the policy never scales down on it, and still scales up on what was read) plus an entry in
``errors`` (the handler turns that into the ``ScalingErrors`` metric). A failed ECS update is
recorded the same way; other queues are still evaluated. Dry run: decide, change nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from airflow_control_plane.scaling.broker import BrokerDepth
from airflow_control_plane.scaling.config import QueueScaling
from airflow_control_plane.scaling.demand import DemandReader, DueDagRun, TaskCounts, prewarm_demand
from airflow_control_plane.scaling.ecs import WorkerServices
from airflow_control_plane.scaling.events import ChangePublisher
from airflow_control_plane.scaling.hibernation import HibernationFlag
from airflow_control_plane.scaling.memory import MemoryStore
from airflow_control_plane.scaling.policy import (
    QueueDemand,
    ScaleMemory,
    ScalingDecision,
    WorkerCount,
    decide,
)

T = TypeVar("T")


@dataclass(frozen=True)
class ScalingPorts:
    demand: DemandReader
    broker: BrokerDepth
    services: WorkerServices
    memory: MemoryStore
    hibernation: HibernationFlag
    publisher: ChangePublisher


@dataclass(frozen=True)
class QueueOutcome:
    decision: ScalingDecision
    applied: bool
    running: int | None


@dataclass(frozen=True)
class ScalingRun:
    outcomes: tuple[QueueOutcome, ...]
    errors: tuple[str, ...]
    dry_run: bool
    hibernated: bool = False
    warnings: tuple[str, ...] = field(default=())


class _Errors:
    def __init__(self) -> None:
        self.items: list[str] = []

    def guard(self, what: str, read: Callable[[], T]) -> T | None:
        """Run one read or action; on any failure record it and return None."""
        try:
            return read()
        except Exception as exc:  # the fail-safe boundary: nothing escapes, everything is recorded
            self.items.append(f"{what}: {type(exc).__name__}: {exc}")
            return None


def _queue_demand(
    scaling: QueueScaling,
    counts: Mapping[str, TaskCounts] | None,
    due: Sequence[DueDagRun],
    broker_waiting: int | None,
    now: datetime,
) -> QueueDemand:
    ti = counts.get(scaling.queue, TaskCounts()) if counts is not None else None
    return QueueDemand(
        queued=ti.queued if ti else None,
        running=ti.running if ti else None,
        broker_waiting=broker_waiting,
        prewarm=prewarm_demand(due, scaling, now),
    )


def evaluate(
    queues: Sequence[QueueScaling], ports: ScalingPorts, now: datetime, *, dry_run: bool = False
) -> ScalingRun:
    """Evaluate every queue once. Never raises for an outside failure; see ``errors``."""
    errors = _Errors()
    counts = errors.guard("metadata database (task counts)", ports.demand.task_counts)
    horizon = timedelta(seconds=max((q.prewarm_seconds for q in queues), default=0))
    due: list[DueDagRun] = []
    if horizon > timedelta(0):
        read_due = errors.guard(
            "metadata database (due DAG runs)", lambda: ports.demand.due_dag_runs(now, horizon)
        )
        due = read_due or []
    # Unreadable hibernation flag: treated as "not hibernated" (starting a worker destroys
    # nothing; scale-down still needs every other signal), and reported as an error.
    hibernated = bool(errors.guard("hibernation flag", ports.hibernation.is_hibernated))
    outcomes = [_evaluate_queue(q, ports, counts, due, hibernated, now, dry_run, errors) for q in queues]
    return ScalingRun(tuple(outcomes), tuple(errors.items), dry_run, hibernated)


def _read_workers(scaling: QueueScaling, ports: ScalingPorts, errors: _Errors) -> WorkerCount | None:
    service = scaling.service
    described = errors.guard(f"worker service {service} (describe)", lambda: ports.services.describe(service))
    if described is None:
        return None
    protected = errors.guard(
        f"worker service {service} (scale-in protection)", lambda: ports.services.protected_workers(service)
    )
    return WorkerCount(described.desired, described.running, protected)


def _apply(decision: ScalingDecision, ports: ScalingPorts, memory: ScaleMemory, errors: _Errors) -> bool:
    """Act on one decision: set the count, store the clock, announce the change."""
    service = decision.service
    applied = False
    if decision.changes_count:

        def update() -> bool:
            ports.services.set_desired(service, decision.target)
            return True

        applied = errors.guard(f"worker service {service} (set desired {decision.target})", update) is True
    if memory != decision.memory:
        errors.guard(f"idle clock of {service} (save)", lambda: ports.memory.save(service, decision.memory))
    if applied:
        errors.guard(f"change event for {service}", lambda: ports.publisher.publish(decision))
    return applied


def _evaluate_queue(
    scaling: QueueScaling,
    ports: ScalingPorts,
    counts: Mapping[str, TaskCounts] | None,
    due: Sequence[DueDagRun],
    hibernated: bool,
    now: datetime,
    dry_run: bool,
    errors: _Errors,
) -> QueueOutcome:
    service = scaling.service
    waiting = errors.guard(f"broker (queue {scaling.queue})", lambda: ports.broker.waiting(scaling.queue))
    workers = _read_workers(scaling, ports, errors)
    memory = errors.guard(f"idle clock of {service} (load)", lambda: ports.memory.load(service))
    memory = memory or ScaleMemory()
    demand = _queue_demand(scaling, counts, due, waiting, now)
    decision = decide(scaling, demand, workers, memory, now, hibernated=hibernated)
    applied = False if dry_run else _apply(decision, ports, memory, errors)
    return QueueOutcome(decision, applied, workers.running if workers else None)
