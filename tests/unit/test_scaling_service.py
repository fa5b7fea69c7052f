"""Read -> decide -> act with in-memory fakes: dry run, fail-safe, hibernation, events, the clock."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from airflow_control_plane.errors import TransientError
from airflow_control_plane.scaling.config import QueueScaling
from airflow_control_plane.scaling.demand import DueDagRun, TaskCounts
from airflow_control_plane.scaling.ecs import InMemoryWorkerServices, ServiceCounts
from airflow_control_plane.scaling.events import RecordingPublisher
from airflow_control_plane.scaling.hibernation import FixedFlag
from airflow_control_plane.scaling.memory import InMemoryStore
from airflow_control_plane.scaling.policy import Action, ScaleMemory
from airflow_control_plane.scaling.service import ScalingPorts, evaluate

pytestmark = pytest.mark.unit

AT = datetime(2026, 1, 5, 6, 1, tzinfo=UTC)
QUEUES = (
    QueueScaling("default", "worker-default", 16, 0, 4, idle_seconds=600, prewarm_seconds=300),
    QueueScaling("etl", "worker-etl", 8, 0, 10, idle_seconds=600),
)


class FakeDemand:
    def __init__(self, counts: Mapping[str, TaskCounts], due: list[DueDagRun] | None = None) -> None:
        self.counts = dict(counts)
        self.due = due or []
        self.down = False

    def task_counts(self) -> Mapping[str, TaskCounts]:
        if self.down:
            raise TransientError("metadata database unreachable: connection refused")
        return self.counts

    def due_dag_runs(self, now: datetime, horizon: timedelta) -> list[DueDagRun]:
        if self.down:
            raise TransientError("metadata database unreachable: connection refused")
        return [d for d in self.due if d.due_at <= now + horizon]


class FakeBroker:
    def __init__(self, depths: Mapping[str, int]) -> None:
        self.depths = dict(depths)
        self.down = False

    def waiting(self, queue: str) -> int:
        if self.down:
            raise TransientError("broker unreadable: Connection refused")
        return self.depths.get(queue, 0)


class ThrottledServices(InMemoryWorkerServices):
    """ECS answering ThrottlingException to some calls."""

    def __init__(self, *args: object, throttle: set[str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.throttle = throttle

    def describe(self, service: str) -> ServiceCounts:
        if "describe" in self.throttle:
            raise TransientError("ECS DescribeServices failed: ThrottlingException: Rate exceeded")
        return super().describe(service)

    def protected_workers(self, service: str) -> int:
        if "protection" in self.throttle:
            raise TransientError("ECS GetTaskProtection failed: ThrottlingException: Rate exceeded")
        return super().protected_workers(service)

    def set_desired(self, service: str, count: int) -> None:
        if "update" in self.throttle:
            raise TransientError("ECS UpdateService failed: ThrottlingException: Rate exceeded")
        super().set_desired(service, count)


def make_ports(
    *,
    counts: Mapping[str, TaskCounts],
    depths: Mapping[str, int],
    desired: Mapping[str, int],
    protected: Mapping[str, int] | None = None,
    throttle: set[str] | None = None,
    hibernated: bool = False,
    due: list[DueDagRun] | None = None,
) -> ScalingPorts:
    services = ThrottledServices(
        {q.service: ServiceCounts(desired.get(q.queue, 0), desired.get(q.queue, 0)) for q in QUEUES},
        {q.service: (protected or {}).get(q.queue, 0) for q in QUEUES},
        throttle=throttle or set(),
    )
    return ScalingPorts(
        demand=FakeDemand(counts, due),
        broker=FakeBroker(depths),
        services=services,
        memory=InMemoryStore(),
        hibernation=FixedFlag(hibernated),
        publisher=RecordingPublisher(),
    )


def idle_for_an_hour(ports: ScalingPorts) -> None:
    assert isinstance(ports.memory, InMemoryStore)
    for q in QUEUES:
        ports.memory.values[q.service] = ScaleMemory(AT - timedelta(hours=1), 0)


def test_scale_up_is_applied_announced_and_clock_reset() -> None:
    # GIVEN 20 etl tasks queued and no etl worker
    ports = make_ports(counts={"etl": TaskCounts(queued=20)}, depths={"etl": 20}, desired={})
    # WHEN the autoscaler evaluates
    run = evaluate(QUEUES, ports, AT)
    # THEN etl goes to ceil(20/8) = 3 at once, the change is announced, default holds at 0
    assert isinstance(ports.services, InMemoryWorkerServices)
    assert ports.services.calls == [("worker-etl", 3)]
    assert isinstance(ports.publisher, RecordingPublisher)
    assert [(d.queue, d.current, d.target) for d in ports.publisher.published] == [("etl", 0, 3)]
    assert run.errors == ()
    assert [o.decision.action for o in run.outcomes] == [Action.HOLD, Action.SCALE_UP]


def test_dry_run_decides_but_changes_nothing() -> None:
    ports = make_ports(counts={"etl": TaskCounts(queued=20)}, depths={"etl": 20}, desired={})
    run = evaluate(QUEUES, ports, AT, dry_run=True)
    assert isinstance(ports.services, InMemoryWorkerServices)
    assert ports.services.calls == []
    assert isinstance(ports.publisher, RecordingPublisher)
    assert ports.publisher.published == []
    assert isinstance(ports.memory, InMemoryStore)
    assert ports.memory.values == {}
    assert run.outcomes[1].decision.target == 3
    assert not run.outcomes[1].applied


def test_scale_to_zero_after_the_idle_period() -> None:
    # GIVEN idle queues for an hour with 2 and 3 workers
    ports = make_ports(counts={}, depths={}, desired={"default": 2, "etl": 3})
    idle_for_an_hour(ports)
    # WHEN the autoscaler evaluates
    run = evaluate(QUEUES, ports, AT)
    # THEN both go to zero
    assert isinstance(ports.services, InMemoryWorkerServices)
    assert sorted(ports.services.calls) == [("worker-default", 0), ("worker-etl", 0)]
    assert run.errors == ()


@pytest.mark.parametrize(
    ("failure", "expected_error"),
    [
        ("database", "metadata database"),
        ("broker", "broker"),
        ("protection", "scale-in protection"),
        ("describe", "describe"),
    ],
)
def test_fail_safe_never_scales_down_and_reports_the_error(failure: str, expected_error: str) -> None:
    # GIVEN idle queues past their idle period, so a scale-down would be due
    ports = make_ports(
        counts={},
        depths={},
        desired={"default": 2, "etl": 3},
        throttle={failure} if failure in {"protection", "describe"} else set(),
    )
    idle_for_an_hour(ports)
    if failure == "database":
        assert isinstance(ports.demand, FakeDemand)
        ports.demand.down = True
    if failure == "broker":
        assert isinstance(ports.broker, FakeBroker)
        ports.broker.down = True
    # WHEN one input cannot be read
    run = evaluate(QUEUES, ports, AT)
    # THEN nothing is scaled down and the error is reported (it becomes the error metric)
    assert isinstance(ports.services, InMemoryWorkerServices)
    assert ports.services.calls == []
    assert all(o.decision.action is Action.HOLD for o in run.outcomes)
    assert any(expected_error in e for e in run.errors), run.errors


def test_database_down_still_scales_up_on_the_broker_signal() -> None:
    # GIVEN the database down but 30 messages waiting on etl
    ports = make_ports(counts={}, depths={"etl": 30}, desired={"etl": 1})
    assert isinstance(ports.demand, FakeDemand)
    ports.demand.down = True
    # WHEN the autoscaler evaluates
    run = evaluate(QUEUES, ports, AT)
    # THEN etl scales up on what was read, and the database error is reported
    assert isinstance(ports.services, InMemoryWorkerServices)
    assert ports.services.calls == [("worker-etl", 4)]
    assert any("metadata database" in e for e in run.errors)


def test_ecs_update_throttled_is_reported_and_not_announced() -> None:
    ports = make_ports(
        counts={"etl": TaskCounts(queued=20)}, depths={"etl": 20}, desired={}, throttle={"update"}
    )
    run = evaluate(QUEUES, ports, AT)
    assert isinstance(ports.publisher, RecordingPublisher)
    assert ports.publisher.published == []
    assert not run.outcomes[1].applied
    assert any("ThrottlingException" in e for e in run.errors)


def test_busy_workers_are_kept_on_scale_down() -> None:
    # GIVEN 5 etl workers, 2 of them busy and protected, nothing queued, idle for an hour
    ports = make_ports(
        counts={"etl": TaskCounts(running=2)}, depths={}, desired={"etl": 5}, protected={"etl": 2}
    )
    idle_for_an_hour(ports)
    run = evaluate(QUEUES, ports, AT)
    # THEN it scales down to the 2 busy workers, not to ceil(2/8) = 1
    assert run.outcomes[1].decision.target == 2


def test_hibernated_environment_starts_nothing() -> None:
    ports = make_ports(counts={"etl": TaskCounts(queued=20)}, depths={"etl": 20}, desired={}, hibernated=True)
    run = evaluate(QUEUES, ports, AT)
    assert run.hibernated
    assert isinstance(ports.services, InMemoryWorkerServices)
    assert ports.services.calls == []


def test_prewarm_starts_a_worker_before_a_due_dag_run() -> None:
    # GIVEN a DAG whose latest run used the default queue, due in 4 minutes (lead time 5 minutes)
    due = [DueDagRun("hourly_report", AT + timedelta(minutes=4), frozenset({"default"}))]
    ports = make_ports(counts={}, depths={}, desired={}, due=due)
    # WHEN the autoscaler evaluates
    run = evaluate(QUEUES, ports, AT)
    # THEN one default worker starts ahead of the run; etl (no lead time) stays at zero
    assert [(o.decision.queue, o.decision.target) for o in run.outcomes] == [("default", 1), ("etl", 0)]


def test_idle_clock_is_stored_between_runs() -> None:
    ports = make_ports(counts={}, depths={}, desired={"etl": 3})
    evaluate(QUEUES, ports, AT)
    assert isinstance(ports.memory, InMemoryStore)
    assert ports.memory.values["worker-etl"].idle_since == AT
    run = evaluate(QUEUES, ports, AT + timedelta(minutes=11))
    assert run.outcomes[1].decision.action is Action.SCALE_DOWN
