"""The optional components in template.yaml: Flower (off by default, only through the load
balancer under /flower, ingress from the load balancer only, created at 0 tasks) and the
AwsEcsExecutor beside Celery (off by default; least-privilege IAM on the scheduler).

Conditions are evaluated with the container harness's resolver (tests/containers/taskdefs.py),
the same one that turns the template's task definitions into containers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_control_plane.service_counts import decide_counts
from tests.containers.taskdefs import Resolver
from tests.static import rules
from tests.static.tools import load_template

pytestmark = pytest.mark.unit

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
OPT_IN = "yes-the-admin-password-crosses-the-network-unencrypted"
CERT = "arn:aws:acm:us-east-1:123456789012:certificate/0f0e0d0c-0b0a-0908-0706-050403020100"
FLOWER_RESOURCES = {
    "FlowerSecret",
    "FlowerSecurityGroup",
    "LoadBalancerToFlowerEgress",
    "FlowerTargetGroup",
    "FlowerHttpsRule",
    "FlowerHttpRule",
    "FlowerRouteReady",
    "FlowerTaskDefinition",
    "FlowerService",
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def created(template: dict[str, Any], **parameters: str) -> set[str]:
    """The logical ids a stack with these parameters creates."""
    resolver = Resolver(template, {"AllowedIngressCidr": "203.0.113.0/24", **parameters})
    return {
        logical_id
        for logical_id, resource in template["Resources"].items()
        if "Condition" not in resource or resolver.condition(resource["Condition"])
    }


def test_both_options_are_off_by_default_and_create_nothing(template: dict[str, Any]) -> None:
    # GIVEN the parameters THEN both options default to "false"
    params = template["Parameters"]
    assert params["FlowerEnabled"]["Default"] == "false"
    assert params["EcsExecutorEnabled"]["Default"] == "false"
    # AND with the defaults no Flower or ECS-executor resource is created
    default = created(template, CertificateArn=CERT)
    assert not default & (FLOWER_RESOURCES | {"EcsExecutorTaskDefinition"})
    # AND every Flower resource carries a Flower condition (none can appear on its own)
    for logical_id in FLOWER_RESOURCES:
        assert template["Resources"][logical_id]["Condition"].startswith("Flower"), logical_id
    assert template["Resources"]["EcsExecutorTaskDefinition"]["Condition"] == "EcsExecutorOn"


def test_flower_is_routed_on_https_only_when_a_certificate_is_given(template: dict[str, Any]) -> None:
    # GIVEN Flower on and a certificate
    with_cert = created(template, FlowerEnabled="true", CertificateArn=CERT)
    # THEN /flower is routed on the HTTPS listener and never on port 80 (which only redirects)
    assert {"FlowerHttpsRule", "FlowerService", "FlowerSecret"} <= with_cert
    assert "FlowerHttpRule" not in with_cert
    # AND on plain HTTP only with the loudly named opt-in that the UI needs too
    plain = created(template, FlowerEnabled="true", InsecurePlainHttpUi=OPT_IN)
    assert "FlowerHttpRule" in plain
    assert "FlowerHttpsRule" not in plain


@pytest.mark.parametrize(
    ("rule_id", "listener"), [("FlowerHttpsRule", "HttpsListener"), ("FlowerHttpRule", "HttpListener")]
)
def test_the_listener_rule_forwards_only_the_flower_path_to_flower(
    template: dict[str, Any], rule_id: str, listener: str
) -> None:
    rule = template["Resources"][rule_id]["Properties"]
    assert rule["ListenerArn"] == {"Ref": listener}
    (condition,) = rule["Conditions"]
    assert condition == {"Field": "path-pattern", "PathPatternConfig": {"Values": ["/flower", "/flower/*"]}}
    assert rule["Actions"] == [{"Type": "forward", "TargetGroupArn": {"Ref": "FlowerTargetGroup"}}]
    # AND it never outranks the block of the Task Execution API (priority 1 on each listener)
    assert rule["Priority"] > 1
    # AND the target group checks Flower's own health path under the prefix
    group = template["Resources"]["FlowerTargetGroup"]["Properties"]
    assert (group["Port"], group["HealthCheckPath"], group["TargetType"]) == (
        5555,
        "/flower/healthcheck",
        "ip",
    )


def test_flowers_security_group_accepts_the_load_balancer_only(template: dict[str, Any]) -> None:
    # GIVEN Flower's security group THEN its only ingress is port 5555 from the load balancer's group
    group = template["Resources"]["FlowerSecurityGroup"]["Properties"]
    assert group["SecurityGroupIngress"] == [
        {
            "IpProtocol": "tcp",
            "FromPort": 5555,
            "ToPort": 5555,
            "SourceSecurityGroupId": {"Ref": "LoadBalancerSecurityGroup"},
            "Description": "from the load balancer only",
        }
    ]
    # AND no separate ingress resource opens it to anything else
    for logical_id, resource in rules.resources(template, "AWS::EC2::SecurityGroupIngress"):
        assert resource["Properties"]["GroupId"] != {"Ref": "FlowerSecurityGroup"}, logical_id
    # AND the load balancer may reach it (its egress is closed except for named targets)
    egress = template["Resources"]["LoadBalancerToFlowerEgress"]["Properties"]
    assert egress["DestinationSecurityGroupId"] == {"Ref": "FlowerSecurityGroup"}
    assert (egress["FromPort"], egress["ToPort"]) == (5555, 5555)
    # AND the service is private, behind that group and its target group
    service = template["Resources"]["FlowerService"]["Properties"]
    network = service["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "DISABLED"
    assert {"Ref": "FlowerSecurityGroup"} in network["SecurityGroups"]
    assert service["LoadBalancers"] == [
        {"ContainerName": "flower", "ContainerPort": 5555, "TargetGroupArn": {"Ref": "FlowerTargetGroup"}}
    ]


def test_flower_starts_at_zero_tasks_and_its_count_survives_deploys(template: dict[str, Any]) -> None:
    # GIVEN the Flower service THEN its count comes from the ServiceCounts custom resource
    service = template["Resources"]["FlowerService"]["Properties"]
    assert service["DesiredCount"] == {"Fn::GetAtt": ["ServiceCounts", "Flower"]}
    services = template["Resources"]["ServiceCounts"]["Properties"]["Services"]
    name = Resolver(template, {"FlowerEnabled": "true"}).resolve(services["Flower"])
    assert name == Resolver(template, {"FlowerEnabled": "true"}).resolve(service["ServiceName"])
    # AND that resource answers 0 for a service that does not exist yet, so a first deploy starts nothing
    assert decide_counts("Create", {"Flower": name}, {}).counts == {"Flower": 0}


def test_flower_gets_the_broker_and_its_basic_auth_pair_and_nothing_else(template: dict[str, Any]) -> None:
    definition = template["Resources"]["FlowerTaskDefinition"]["Properties"]
    assert "TaskRoleArn" not in definition  # no AWS permission at all
    (container,) = definition["ContainerDefinitions"]
    assert container["Command"] == ["flower"]
    secrets = {s["Name"]: s["ValueFrom"] for s in container["Secrets"]}
    assert secrets == {
        "AIRFLOW__CELERY__BROKER_URL": {"Ref": "BrokerUrlSecret"},
        "AIRFLOW_FLOWER_USERNAME": {"Fn::Sub": "${FlowerSecret}:username::"},
        "AIRFLOW_FLOWER_PASSWORD": {"Fn::Sub": "${FlowerSecret}:password::"},
    }
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env["AIRFLOW_FLOWER_URL_PREFIX"] == "/flower"
    assert container["HealthCheck"]["Command"][-2:] == ["healthcheck", "flower"]
    # AND the generated password cannot hold the separators of Flower's basic-auth setting
    generated = template["Resources"]["FlowerSecret"]["Properties"]["GenerateSecretString"]
    assert generated["ExcludePunctuation"] is True
    assert json.loads(generated["SecretStringTemplate"]) == {"username": "flower"}


@pytest.mark.parametrize("machine", ["BringUpStateMachine", "HibernateStateMachine"])
def test_bring_up_and_hibernate_address_flower_only_when_it_exists(
    template: dict[str, Any], machine: str
) -> None:
    substitution = template["Resources"][machine]["Properties"]["DefinitionSubstitutions"]["AddOnServices"]
    off = Resolver(template, {}).resolve(substitution)
    on = Resolver(template, {"FlowerEnabled": "true"}).resolve(substitution)
    assert off == "[]"
    assert on == "[{'serviceName': '<FlowerService.Name>', 'desired': 1}]"


def test_the_executor_list_puts_celery_first_and_the_ecs_executor_only_when_enabled(
    template: dict[str, Any],
) -> None:
    for logical_id in ("ApiServerTaskDefinition", "SchedulerTaskDefinition", "DagProcessorTaskDefinition"):
        (container,) = template["Resources"][logical_id]["Properties"]["ContainerDefinitions"]
        value = {e["Name"]: e["Value"] for e in container["Environment"]}["AIRFLOW__CORE__EXECUTOR"]
        assert Resolver(template, {}).resolve(value) == "CeleryExecutor", logical_id
        on = Resolver(template, {"EcsExecutorEnabled": "true"}).resolve(value)
        # Celery first: it stays the default executor of every task that names none
        assert on.split(",") == [
            "CeleryExecutor",
            "airflow.providers.amazon.aws.executors.ecs.ecs_executor.AwsEcsExecutor",
        ], logical_id


def test_the_ecs_task_definition_runs_only_the_executors_command(template: dict[str, Any]) -> None:
    definition = template["Resources"]["EcsExecutorTaskDefinition"]["Properties"]
    (container,) = definition["ContainerDefinitions"]
    assert container["Name"] == "ecs-task"
    assert container["EntryPoint"][-2:] == ["/opt/airflow-image/entrypoint.py", "ecs-task"]
    assert "Command" not in container  # the executor's override supplies it
    assert "Secrets" not in container  # the workload carries its own API token
    scheduler = template["Resources"]["SchedulerTaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    env = {e["Name"]: e["Value"] for e in scheduler["Environment"]}
    assert env["AIRFLOW__AWS_ECS_EXECUTOR__CONTAINER_NAME"] == container["Name"]
    assert env["AIRFLOW__AWS_ECS_EXECUTOR__TASK_DEFINITION"] == {
        "Fn::If": ["EcsExecutorOn", {"Ref": "EcsExecutorTaskDefinition"}, ""]
    }


def scheduler_statements(template: dict[str, Any], **parameters: str) -> dict[str, dict[str, Any]]:
    """The scheduler task role's statements a stack with these parameters gets, by Sid."""
    resolver = Resolver(template, parameters)
    (policy,) = template["Resources"]["SchedulerTaskRole"]["Properties"]["Policies"]
    found = {}
    for statement in policy["PolicyDocument"]["Statement"]:
        if "Fn::If" in statement:
            condition, yes, no = statement["Fn::If"]
            statement = yes if resolver.condition(condition) else no
        if statement == {"Ref": "AWS::NoValue"}:
            continue
        found[statement["Sid"]] = resolver.resolve(statement)
    return found


