"""Read -> decide -> act, once per evaluation, for every configured queue.

Reads: task counts and due DAG runs (database), broker depth, the worker service (ECS or the
local supervisor) and each worker's busy count (Celery ``inspect`` through the broker). Acts:
a higher count is set at once; a lower one only through :func:`.drain.drain` (cancel the
chosen workers' consuming, confirm them idle, release their protection, lower the count).

Fail-safe: every read is guarded. A failed read becomes ``None`` in the policy's inputs (so
the policy never scales down on it, and still scales up on what was read) plus an entry in
``errors`` (the handler turns that into the ``ScalingErrors`` metric). A failed ECS update is
recorded the same way; other queues are still evaluated. Dry run: decide, change nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from airflow_control_plane.scaling.broker import BrokerDepth
from airflow_control_plane.scaling.config import QueueScaling
from airflow_control_plane.scaling.demand import DemandReader, DueDagRun, TaskCounts, prewarm_demand
from airflow_control_plane.scaling.drain import (
    DEFAULT_SETTLE_S,
    DrainResult,
    RemoteControlUnavailable,
    WorkerControl,
    drain,
)
from airflow_control_plane.scaling.ecs import WorkerServices
from airflow_control_plane.scaling.events import ChangePublisher
from airflow_control_plane.scaling.hibernation import HibernationFlag
from airflow_control_plane.scaling.memory import MemoryStore
from airflow_control_plane.scaling.policy import (
    Action,
    QueueDemand,
    ScaleMemory,
    ScalingDecision,
    WorkerCount,
    WorkerView,
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
    control: WorkerControl
    interval_s: float = 60.0  # seconds between evaluations (the policy's next chance to act)
    settle_s: float = DEFAULT_SETTLE_S  # drain: wait after the cancel before the idle check


@dataclass(frozen=True)
class QueueOutcome:
    decision: ScalingDecision
    applied: bool
    running: int | None
    drain: DrainResult | None = None

    @property
    def target(self) -> int:
        """The count asked for: after a drain, only the released workers were counted down."""
        return self.drain.target if self.drain is not None else self.decision.target


@dataclass(frozen=True)
class ScalingRun:
    outcomes: tuple[QueueOutcome, ...]
    errors: tuple[str, ...]
    dry_run: bool
    hibernated: bool = False
    warnings: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """The run as JSON-ready data: the autoscaler Lambda's result and ``afctl scale --json``."""
        return {
            "dryRun": self.dry_run,
            "hibernated": self.hibernated,
            "decisions": [
                {
                    "queue": o.decision.queue,
                    "service": o.decision.service,
                    "action": o.decision.action.value,
                    "from": o.decision.current,
                    "to": o.target,
                    "applied": o.applied,
                    "drained": list(o.drain.released) if o.drain else [],
                    "kept": [name for name, _ in o.drain.kept] if o.drain else [],
                    "reason": o.decision.reason + (f"; {o.drain.reason}" if o.drain else ""),
                }
                for o in self.outcomes
            ],
            "errors": list(self.errors),
        }


class _Errors:
    def __init__(self) -> None:
        self.items: list[str] = []

    def guard(
        self, what: str, read: Callable[[], T], *, passthrough: tuple[type[Exception], ...] = ()
    ) -> T | None:
        """Run one read or action; on any failure record it and return None (``passthrough``:
        the exceptions the caller handles itself)."""
        try:
            return read()
        except passthrough:
            raise
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
    try:
        busy = errors.guard(
            f"workers of queue {scaling.queue} (Celery inspect)",
            lambda: ports.control.busy(scaling.queue),
            passthrough=(RemoteControlUnavailable,),
        )
    except RemoteControlUnavailable as exc:
        # A known limit of the broker, not a failed read: no error (it would count as a
        # ScalingError at every evaluation); the decision's reason names it instead.
        return WorkerCount(described.desired, described.running, None, unread_why=str(exc))
    views = None if busy is None else tuple(WorkerView(n, b) for n, b in sorted(busy.items()))
    return WorkerCount(described.desired, described.running, views)


def _run_drain(
    queue: str,
    service: str,
    chosen: Sequence[str],
    current: int,
    ports: ScalingPorts,
    errors: _Errors,
    what: str,
) -> DrainResult | None:
    """:func:`.drain.drain` of ``chosen`` through the ports, guarded (a failure is recorded in
    ``errors`` and gives None). The count is set never below 0."""

    def run() -> DrainResult:
        return drain(
            queue=queue,
            service=service,
            chosen=chosen,
            current=current,
            control=ports.control,
            protection=ports.services,
            set_desired=lambda count: ports.services.set_desired(service, max(0, count)),
            settle_s=ports.settle_s,
        )

    return errors.guard(f"worker service {service} ({what} {', '.join(chosen)})", run)


