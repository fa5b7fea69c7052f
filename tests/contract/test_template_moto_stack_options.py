"""The stack with both optional components on (FlowerEnabled, EcsExecutorEnabled) created in
moto's CloudFormation, with the same adaptations as test_template_moto_stack.py: every Ref,
GetAtt, Sub and If of the Flower and ECS-executor resources resolves, in dependency order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.contract.test_template_moto_stack import IMAGE, STACK, created_stack

pytestmark = pytest.mark.contract


@pytest.fixture(scope="module")
def stack_with_options(translated: dict[str, Any]) -> Iterator[tuple[dict[str, Any], set[str]]]:
    with created_stack(translated, {"FlowerEnabled": "true", "EcsExecutorEnabled": "true"}) as created:
        yield created


def test_flower_and_the_ecs_task_definition_are_created_and_flower_starts_at_zero(
    stack_with_options: tuple[dict[str, Any], set[str]],
) -> None:
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    assert cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    created = {
        r["LogicalResourceId"]
        for r in cloudformation.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
    }
    # THEN the Flower resources exist (HTTPS rule, since the stack has a certificate; no port-80 rule)
    assert {
        "FlowerService",
        "FlowerTaskDefinition",
        "FlowerSecret",
        "FlowerSecurityGroup",
        "FlowerHttpsRule",
    } <= created
    assert "FlowerHttpRule" not in created
    assert "EcsExecutorTaskDefinition" in created
    ecs = boto3.client("ecs", region_name="us-east-1")
    (flower,) = ecs.describe_services(cluster=STACK, services=["airflow-dev-flower"])["services"]
    assert flower["desiredCount"] == 0
    task = ecs.describe_task_definition(taskDefinition=flower["taskDefinition"])["taskDefinition"]
    (container,) = task["containerDefinitions"]
    assert container["image"] == IMAGE
    assert container["command"] == ["flower"]
    assert {s["name"] for s in container["secrets"]} == {
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW_FLOWER_USERNAME",
        "AIRFLOW_FLOWER_PASSWORD",
    }
    ecs_task = ecs.describe_task_definition(taskDefinition="airflow-dev-ecs-task")["taskDefinition"]
    assert ecs_task["containerDefinitions"][0]["entryPoint"][-1] == "ecs-task"
    # AND the scheduler is told the executor list and that task definition
    scheduler_service = ecs.describe_services(cluster=STACK, services=["airflow-dev-scheduler"])["services"][
        0
    ]
    scheduler = ecs.describe_task_definition(taskDefinition=scheduler_service["taskDefinition"])[
        "taskDefinition"
    ]
    env = {e["name"]: e["value"] for e in scheduler["containerDefinitions"][0]["environment"]}
    assert env["AIRFLOW__CORE__EXECUTOR"].endswith(
        ",airflow.providers.amazon.aws.executors.ecs.ecs_executor.AwsEcsExecutor"
    )
    assert env["AIRFLOW__AWS_ECS_EXECUTOR__TASK_DEFINITION"] == ecs_task["taskDefinitionArn"]