def test_the_scheduler_may_run_watch_and_stop_only_its_own_ecs_tasks(template: dict[str, Any]) -> None:
    # GIVEN the scheduler's task role with the executor on
    by_sid = scheduler_statements(template, EcsExecutorEnabled="true")
    run = by_sid["RunEcsExecutorTasks"]
    # THEN RunTask is allowed for the one task family, in this cluster only
    assert run["Action"] == "ecs:RunTask"
    assert run["Resource"] == "arn:aws:ecs:us-east-1:123456789012:task-definition/airflow-dev-ecs-task:*"
    assert run["Condition"] == {"ArnEquals": {"ecs:cluster": "<Cluster.Arn>"}}
    watch = by_sid["WatchEcsExecutorTasks"]
    assert sorted(watch["Action"]) == ["ecs:DescribeTasks", "ecs:StopTask"]
    assert watch["Resource"] == "arn:aws:ecs:us-east-1:123456789012:task/<Cluster>/*"
    assert watch["Condition"] == {"ArnEquals": {"ecs:cluster": "<Cluster.Arn>"}}
    # AND it may pass exactly the ECS task's two roles, to ECS tasks only
    passing = by_sid["PassEcsExecutorTaskRoles"]
    assert passing["Action"] == "iam:PassRole"
    assert passing["Resource"] == ["<TaskRole.Arn>", "<TaskExecutionRole.Arn>"]
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}
    definition = template["Resources"]["EcsExecutorTaskDefinition"]["Properties"]
    assert definition["TaskRoleArn"] == {"Fn::GetAtt": ["TaskRole", "Arn"]}
    assert definition["ExecutionRoleArn"] == {"Fn::GetAtt": ["TaskExecutionRole", "Arn"]}
    # AND with the executor off the scheduler has none of them (ECS or PassRole)
    off = scheduler_statements(template)
    assert set(by_sid) - set(off) == {
        "RunEcsExecutorTasks",
        "WatchEcsExecutorTasks",
        "PassEcsExecutorTaskRoles",
    }
    assert "iam:PassRole" not in json.dumps(off)
