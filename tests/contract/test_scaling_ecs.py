"""The ECS adapter and the idle-clock tag store against moto; task protection against botocore's
Stubber (moto 5.2.5 has no GetTaskProtection/UpdateTaskProtection), which validates every
request and response against the real ECS service model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from airflow_control_plane.errors import ConfigError, TransientError
from airflow_control_plane.scaling.config import QueueScaling
from airflow_control_plane.scaling.drain import InMemoryWorkerControl
from airflow_control_plane.scaling.ecs import EcsWorkerServices
from airflow_control_plane.scaling.events import EVENT_DETAIL_TYPE, EventBridgePublisher, RecordingPublisher
from airflow_control_plane.scaling.hibernation import FixedFlag, SchedulerStopped
from airflow_control_plane.scaling.memory import EcsTagStore
from airflow_control_plane.scaling.policy import Action, ScaleMemory, ScalingDecision
from airflow_control_plane.scaling.service import ScalingPorts, evaluate
from tests.contract.ecs_task_protection import create_cluster, emulate_task_protection, run_worker_tasks

pytestmark = pytest.mark.contract

CLUSTER = "airflow-test"
REGION = "us-east-1"
AT = datetime(2026, 1, 5, 6, 1, tzinfo=UTC)


@pytest.fixture
def ecs(moto_aws: None) -> Any:
    client = boto3.client("ecs", region_name=REGION)
    create_cluster(client, CLUSTER, {"worker-etl": 2, "scheduler": 1})
    return client


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


def test_idle_clocks_round_trip_through_service_tags(ecs: Any) -> None:
    # GIVEN the tag store of the cluster, and a tag of somebody else on the service
    store = EcsTagStore(ecs, CLUSTER)
    assert store.load("worker-etl") == ScaleMemory()
    arn = ecs.describe_services(cluster=CLUSTER, services=["worker-etl"])["services"][0]["serviceArn"]
    ecs.tag_resource(resourceArn=arn, tags=[{"key": "team", "value": "data"}])
    # WHEN two workers' clocks are saved, then one worker is gone
    a, b = "worker-3f2a@ip-10-0-1-23.ec2.internal", "worker-9c1b@ip-10-0-2-7.ec2.internal"
    store.save("worker-etl", ScaleMemory({a: AT - timedelta(minutes=7), b: AT}))
    store.save("worker-etl", ScaleMemory({b: AT}))
    # THEN they read back exactly, from tags on the service itself; the stale one is removed
    assert store.load("worker-etl") == ScaleMemory({b: AT})
    tags = {t["key"]: t["value"] for t in ecs.list_tags_for_resource(resourceArn=arn)["tags"]}
    assert tags == {"team": "data", f"autoscaler:idle:{b}": AT.isoformat()}
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


def test_unprotected_workers_are_read_in_batches_of_ten() -> None:
    # GIVEN 12 worker tasks, 7 of them without protection
    flags = [i % 3 == 0 or i == 11 for i in range(12)]
    services, stubber = stubbed_protection(flags)
    # WHEN the adapter reads which hold no protection
    unprotected = services.unprotected("worker-etl")
    # THEN it asks in batches of 10 (two calls) and names the 7 by task id
    assert unprotected == {f"{i:032x}" for i, flag in enumerate(flags) if not flag}
    stubber.assert_no_pending_responses()


def test_throttled_protection_read_is_a_transient_error() -> None:
    services, _ = stubbed_protection([True, False], throttle=True)
    with pytest.raises(TransientError, match="ThrottlingException"):
        services.unprotected("worker-etl")


def test_release_sends_update_task_protection_false_for_the_task_ids() -> None:
    # GIVEN two drained workers' task ids
    client = boto3.client("ecs", region_name=REGION)
    stubber = Stubber(client)
    ids = [f"{i:032x}" for i in range(2)]
    stubber.add_response(
        "update_task_protection",
        {
            "protectedTasks": [
                {
                    "taskArn": f"arn:aws:ecs:{REGION}:123456789012:task/{CLUSTER}/{i}",
                    "protectionEnabled": False,
                }
                for i in ids
            ],
            "failures": [],
        },
        {"cluster": CLUSTER, "tasks": ids, "protectionEnabled": False},
    )
    stubber.add_client_error("update_task_protection", "ThrottlingException", "Rate exceeded")
    stubber.activate()
    services = EcsWorkerServices(client, CLUSTER)
    # WHEN released THEN exactly those ids are (the request matched the real ECS model)
    assert services.release("worker-etl", ids) == set(ids)
    with pytest.raises(TransientError, match="UpdateTaskProtection"):
        services.release("worker-etl", ids)


def throttle(client: Any, operation: str) -> None:
    """Make the (moto-backed) client answer ThrottlingException to one operation, the way ECS does."""

    def answer(**_: object) -> tuple[SimpleNamespace, dict[str, Any]]:
        error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
        return SimpleNamespace(status_code=400), {**error, "ResponseMetadata": {"HTTPStatusCode": 400}}

    client.meta.events.register(f"before-call.ecs.{operation}", answer)


class NoDemand:
    def task_counts(self) -> dict[str, Any]:
        return {}

    def due_dag_runs(self, now: datetime, horizon: timedelta) -> list[Any]:
        return []


class NoBacklog:
    def waiting(self, queue: str) -> int:
        return 0


def idle_workers_ports(client: Any, store: EcsTagStore) -> tuple[ScalingPorts, list[str]]:
    """Two protected, idle etl worker tasks (moto), their Celery names, clocks an hour old."""
    ids = run_worker_tasks(client, CLUSTER, 2)
    table = emulate_task_protection(client, CLUSTER)
    table.enabled.update(dict.fromkeys(ids, True))  # each worker's keeper protected it at start
    names = [f"worker-{i}@ip-10-0-1-{n}" for n, i in enumerate(ids)]
    store.save("worker-etl", ScaleMemory(dict.fromkeys(names, AT - timedelta(hours=1))))
    ports = ScalingPorts(
        demand=NoDemand(),
        broker=NoBacklog(),
        services=EcsWorkerServices(client, CLUSTER),
        memory=store,
        hibernation=FixedFlag(False),
        publisher=RecordingPublisher(),
        control=InMemoryWorkerControl(dict.fromkeys(names, 0)),
        settle_s=0.0,
    )
    return ports, ids


@pytest.mark.parametrize(("operation", "error"), [("ListTasks", "drain"), ("DescribeServices", "describe")])
def test_throttled_ecs_never_scales_down_and_reports_the_error(ecs: Any, operation: str, error: str) -> None:
    # GIVEN an idle etl service with 2 workers whose idle period ran out
    throttled = boto3.client("ecs", region_name=REGION)
    ports, _ = idle_workers_ports(throttled, EcsTagStore(ecs, CLUSTER))
    queues = (QueueScaling("etl", "worker-etl", 8, 0, 10, idle_seconds=600),)
    # (control: with ECS answering, the same inputs do scale down -- see the test below)
    # WHEN ECS throttles one of the reads and the autoscaler evaluates
    throttle(throttled, operation)
    run = evaluate(queues, ports, AT)
    # THEN it stays at 2, releases nothing, the workers consume again, and the throttled call
    # is reported (the handler turns it into the error metric)
    assert not run.outcomes[0].applied
    assert ecs.describe_services(cluster=CLUSTER, services=["worker-etl"])["services"][0]["desiredCount"] == 2
    assert any(error in e and "ThrottlingException" in e for e in run.errors), run.errors
    assert isinstance(ports.control, InMemoryWorkerControl)
    assert ports.control.consuming == set(ports.control.counts)


def test_same_inputs_without_throttling_drain_and_scale_down_to_zero(ecs: Any) -> None:
    ports, ids = idle_workers_ports(ecs, EcsTagStore(ecs, CLUSTER))
    run = evaluate((QueueScaling("etl", "worker-etl", 8, 0, 10, idle_seconds=600),), ports, AT)
    assert run.errors == ()
    assert run.outcomes[0].decision.action is Action.SCALE_DOWN
    assert ecs.describe_services(cluster=CLUSTER, services=["worker-etl"])["services"][0]["desiredCount"] == 0
    assert ports.services.unprotected("worker-etl") == set(ids)


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
