"""The SQS broker option of template.yaml (CeleryBroker=sqs), for a five-queue stack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_control_plane import worker_queues
from tests.containers.taskdefs import Resolver
from tests.static.tools import load_template

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
NAMES = ["default", "reports", "heavy", "ml", "etl-nightly"]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    queues = worker_queues.parse_queues(json.dumps({"queues": [{"name": n} for n in NAMES]}))
    path = tmp_path_factory.mktemp("sqs") / "template.yaml"
    path.write_text(worker_queues.render((REPO_ROOT / "template.yaml").read_text(), queues))
    return load_template(path)


def test_one_sqs_queue_with_a_dead_letter_queue_per_worker_queue(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    for name in NAMES:
        logical_id = worker_queues.default_logical_id(name)
        queue = resources[f"{logical_id}BrokerQueue"]
        dlq = resources[f"{logical_id}BrokerDeadLetterQueue"]
        # THEN only with CeleryBroker=sqs, named as kombu names the Celery queue
        assert queue["Condition"] == dlq["Condition"] == "BrokerIsSqs"
        assert queue["Properties"]["QueueName"] == {"Fn::Sub": f"${{EnvironmentName}}-{name}"}
        # AND a message stays invisible for SQS's maximum, 12 h, while its task runs
        assert queue["Properties"]["VisibilityTimeout"] == worker_queues.SQS_VISIBILITY_TIMEOUT_S == 43200
        redrive = queue["Properties"]["RedrivePolicy"]
        assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": [f"{logical_id}BrokerDeadLetterQueue", "Arn"]}
        assert redrive["maxReceiveCount"] == 5
        assert queue["Properties"]["SqsManagedSseEnabled"] is True


def test_components_and_autoscaler_get_exactly_the_queue_grants(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    arns = [{"Fn::GetAtt": [f"{worker_queues.default_logical_id(n)}BrokerQueue", "Arn"]} for n in NAMES]
    access = resources["BrokerQueueAccess"]
    assert access["Condition"] == "BrokerIsSqs"
    assert access["Properties"]["Roles"] == [{"Ref": "TaskRole"}, {"Ref": "SchedulerTaskRole"}]
    celery, listing = access["Properties"]["PolicyDocument"]["Statement"]
    assert celery["Resource"] == arns
    assert "sqs:DeleteQueue" not in celery["Action"]
    assert listing["Action"] == "sqs:ListQueues"
    depth = resources["AutoscalerBrokerQueueDepth"]["Properties"]
    assert depth["Roles"] == [{"Ref": "AutoscalerRole"}]
    (statement,) = depth["PolicyDocument"]["Statement"]
    assert statement["Action"] == ["sqs:GetQueueUrl", "sqs:GetQueueAttributes"]
    assert statement["Resource"] == arns


def test_the_broker_settings_reach_every_celery_component_and_the_autoscaler(
    template: dict[str, Any],
) -> None:
    # GIVEN the template resolved with CeleryBroker=sqs
    resolver = Resolver(template, {"CeleryBroker": "sqs", "EnvironmentName": "airflow-dev"})
    resources = template["Resources"]
    assert resolver.resolve(resources["BrokerUrlSecret"]["Properties"]["SecretString"]) == "sqs://"
    autoscaler = resolver.resolve(resources["AutoscalerFunction"]["Properties"]["Environment"]["Variables"])
    assert (autoscaler["BROKER_TRANSPORT"], autoscaler["SQS_QUEUE_PREFIX"]) == ("sqs", "airflow-dev-")
    # THEN every container that gets the broker URL gets the SQS transport options
    with_broker = 0
    for resource in resources.values():
        if resource["Type"] != "AWS::ECS::TaskDefinition":
            continue
        for container in resource["Properties"]["ContainerDefinitions"]:
            if "AIRFLOW__CELERY__BROKER_URL" not in {s["Name"] for s in container.get("Secrets") or []}:
                continue
            with_broker += 1
            env = {e["Name"]: resolver.resolve(e["Value"]) for e in container["Environment"]}
            assert env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__QUEUE_NAME_PREFIX"] == "airflow-dev-"
            assert env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"] == "43200"
    # api-server, scheduler, dag-processor, triggerer, Flower (present when FlowerEnabled), workers
    assert with_broker == 5 + len(NAMES)
    # AND with Redis the visibility timeout stays Airflow's default
    redis = Resolver(template, {"CeleryBroker": "redis", "EnvironmentName": "airflow-dev"})
    value = resources["WorkerDefaultTaskDefinition"]["Properties"]["ContainerDefinitions"][0]["Environment"]
    timeout = next(e["Value"] for e in value if e["Name"].endswith("VISIBILITY_TIMEOUT"))
    assert redis.resolve(timeout) == "86400"