def _drain(
    decision: ScalingDecision, ports: ScalingPorts, errors: _Errors
) -> tuple[bool, DrainResult | None]:
    result = _run_drain(
        decision.queue, decision.service, decision.drain, decision.current, ports, errors, "drain"
    )
    return (result is not None and bool(result.released)), result


def _apply(
    decision: ScalingDecision, ports: ScalingPorts, memory: ScaleMemory, errors: _Errors
) -> tuple[bool, DrainResult | None]:
    """Act on one decision: set the count (a lower one only through a drain), store the
    clocks, announce the change."""
    service = decision.service
    applied = False
    drained: DrainResult | None = None
    if decision.action is Action.SCALE_DOWN and decision.drain:
        applied, drained = _drain(decision, ports, errors)
    elif decision.action is Action.SCALE_UP and decision.changes_count:

        def update() -> bool:
            ports.services.set_desired(service, decision.target)
            return True

        applied = errors.guard(f"worker service {service} (set desired {decision.target})", update) is True
    if memory != decision.memory:
        errors.guard(f"idle clock of {service} (save)", lambda: ports.memory.save(service, decision.memory))
    if applied:
        errors.guard(f"change event for {service}", lambda: ports.publisher.publish(decision))
    return applied, drained


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
    decision = decide(
        scaling, demand, workers, memory, now, hibernated=hibernated, interval_s=ports.interval_s
    )
    applied, drained = (False, None) if dry_run else _apply(decision, ports, memory, errors)
    return QueueOutcome(decision, applied, workers.running if workers else None, drained)


@dataclass(frozen=True)
class QueueRelease:
    queue: str
    service: str
    workers: tuple[str, ...]  # the workers that answered, all of them drained
    result: DrainResult | None  # None: nothing answered, or the drain failed (see errors)
    reason: str = ""  # set when nothing could be asked: a broker without remote control


@dataclass(frozen=True)
class ReleaseRun:
    releases: tuple[QueueRelease, ...]
    errors: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "released": [
                {
                    "queue": r.queue,
                    "service": r.service,
                    "workers": list(r.workers),
                    "drained": list(r.result.released) if r.result else [],
                    "kept": [f"{name}: {why}" for name, why in r.result.kept] if r.result else [],
                    "desired": r.result.target if r.result else None,
                    "reason": r.reason,
                }
                for r in self.releases
            ],
            "errors": list(self.errors),
        }


def release_workers(queues: Sequence[QueueScaling], ports: ScalingPorts) -> ReleaseRun:
    """Hibernate's last word to the workers, once the drain check found no task running or
    queued and the scheduler is stopped: drain *every* worker of every queue (cancel its
    consuming, confirm it idle, release its scale-in protection, lower the count by it).

    A worker protects itself while it consumes, so lowering the desired count alone would
    leave it running wherever ECS keeps protected tasks. A worker that is busy or does not
    answer is kept, protected, exactly as in a scale-in drain: hibernate never stops work that
    is still running. Never raises for an outside failure; see ``errors``."""
    errors = _Errors()
    releases = tuple(_release_queue(scaling, ports, errors) for scaling in queues)
    return ReleaseRun(releases, tuple(errors.items))


def _release_queue(scaling: QueueScaling, ports: ScalingPorts, errors: _Errors) -> QueueRelease:
    service, queue = scaling.service, scaling.queue
    described = errors.guard(f"worker service {service} (describe)", lambda: ports.services.describe(service))
    try:
        busy = errors.guard(
            f"workers of queue {queue} (Celery inspect)",
            lambda: ports.control.busy(queue),
            passthrough=(RemoteControlUnavailable,),
        )
    except RemoteControlUnavailable as exc:
        # Workers on such a broker hold no protection (celery_config): StopWorkers stops them.
        return QueueRelease(queue, service, (), None, reason=f"nothing to release: {exc}")
    if described is None or not busy:
        return QueueRelease(queue, service, (), None)
    chosen = tuple(sorted(busy))
    result = _run_drain(queue, service, chosen, described.desired, ports, errors, "release")
    return QueueRelease(queue, service, chosen, result)
