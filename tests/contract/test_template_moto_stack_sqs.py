"""A five-queue stack with CeleryBroker=sqs created in moto's CloudFormation (same harness as
test_template_moto_stack.py): five worker services, five SQS queues with dead-letter queues,
and the autoscaler's queue map and broker settings as deployed."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from airflow_control_plane import worker_queues
from airflow_control_plane.scaling.config import AutoscalerConfig
from tests.contract.test_template_moto_stack import STACK, _created_stack
from tests.static.tools import load_template, translate

pytestmark = pytest.mark.contract

REPO_ROOT = Path(__file__).resolve().parents[2]
NAMES = ["default", "reports", "heavy", "ml", "etl-nightly"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], set[str]]]:
    queues = {
        "queues": [{"name": n, "min": i % 2, "max": 3 + i, "concurrency": 2} for i, n in enumerate(NAMES)]
    }
    path = tmp_path_factory.mktemp("five") / "template.yaml"
    path.write_text(
        worker_queues.render(
            (REPO_ROOT / "template.yaml").read_text(), worker_queues.parse_queues(json.dumps(queues))
        )
    )
    translated = translate(load_template(path), REPO_ROOT)
    yield from _created_stack(translated, {"CeleryBroker": "sqs"})


def test_five_worker_services_and_five_sqs_queues(stack: tuple[dict[str, Any], set[str]]) -> None:
    ecs = boto3.client("ecs", region_name="us-east-1")
    arns = ecs.list_services(cluster=STACK)["serviceArns"]
    names = {s["serviceName"] for s in ecs.describe_services(cluster=STACK, services=arns[:10])["services"]}
    assert {f"airflow-dev-worker-{n}" for n in NAMES} <= names
    sqs = boto3.client("sqs", region_name="us-east-1")
    for name in NAMES:
        url = sqs.get_queue_url(QueueName=f"airflow-dev-{name}")["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attributes["VisibilityTimeout"] == "43200"
        redrive = json.loads(attributes["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"].endswith(f":airflow-dev-{name}-dlq")
        assert int(redrive["maxReceiveCount"]) == 5


def test_the_deployed_autoscaler_covers_all_five_queues_on_sqs(
    stack: tuple[dict[str, Any], set[str]],
) -> None:
    env = boto3.client("lambda", region_name="us-east-1").get_function_configuration(
        FunctionName="airflow-dev-autoscaler"
    )["Environment"]["Variables"]
    # WHEN the autoscaler builds its config from the deployed environment
    config = AutoscalerConfig.from_env(env)
    # THEN it reads SQS with kombu's prefix and sizes every one of the five services (the
    # broker URL secret is a stand-in in moto: tests/unit/test_template_sqs_broker.py checks it)
    assert (config.broker_transport, config.sqs_queue_prefix) == ("sqs", "airflow-dev-")
    assert [(q.queue, q.service, q.min_workers, q.max_workers) for q in config.queues] == [
        (n, f"airflow-dev-worker-{n}", i % 2, 3 + i) for i, n in enumerate(NAMES)
    ]


def test_the_sqs_stack_has_no_elasticache_and_a_results_database_secret(
    stack: tuple[dict[str, Any], set[str]],
) -> None:
    # GIVEN the stack created with CeleryBroker=sqs
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    assert cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    pages = cloudformation.get_paginator("list_stack_resources").paginate(StackName=STACK)
    with warnings.catch_warnings():  # moto re-reads the resources and warns about types it lacks
        warnings.simplefilter("ignore")
        summaries = [r for page in pages for r in page["StackResourceSummaries"]]
    created = {r["LogicalResourceId"]: r["ResourceType"] for r in summaries}
    # THEN no ElastiCache resource, Redis security group or Redis token was created
    assert not [i for i, t in created.items() if t.startswith("AWS::ElastiCache::")]
    assert not {"Broker", "BrokerSubnetGroup", "RedisSecurityGroup", "BrokerAuthTokenSecret"} & set(created)
    # AND the results-only role's credentials secret exists (a stand-in in moto, whose
    # Secrets Manager is not driven by CloudFormation here; tests/unit/test_template_sqs_broker.py
    # checks its generated JSON keys)
    assert created["ResultsDatabaseCredentialsSecret"] == "AWS::SecretsManager::Secret"
    (physical,) = [
        r["PhysicalResourceId"]
        for r in summaries
        if r["LogicalResourceId"] == "ResultsDatabaseCredentialsSecret"
    ]
    # AND the migrate job's task definition carries the database's name and that secret's password
    ecs = boto3.client("ecs", region_name="us-east-1")
    (container,) = ecs.describe_task_definition(taskDefinition="airflow-dev-db-migrate")["taskDefinition"][
        "containerDefinitions"
    ]
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["AIRFLOW_CELERY_RESULTS_DATABASE"] == "celery_results"
    secrets = {s["name"]: s["valueFrom"] for s in container["secrets"]}
    assert secrets["AIRFLOW_CELERY_RESULTS_DB_PASSWORD"] == f"{physical}:password::"
