"""One contract per port, run against every implementation of it.

- the idle-clock store (scaling/memory.py): in memory, the local JSON file, ECS service tags (moto);
- the worker services (scaling/ecs.py): the in-memory fake, the local supervisor's adapter
  (local/worker_services.py over the in-memory supervisor), ECS (moto, task protection as
  tests/contract/ecs_task_protection.py answers it);
- the event publishers: DAG sync (dagsync/events.py: in memory, JSON lines, EventBridge) and
  the autoscaler (scaling/events.py: recording, EventBridge), EventBridge read back through a
  rule that forwards to an SQS queue in moto.

An implementation that passes here can stand in for any other behind the port.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from airflow_control_plane.dagsync import events as dagsync_events
from airflow_control_plane.errors import ConfigError
from airflow_control_plane.local.ecs import InMemoryServices
from airflow_control_plane.local.worker_services import LocalWorkerServices
from airflow_control_plane.scaling import events as scaling_events
from airflow_control_plane.scaling.ecs import (
    EcsWorkerServices,
    InMemoryWorkerServices,
    ServiceCounts,
    WorkerServices,
)
from airflow_control_plane.scaling.memory import EcsTagStore, InMemoryStore, JsonFileStore, MemoryStore
from airflow_control_plane.scaling.policy import Action, ScaleMemory, ScalingDecision
from tests.contract.ecs_task_protection import (
    REGION,
    create_cluster,
    emulate_task_protection,
    run_worker_tasks,
)

pytestmark = pytest.mark.contract

CLUSTER = "airflow-test"
SERVICES = ("worker-etl", "worker-default")
AT = datetime(2026, 1, 5, 6, 1, tzinfo=UTC)
A, B = "worker-3f2a@ip-10-0-1-23.ec2.internal", "worker-9c1b@ip-10-0-2-7.ec2.internal"


# --- the idle-clock store ---------------------------------------------------------------------


@pytest.fixture(params=["in-memory", "json-file", "ecs-tags"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], MemoryStore]:
    """Opens the store again over the same storage (a later evaluation, a new Lambda container)."""
    if request.param == "in-memory":
        store = InMemoryStore()
        return lambda: store
    if request.param == "json-file":
        return lambda: JsonFileStore(tmp_path / "state" / "scale-memory.json")
    request.getfixturevalue("moto_aws")
    client = boto3.client("ecs", region_name=REGION)
    create_cluster(client, CLUSTER, dict.fromkeys(SERVICES, 1))
    return lambda: EcsTagStore(client, CLUSTER)


def test_store_reads_no_clock_before_any_save(open_store: Callable[[], MemoryStore]) -> None:
    assert open_store().load("worker-etl") == ScaleMemory()


def test_store_keeps_each_services_clocks_and_drops_the_ones_not_saved_again(
    open_store: Callable[[], MemoryStore],
) -> None:
    # GIVEN two workers idle on one service, none on the other
    store = open_store()
    store.save("worker-etl", ScaleMemory({A: AT - timedelta(minutes=7), B: AT}))
    store.save("worker-default", ScaleMemory())
    # THEN they read back exactly, per service, from a store opened again
    assert open_store().load("worker-etl") == ScaleMemory({A: AT - timedelta(minutes=7), B: AT})
    assert open_store().load("worker-default") == ScaleMemory()
    # WHEN one worker is gone (busy or stopped) at the next save
    store.save("worker-etl", ScaleMemory({B: AT}))
    # THEN its clock is gone, the other is kept; an empty save clears the service
    assert open_store().load("worker-etl") == ScaleMemory({B: AT})
    store.save("worker-etl", ScaleMemory())
    assert open_store().load("worker-etl") == ScaleMemory()


# --- the worker services --------------------------------------------------------------------


@dataclass
class Workers:
    services: WorkerServices
    service: str
    ids: list[str]  # the running workers' ids, all protected from their start


@pytest.fixture(params=["in-memory", "local-supervisor", "ecs"])
def workers(request: pytest.FixtureRequest) -> Workers:
    """A worker service with 2 desired and 2 running workers, every one of them protected."""
    if request.param == "in-memory":
        return Workers(InMemoryWorkerServices({"worker": ServiceCounts(2, 2)}), "worker", ["a", "b"])
    if request.param == "local-supervisor":
        supervisor = InMemoryServices(("worker",))
        supervisor.set_desired_count("worker", 2)
        return Workers(LocalWorkerServices(supervisor), "worker", ["0", "1"])
    request.getfixturevalue("moto_aws")
    client = boto3.client("ecs", region_name=REGION)
    create_cluster(client, CLUSTER, {"worker-etl": 2})
    ids = run_worker_tasks(client, CLUSTER, 2)
    table = emulate_task_protection(client, CLUSTER)
    for task in ids:
        table.set_enabled(task, True)  # each worker protects itself at start (its Celery hook)
    return Workers(EcsWorkerServices(client, CLUSTER), "worker-etl", ids)


def test_workers_describe_and_set_the_desired_count(workers: Workers) -> None:
    assert workers.services.describe(workers.service).desired == 2
    workers.services.set_desired(workers.service, 1)
    assert workers.services.describe(workers.service).desired == 1


def test_workers_unknown_service_is_a_config_error(workers: Workers) -> None:
    with pytest.raises(ConfigError):
        workers.services.describe("worker-nope")


def test_workers_are_protected_until_released_one_by_one(workers: Workers) -> None:
    # GIVEN two running workers, both protected from their start
    assert workers.services.unprotected(workers.service) == set()
    # WHEN the drain releases the first
    first = workers.ids[0]
    assert workers.services.release(workers.service, [first]) == {first}
    # THEN only that one reads unprotected
    assert workers.services.unprotected(workers.service) == {first}


# --- the event publishers -------------------------------------------------------------------


@pytest.fixture
def eventbridge_to_queue(moto_aws: None) -> tuple[Any, Callable[[], list[dict[str, Any]]]]:
    """An ``events`` client whose bus ``airflow`` forwards every event to an SQS queue, and a
    reader of what arrived there (EventBridge's envelope: ``detail-type``, ``detail``)."""
    events, sqs = boto3.client("events", region_name=REGION), boto3.client("sqs", region_name=REGION)
    events.create_event_bus(Name="airflow")
    queue_url = sqs.create_queue(QueueName="control-plane-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sources = [dagsync_events.SOURCE, scaling_events.EVENT_SOURCE]
    events.put_rule(Name="all", EventBusName="airflow", EventPattern=json.dumps({"source": sources}))
    events.put_targets(Rule="all", EventBusName="airflow", Targets=[{"Id": "q", "Arn": arn}])

    def received() -> list[dict[str, Any]]:
        bodies: list[dict[str, Any]] = []
        while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages"):
            for message in messages:
                bodies.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return bodies

    return events, received


@pytest.fixture(params=["in-memory", "json-lines", "eventbridge"])
def dagsync_publisher(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[dagsync_events.EventPublisher, Callable[[], list[tuple[str, dict[str, Any]]]]]:
    """A DAG sync publisher and what a subscriber received: (detail type, detail) in order."""
    if request.param == "in-memory":
        memory = dagsync_events.InMemoryPublisher()
        return memory, lambda: list(memory.events)
    if request.param == "json-lines":
        path = tmp_path / "events" / "dagsync.jsonl"

        def lines() -> list[tuple[str, dict[str, Any]]]:
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            assert {row["source"] for row in rows} == {dagsync_events.SOURCE}
            return [(row["detail-type"], row["detail"]) for row in rows]

        return dagsync_events.JsonLinesPublisher(path), lines
    client, received = request.getfixturevalue("eventbridge_to_queue")

    def bus() -> list[tuple[str, dict[str, Any]]]:
        bodies = received()
        assert {body["source"] for body in bodies} == {dagsync_events.SOURCE}
        return [(body["detail-type"], body["detail"]) for body in bodies]

    return dagsync_events.EventBridgePublisher(client, "airflow"), bus


def test_dagsync_publisher_delivers_each_event_with_its_detail_type_and_detail(
    dagsync_publisher: tuple[dagsync_events.EventPublisher, Callable[[], list[tuple[str, dict[str, Any]]]]],
) -> None:
    publisher, received = dagsync_publisher
    # WHEN a release is announced, then a failure
    publisher.publish(dagsync_events.RELEASE_PUBLISHED, {"sha": "a" * 40, "files_changed": 2})
    publisher.publish(dagsync_events.SYNC_FAILED, {"sha": "b" * 40, "reason": "broken.py:4"})
    # THEN both arrive, in order, with their detail type and detail
    assert received() == [
        (dagsync_events.RELEASE_PUBLISHED, {"sha": "a" * 40, "files_changed": 2}),
        (dagsync_events.SYNC_FAILED, {"sha": "b" * 40, "reason": "broken.py:4"}),
    ]


@pytest.fixture(params=["recording", "eventbridge"])
def scaling_publisher(
    request: pytest.FixtureRequest,
) -> tuple[scaling_events.ChangePublisher, Callable[[], list[dict[str, Any]]]]:
    """An autoscaler publisher and the event detail a subscriber received, in order."""
    if request.param == "recording":
        recording = scaling_events.RecordingPublisher()
        return recording, lambda: [
            scaling_events.event_detail(d, "airflow-test") for d in recording.published
        ]
    client, received = request.getfixturevalue("eventbridge_to_queue")

    def bus() -> list[dict[str, Any]]:
        bodies = received()
        assert {(b["source"], b["detail-type"]) for b in bodies} == {
            (scaling_events.EVENT_SOURCE, scaling_events.EVENT_DETAIL_TYPE)
        }
        return [body["detail"] for body in bodies]

    return scaling_events.EventBridgePublisher(client, "airflow", "airflow-test"), bus


def test_scaling_publisher_delivers_each_decision_with_its_reason(
    scaling_publisher: tuple[scaling_events.ChangePublisher, Callable[[], list[dict[str, Any]]]],
) -> None:
    publisher, received = scaling_publisher
    up = ScalingDecision("etl", "worker-etl", Action.SCALE_UP, 0, 3, "demand 20 needs 3", 20, 3)
    down = ScalingDecision("etl", "worker-etl", Action.SCALE_DOWN, 3, 0, "idle 600 s", 0, 0)
    publisher.publish(up)
    publisher.publish(down)
    assert received() == [
        {
            "environment": "airflow-test",
            "queue": "etl",
            "service": "worker-etl",
            "action": "scale_up",
            "from": 0,
            "to": 3,
            "demand": 20,
            "reason": "demand 20 needs 3",
        },
        {
            "environment": "airflow-test",
            "queue": "etl",
            "service": "worker-etl",
            "action": "scale_down",
            "from": 3,
            "to": 0,
            "demand": 0,
            "reason": "idle 600 s",
        },
    ]
