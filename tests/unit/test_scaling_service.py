"""Read -> decide -> act with in-memory fakes: dry run, fail-safe, hibernation, events, the
clocks, and the drain (cancel, confirm idle, release, lower)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from airflow_control_plane.errors import TransientError
from airflow_control_plane.scaling.config import QueueScaling
from airflow_control_plane.scaling.demand import DueDagRun, TaskCounts
from airflow_control_plane.scaling.drain import InMemoryWorkerControl, remote_control_unavailable_reason
from airflow_control_plane.scaling.ecs import InMemoryWorkerServices, ServiceCounts
from airflow_control_plane.scaling.events import RecordingPublisher
from airflow_control_plane.scaling.hibernation import FixedFlag
from airflow_control_plane.scaling.memory import InMemoryStore
from airflow_control_plane.scaling.policy import Action, ScaleMemory
from airflow_control_plane.scaling.service import ScalingPorts, evaluate, release_workers

pytestmark = pytest.mark.unit

AT = datetime(2026, 1, 5, 6, 1, tzinfo=UTC)
QUEUES = (
    QueueScaling("default", "worker-default", 16, 0, 4, idle_seconds=600, prewarm_seconds=300),
    QueueScaling("etl", "worker-etl", 8, 0, 10, idle_seconds=600),
)


def host(queue: str, index: int) -> str:
    return f"worker-{queue}{index}@ip-10-0-1-{index}"


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

    def unprotected(self, service: str) -> set[str]:
        if "protection" in self.throttle:
            raise TransientError("ECS GetTaskProtection failed: ThrottlingException: Rate exceeded")
        return super().unprotected(service)

    def set_desired(self, service: str, count: int) -> None:
        if "update" in self.throttle:
            raise TransientError("ECS UpdateService failed: ThrottlingException: Rate exceeded")
        super().set_desired(service, count)


def make_ports(
    *,
    counts: Mapping[str, TaskCounts],
    depths: Mapping[str, int],
    desired: Mapping[str, int],
    busy: Mapping[str, list[int]] | None = None,
    throttle: set[str] | None = None,
    hibernated: bool = False,
    due: list[DueDagRun] | None = None,
) -> ScalingPorts:
    """``busy``: per queue, the busy count of each ready worker (default: all idle)."""
    services = ThrottledServices(
        {q.service: ServiceCounts(desired.get(q.queue, 0), desired.get(q.queue, 0)) for q in QUEUES},
        throttle=throttle or set(),
    )
    per_queue = {q.queue: list((busy or {}).get(q.queue, [0] * desired.get(q.queue, 0))) for q in QUEUES}
    counts_by_host = {host(q, i): b for q, values in per_queue.items() for i, b in enumerate(values)}
    control = InMemoryWorkerControl(
        counts_by_host, {host(q, i): q for q, values in per_queue.items() for i in range(len(values))}
    )
    control.down = "inspect" in (throttle or set())
    return ScalingPorts(
        demand=FakeDemand(counts, due),
        broker=FakeBroker(depths),
        services=services,
        memory=InMemoryStore(),
        hibernation=FixedFlag(hibernated),
        publisher=RecordingPublisher(),
        control=control,
        settle_s=0.0,
    )


def idle_for_an_hour(ports: ScalingPorts) -> None:
    assert isinstance(ports.memory, InMemoryStore)
    assert isinstance(ports.control, InMemoryWorkerControl)
    for q in QUEUES:
        names = [n for n, queue in ports.control.queue_of.items() if queue == q.queue]
        ports.memory.values[q.service] = ScaleMemory(dict.fromkeys(names, AT - timedelta(hours=1)))


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
    # THEN every worker is drained, released, and both go to zero
    assert isinstance(ports.services, InMemoryWorkerServices)
    assert sorted(ports.services.calls) == [("worker-default", 0), ("worker-etl", 0)]
    assert ports.services.released == {
        "worker-default": {"default0", "default1"},
        "worker-etl": {"etl0", "etl1", "etl2"},
    }
    assert run.errors == ()


@pytest.mark.parametrize(
    ("failure", "expected_error"),
    [
        ("database", "metadata database"),
        ("broker", "broker"),
        ("inspect", "Celery inspect"),
        ("describe", "describe"),
    ],
)
def test_fail_safe_never_scales_down_and_reports_the_error(failure: str, expected_error: str) -> None:
    # GIVEN idle queues past their idle period, so a scale-down would be due
    ports = make_ports(
        counts={},
        depths={},
        desired={"default": 2, "etl": 3},
        throttle={failure} if failure in {"inspect", "describe"} else set(),
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
    # GIVEN 5 etl workers, 2 of them busy, nothing queued, the idle ones idle for an hour
    ports = make_ports(
        counts={"etl": TaskCounts(running=2)}, depths={}, desired={"etl": 5}, busy={"etl": [1, 0, 1, 0, 0]}
    )
    idle_for_an_hour(ports)
    run = evaluate(QUEUES, ports, AT)
    # THEN the 3 idle ones are drained and the 2 busy ones kept, not ceil(2/8) = 1
    outcome = run.outcomes[1]
    assert outcome.target == 2
    assert outcome.drain is not None
    assert sorted(outcome.drain.released) == [host("etl", 1), host("etl", 3), host("etl", 4)]


def test_a_worker_that_gets_a_task_during_the_drain_is_kept_and_resumed() -> None:
    # GIVEN 3 idle etl workers past the idle period
    ports = make_ports(counts={}, depths={}, desired={"etl": 3})
    idle_for_an_hour(ports)
    control = ports.control
    assert isinstance(control, InMemoryWorkerControl)

    # AND a task that reaches worker 1 between the decision and its cancel (prefetched)
    def land(name: str) -> None:
        if name == host("etl", 1):
            control.counts[name] = 1

    control.on_cancel = land
    # WHEN the autoscaler evaluates
    run = evaluate(QUEUES, ports, AT)
    # THEN workers 0 and 2 are released and counted down; worker 1 keeps its protection and
    # consumes again
    outcome = run.outcomes[1]
    assert outcome.drain is not None
    assert sorted(outcome.drain.released) == [host("etl", 0), host("etl", 2)]
    assert [name for name, _ in outcome.drain.kept] == [host("etl", 1)]
    assert "received 1 task(s) during the drain" in outcome.drain.reason
    assert isinstance(ports.services, InMemoryWorkerServices)
    assert ports.services.released["worker-etl"] == {"etl0", "etl2"}
    assert ports.services.calls == [("worker-etl", 1)]
    assert host("etl", 1) in control.consuming
    assert ("resume", (host("etl", 1),)) in control.calls


def test_a_worker_that_does_not_answer_the_idle_check_is_kept() -> None:
    ports = make_ports(counts={}, depths={}, desired={"etl": 2})
    idle_for_an_hour(ports)
    control = ports.control
    assert isinstance(control, InMemoryWorkerControl)
    control.on_cancel = lambda name: control.silent.add(name) if name == host("etl", 0) else None
    run = evaluate(QUEUES, ports, AT)
    assert run.outcomes[1].drain is not None
    assert run.outcomes[1].drain.released == (host("etl", 1),)
    assert run.outcomes[1].target == 1


def test_an_unprotected_stranger_blocks_every_release() -> None:
    # GIVEN an etl worker that holds no protection yet (still starting), besides 2 idle ones
    ports = make_ports(counts={}, depths={}, desired={"etl": 3}, busy={"etl": [0, 0]})
    idle_for_an_hour(ports)
    assert isinstance(ports.services, InMemoryWorkerServices)
    ports.services.released["worker-etl"] = {"starting-task"}
    # WHEN the autoscaler evaluates
    run = evaluate(QUEUES, ports, AT)
    # THEN nothing is released nor lowered (ECS could stop the stranger), and all consume again
    outcome = run.outcomes[1]
    assert outcome.drain is not None
    assert outcome.drain.released == ()
    assert outcome.target == 3
    assert ports.services.calls == []
    assert isinstance(ports.control, InMemoryWorkerControl)
    assert {host("etl", 0), host("etl", 1)} <= ports.control.consuming


def test_a_failed_count_update_resumes_the_released_workers() -> None:
    ports = make_ports(counts={}, depths={}, desired={"etl": 2}, throttle={"update"})
    idle_for_an_hour(ports)
    run = evaluate(QUEUES, ports, AT)
    assert any("ThrottlingException" in e for e in run.errors)
    assert isinstance(ports.control, InMemoryWorkerControl)
    assert {host("etl", 0), host("etl", 1)} <= ports.control.consuming
    assert not run.outcomes[1].applied


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


def test_idle_clocks_are_stored_between_runs() -> None:
    ports = make_ports(counts={}, depths={}, desired={"etl": 3})
    evaluate(QUEUES, ports, AT)
    assert isinstance(ports.memory, InMemoryStore)
    assert ports.memory.values["worker-etl"].idle_since == {host("etl", i): AT for i in range(3)}
    run = evaluate(QUEUES, ports, AT + timedelta(minutes=11))
    assert run.outcomes[1].decision.action is Action.SCALE_DOWN


def test_release_drains_every_idle_worker_of_every_queue_and_counts_them_down() -> None:
    # GIVEN two default workers and three etl workers, all idle (hibernate's drain check passed)
    ports = make_ports(counts={}, depths={}, desired={"default": 2, "etl": 3})
    # WHEN hibernate asks the autoscaler to release the workers
    run = release_workers(QUEUES, ports)
    # THEN every worker was cancelled, confirmed idle and released, each count lowered to 0
    assert run.errors == ()
    assert isinstance(ports.services, InMemoryWorkerServices)
    assert ports.services.calls == [("worker-default", 0), ("worker-etl", 0)]
    assert ports.services.released == {
        "worker-default": {"default0", "default1"},
        "worker-etl": {"etl0", "etl1", "etl2"},
    }
    shaped = run.to_dict()["released"]
    assert [(r["queue"], r["drained"], r["kept"], r["desired"]) for r in shaped] == [
        ("default", [host("default", 0), host("default", 1)], [], 0),
        ("etl", [host("etl", 0), host("etl", 1), host("etl", 2)], [], 0),
    ]


def test_release_keeps_a_busy_worker_protected_and_consuming() -> None:
    # GIVEN a forced hibernate: one etl worker still runs a task
    ports = make_ports(counts={}, depths={}, desired={"etl": 2}, busy={"etl": [0, 1]})
    # WHEN the workers are released
    run = release_workers(QUEUES, ports)
    # THEN only the idle one lost its protection; the busy one consumes again and keeps it
    assert isinstance(ports.services, InMemoryWorkerServices)
    assert ports.services.released == {"worker-etl": {"etl0"}}
    assert ports.services.calls == [("worker-etl", 1)]
    assert isinstance(ports.control, InMemoryWorkerControl)
    assert host("etl", 1) in ports.control.consuming
    etl = run.to_dict()["released"][1]
    assert etl["kept"] == [f"{host('etl', 1)}: received 1 task(s) during the drain"]


def test_release_with_the_broker_down_releases_nothing_and_says_why() -> None:
    # GIVEN workers whose broker does not answer
    ports = make_ports(counts={}, depths={}, desired={"etl": 2}, throttle={"inspect"})
    # WHEN the workers are released
    run = release_workers(QUEUES, ports)
    # THEN nothing is released or counted down, and the failure is reported
    assert isinstance(ports.services, InMemoryWorkerServices)
    assert ports.services.released == {}
    assert ports.services.calls == []
    assert any("Celery inspect" in error for error in run.errors), run.errors


def test_a_broker_without_remote_control_keeps_every_worker_names_why_and_counts_no_error() -> None:
    # GIVEN idle queues past their idle period, on a broker whose workers run no remote control
    ports = make_ports(counts={}, depths={}, desired={"default": 2, "etl": 3})
    idle_for_an_hour(ports)
    assert isinstance(ports.control, InMemoryWorkerControl)
    ports.control.unavailable = remote_control_unavailable_reason("sqs")
    # WHEN the autoscaler evaluates
    run = evaluate(QUEUES, ports, AT)
    # THEN no worker is drained or stopped, each decision says why, and no error is counted
    assert isinstance(ports.services, InMemoryWorkerServices)
    assert ports.services.calls == []
    assert ports.control.calls == []
    assert run.errors == ()
    for outcome in run.outcomes:
        assert outcome.decision.action is Action.HOLD
        assert "per-worker busy counts (Celery remote control is unavailable on the SQS broker" in (
            outcome.decision.reason
        )
        assert "never scale down" in outcome.decision.reason


def test_a_broker_without_remote_control_still_scales_up() -> None:
    # GIVEN 20 etl tasks waiting and no remote control
    ports = make_ports(counts={"etl": TaskCounts(queued=20)}, depths={"etl": 20}, desired={})
    assert isinstance(ports.control, InMemoryWorkerControl)
    ports.control.unavailable = remote_control_unavailable_reason("sqs")
    # WHEN the autoscaler evaluates, THEN etl still goes to 3 at once
    run = evaluate(QUEUES, ports, AT)
    assert isinstance(ports.services, InMemoryWorkerServices)
    assert ports.services.calls == [("worker-etl", 3)]
    assert run.errors == ()


def test_release_on_a_broker_without_remote_control_asks_nothing_and_says_why() -> None:
    # GIVEN hibernate's release on a broker whose workers run no remote control (SQS): its
    # workers hold no protection, so StopWorkers alone stops them
    ports = make_ports(counts={}, depths={}, desired={"etl": 2})
    assert isinstance(ports.control, InMemoryWorkerControl)
    ports.control.unavailable = remote_control_unavailable_reason("sqs")
    # WHEN the workers are released
    run = release_workers(QUEUES, ports)
    # THEN nothing is asked, released or counted down, no error counts, and each queue says why
    assert isinstance(ports.services, InMemoryWorkerServices)
    assert ports.services.released == {}
    assert ports.services.calls == []
    assert ports.control.calls == []
    assert run.errors == ()
    for release in run.to_dict()["released"]:
        assert release["reason"].startswith("nothing to release: Celery remote control is unavailable")
