"""The ECS adapter and the idle-clock tag store against moto; task protection against botocore's
Stubber (moto 5.2.5 has no GetTaskProtection/UpdateTaskProtection), which validates every
request and response against the real ECS service model."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from airflow_control_plane.errors import ConfigError, TransientError
from airflow_control_plane.scaling.config import QueueScaling
from airflow_control_plane.scaling.ecs import EcsWorkerServices
from airflow_control_plane.scaling.events import EVENT_DETAIL_TYPE, EventBridgePublisher, RecordingPublisher
from airflow_control_plane.scaling.hibernation import FixedFlag, SchedulerStopped
from airflow_control_plane.scaling.memory import EcsTagStore
from airflow_control_plane.scaling.policy import Action, ScaleMemory, ScalingDecision
from airflow_control_plane.scaling.service import ScalingPorts, evaluate

pytestmark = pytest.mark.contract

CLUSTER = "airflow-test"
REGION = "us-east-1"
AT = datetime(2026, 1, 5, 6, 1, tzinfo=UTC)


@pytest.fixture
def ecs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        client = boto3.client("ecs", region_name=REGION)
        client.create_cluster(clusterName=CLUSTER)
        client.register_task_definition(
            family="worker",
            containerDefinitions=[{"name": "worker", "image": "airflow:3.3.2", "cpu": 256, "memory": 512}],
            requiresCompatibilities=["FARGATE"],
            networkMode="awsvpc",
            cpu="256",
            memory="512",
        )
        for name, count in (("worker-etl", 2), ("scheduler", 1)):
            client.create_service(
                cluster=CLUSTER, serviceName=name, taskDefinition="worker", desiredCount=count
            )
        yield client


def test_describe_and_set_desired_count(ecs: Any) -> None:
    # GIVEN a worker service with 2 desired tasks
    services = EcsWorkerServices(ecs, CLUSTER)
    assert services.describe("worker-etl").desired == 2
    # WHEN the adapter sets 5
    services.set_desired("worker-etl", 5)
    # THEN ECS reports 5 desired
    assert ecs.describe_services(cluster=CLUSTER, services=["worker-etl"])["services"][0]["desiredCount"] == 5
    assert services.describe("worker-etl").desired == 5


def test_unknown_service_is_a_config_error(ecs: Any) -> None:
    with pytest.raises(ConfigError, match="worker-nope"):
        EcsWorkerServices(ecs, CLUSTER).describe("worker-nope")


def test_idle_clock_round_trips_through_service_tags(ecs: Any) -> None:
    # GIVEN the tag store of the cluster
    store = EcsTagStore(ecs, CLUSTER)
    assert store.load("worker-etl") == ScaleMemory()
    # WHEN a clock is saved, then cleared
    clock = ScaleMemory(AT - timedelta(minutes=7), 3)
    store.save("worker-etl", clock)
    # THEN it reads back exactly, from tags on the service itself
    assert store.load("worker-etl") == clock
    arn = ecs.describe_services(cluster=CLUSTER, services=["worker-etl"])["services"][0]["serviceArn"]
    tags = {t["key"]: t["value"] for t in ecs.list_tags_for_resource(resourceArn=arn)["tags"]}
    assert tags["autoscaler:peak-needed"] == "3"
    store.save("worker-etl", ScaleMemory())
    assert store.load("worker-etl") == ScaleMemory()


def test_hibernation_read_from_the_scheduler_desired_count(ecs: Any) -> None:
    services = EcsWorkerServices(ecs, CLUSTER)
    flag = SchedulerStopped(services, "scheduler")
    assert flag.is_hibernated() is False
    services.set_desired("scheduler", 0)
    assert flag.is_hibernated() is True


def stubbed_protection(protected: list[bool], *, throttle: bool = False) -> tuple[EcsWorkerServices, Stubber]:
    client = boto3.client("ecs", region_name=REGION)
    stubber = Stubber(client)
    arns = [f"arn:aws:ecs:{REGION}:123456789012:task/{CLUSTER}/{i:032x}" for i in range(len(protected))]
    stubber.add_response(
        "list_tasks",
        {"taskArns": arns},
        {"cluster": CLUSTER, "serviceName": "worker-etl", "desiredStatus": "RUNNING"},
    )
    for start in range(0, len(arns), 10):
        batch = arns[start : start + 10]
        if throttle:
            stubber.add_client_error("get_task_protection", "ThrottlingException", "Rate exceeded")
            break
        stubber.add_response(
            "get_task_protection",
            {
                "protectedTasks": [
                    {"taskArn": arn, "protectionEnabled": flag, "expirationDate": AT + timedelta(hours=1)}
                    for arn, flag in zip(batch, protected[start : start + 10], strict=True)
                ],
                "failures": [],
            },
            {"cluster": CLUSTER, "tasks": batch},
        )
    stubber.activate()
    return EcsWorkerServices(client, CLUSTER), stubber


def test_protected_workers_are_counted_in_batches_of_ten() -> None:
    # GIVEN 12 worker tasks, 5 of them protected (busy)
    flags = [i % 3 == 0 or i == 11 for i in range(12)]
    services, stubber = stubbed_protection(flags)
    # WHEN the adapter counts protected workers
    count = services.protected_workers("worker-etl")
    # THEN it asks in batches of 10 (two calls) and counts 5
    assert count == sum(flags) == 5
    stubber.assert_no_pending_responses()


def test_throttled_protection_read_is_a_transient_error() -> None:
    services, _ = stubbed_protection([True, False], throttle=True)
    with pytest.raises(TransientError, match="ThrottlingException"):
        services.protected_workers("worker-etl")


def throttle(client: Any, operation: str) -> None:
    """Make the (moto-backed) client answer ThrottlingException to one operation, the way ECS does."""

    def answer(**_: object) -> tuple[SimpleNamespace, dict[str, Any]]:
        error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
        return SimpleNamespace(status_code=400), {**error, "ResponseMetadata": {"HTTPStatusCode": 400}}

    client.meta.events.register(f"before-call.ecs.{operation}", answer)


@pytest.mark.parametrize(
    ("operation", "error"), [("ListTasks", "scale-in protection"), ("DescribeServices", "describe")]
)
def test_throttled_ecs_never_scales_down_and_reports_the_error(ecs: Any, operation: str, error: str) -> None:
    # GIVEN an idle etl service with 2 workers whose idle period ran out
    class NoDemand:
        def task_counts(self) -> dict[str, Any]:
            return {}

        def due_dag_runs(self, now: datetime, horizon: timedelta) -> list[Any]:
            return []

    class NoBacklog:
        def waiting(self, queue: str) -> int:
            return 0

    store = EcsTagStore(ecs, CLUSTER)
    store.save("worker-etl", ScaleMemory(AT - timedelta(hours=1), 0))
    throttled = boto3.client("ecs", region_name=REGION)
    ports = ScalingPorts(
        demand=NoDemand(),
        broker=NoBacklog(),
        services=EcsWorkerServices(throttled, CLUSTER),
        memory=store,
        hibernation=FixedFlag(False),
        publisher=RecordingPublisher(),
    )
    queues = (QueueScaling("etl", "worker-etl", 8, 0, 10, idle_seconds=600),)
    # (control: with ECS answering, the same inputs do scale down -- see the test below)
    # WHEN ECS throttles one of the reads and the autoscaler evaluates
    throttle(throttled, operation)
    run = evaluate(queues, ports, AT)
    # THEN it holds at 2 and reports the throttled call (the handler turns it into the error metric)
    assert run.outcomes[0].decision.action is Action.HOLD
    assert ecs.describe_services(cluster=CLUSTER, services=["worker-etl"])["services"][0]["desiredCount"] == 2
    assert any(error in e and "ThrottlingException" in e for e in run.errors), run.errors


def test_same_inputs_without_throttling_scale_down_to_zero(ecs: Any) -> None:
    class NoDemand:
        def task_counts(self) -> dict[str, Any]:
            return {}

        def due_dag_runs(self, now: datetime, horizon: timedelta) -> list[Any]:
            return []

    class NoBacklog:
        def waiting(self, queue: str) -> int:
            return 0

    store = EcsTagStore(ecs, CLUSTER)
    store.save("worker-etl", ScaleMemory(AT - timedelta(hours=1), 0))
    ports = ScalingPorts(
        demand=NoDemand(),
        broker=NoBacklog(),
        services=EcsWorkerServices(ecs, CLUSTER),
        memory=store,
        hibernation=FixedFlag(False),
        publisher=RecordingPublisher(),
    )
    run = evaluate((QueueScaling("etl", "worker-etl", 8, 0, 10, idle_seconds=600),), ports, AT)
    assert run.errors == ()
    assert run.outcomes[0].decision.action is Action.SCALE_DOWN
    assert ecs.describe_services(cluster=CLUSTER, services=["worker-etl"])["services"][0]["desiredCount"] == 0


def test_change_event_goes_to_eventbridge(ecs: Any) -> None:
    events = boto3.client("events", region_name=REGION)
    decision = ScalingDecision("etl", "worker-etl", Action.SCALE_UP, 0, 3, "demand 20 needs 3", 20, 3)
    EventBridgePublisher(events, "default", "airflow-test").publish(decision)
    stubbed = boto3.client("events", region_name=REGION)
    stubber = Stubber(stubbed)
    stubber.add_client_error("put_events", "ThrottlingException", "Rate exceeded")
    stubber.activate()
    with pytest.raises(TransientError, match="PutEvents"):
        EventBridgePublisher(stubbed, "default", "airflow-test").publish(decision)
    assert EVENT_DETAIL_TYPE == "Worker count changed"
