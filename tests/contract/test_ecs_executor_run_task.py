"""The AwsEcsExecutor's RunTask call, offline: the provider's own code (in the Airflow runtime)
builds the arguments from the scheduler environment that template.yaml gives it with
EcsExecutorEnabled=true; they are validated against botocore's ECS model and run in moto
against the task definition registered from the template, in a VPC with the template's two
private subnets and the Airflow security group.

What this cannot show: the Fargate task actually starting the image (no ECS here). The
command it would run is fed to the image entrypoint's ``ecs-task`` role, which accepts it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.exceptions import ParamValidationError
from botocore.validate import validate_parameters
from moto import mock_aws

from tests.conftest import AirflowRuntime
from tests.containers.taskdefs import Resolver
from tests.static.tools import load_template
from tests.unit.test_image_entrypoint import ep

pytestmark = pytest.mark.contract

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
HELPER = Path(__file__).with_name("ecs_executor_kwargs.py")
PARAMETERS = {
    "EcsExecutorEnabled": "true",
    "AirflowImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/airflow:3.3.2",
}
REGION = "us-east-1"
# CloudFormation property names whose boto3 spelling is not the lower-camel form.
_BOTO_NAMES = {
    "EFSVolumeConfiguration": "efsVolumeConfiguration",
    "FilesystemId": "fileSystemId",
    "IAM": "iam",
}


def boto_shape(node: Any) -> Any:
    """A CloudFormation ECS property tree in boto3's spelling (log driver options untouched)."""
    if isinstance(node, list):
        return [boto_shape(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        name = _BOTO_NAMES.get(key, key[:1].lower() + key[1:])
        out[name] = value if key == "Options" else boto_shape(value)
    return out


def model_input(operation: str) -> Any:
    return botocore.session.get_session().get_service_model("ecs").operation_model(operation).input_shape


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A VPC with the template's two private subnets and the Airflow group, the cluster, and
    the two roles the ECS task definition names."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.60.0.0/16")["Vpc"]["VpcId"]
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": True})
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        subnets = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.60.{n}.0/24")["Subnet"]["SubnetId"] for n in (1, 2)
        ]
        sg = ec2.create_security_group(GroupName="airflow", Description="Airflow tasks", VpcId=vpc)["GroupId"]
        iam = boto3.client("iam", region_name=REGION)
        trust = json.dumps({"Version": "2012-10-17", "Statement": []})
        roles = {
            name: iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
            for name in ("TaskRole", "TaskExecutionRole")
        }
        boto3.client("ecs", region_name=REGION).create_cluster(clusterName="airflow-dev")
        yield {
            "<PrivateSubnet1>": subnets[0],
            "<PrivateSubnet2>": subnets[1],
            "<AirflowSecurityGroup>": sg,
            "<Cluster>": "airflow-dev",
            "<TaskRole.Arn>": roles["TaskRole"],
            "<TaskExecutionRole.Arn>": roles["TaskExecutionRole"],
        }


def localize(value: Any, names: dict[str, str]) -> Any:
    text = json.dumps(value)
    for placeholder, real in names.items():
        text = text.replace(placeholder, real)
    assert "<" not in text.replace("<<", ""), f"unresolved resource in {text[:300]}"
    return json.loads(text)


def register_from_template(
    template: dict[str, Any],
    names: dict[str, str],
    ecs: Any = None,
    parameters: dict[str, str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Register EcsExecutorTaskDefinition in moto (``ecs``: a client, by default the mocked
    one), as the template declares it; return its ARN and the resolved container definition."""
    resolver = Resolver(template, parameters or PARAMETERS)
    properties = resolver.resolve(template["Resources"]["EcsExecutorTaskDefinition"]["Properties"])
    # The EFS ids and the log group are not part of what RunTask checks; moto needs none of them real.
    request = boto_shape(
        localize(
            properties,
            {
                **names,
                "<DagsFileSystem>": "fs-12345678",
                "<DagsAccessPoint>": "fsap-12345678",
                "<AirflowLogGroup>": "airflow",
                "<TaskLogsBucket>": "airflow-dev-task-logs",
            },
        )
    )
    validate_parameters(request, model_input("RegisterTaskDefinition"))
    # moto 5.2.5 sums container-level cpu/memory when it places a task (Fargate does not need
    # them): give the one container the task's size, after the model check of the template's shape.
    placed = json.loads(json.dumps(request))
    placed["containerDefinitions"][0].update(cpu=int(request["cpu"]), memory=int(request["memory"]))
    ecs = ecs or boto3.client("ecs", region_name=REGION)
    arn = ecs.register_task_definition(**placed)["taskDefinition"]["taskDefinitionArn"]
    return str(arn), request["containerDefinitions"][0]


def executor_run_task_kwargs(
    runtime: AirflowRuntime,
    template: dict[str, Any],
    names: dict[str, str],
    tmp_path: Path,
    executor_configs: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Ask the provider's code, with the scheduler's environment from the template."""
    resolver = Resolver(template, PARAMETERS)
    (scheduler,) = template["Resources"]["SchedulerTaskDefinition"]["Properties"]["ContainerDefinitions"]
    env = {e["Name"]: str(resolver.resolve(e["Value"])) for e in scheduler["Environment"]}
    wanted = {
        k: v
        for k, v in env.items()
        if k.startswith("AIRFLOW__AWS_ECS_EXECUTOR__")
        or k in ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW_CONN_AWS_DEFAULT")
    }
    child = {
        **localize(wanted, names),
        "PATH": f"{runtime.venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }
    result = subprocess.run(
        [str(runtime.python), str(HELPER)],
        input=json.dumps({"executor_configs": executor_configs}),
        env=child,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    return list(json.loads(last))


EXECUTOR_CONFIGS: list[dict[str, Any]] = [
    {},
    # A task asking for a bigger Fargate task than the definition's default
    {"overrides": {"cpu": "2048", "memory": "8192"}},
]


def test_the_executors_run_task_call_fits_botocores_model_and_runs_in_moto(
    airflow_runtime: AirflowRuntime,
    template: dict[str, Any],
    aws: dict[str, str],
    tmp_path: Path,
) -> None:
    # GIVEN the ECS task definition registered from the template
    arn, container = register_from_template(template, aws)
    names = {**aws, "<EcsExecutorTaskDefinition>": arn}
    # WHEN the provider builds RunTask for one task instance from the scheduler's settings,
    # without and with a task's own executor_config
    results = executor_run_task_kwargs(airflow_runtime, template, names, tmp_path, EXECUTOR_CONFIGS)
    for executor_config, built in zip(EXECUTOR_CONFIGS, results, strict=True):
        check_run_task(arn, container, aws, executor_config, built)


def check_run_task(
    arn: str,
    container: dict[str, Any],
    aws: dict[str, str],
    executor_config: dict[str, Any],
    built: dict[str, Any],
) -> None:
    kwargs, command = built["run_task_kwargs"], built["command"]
    # THEN botocore's ECS model accepts it as it is
    try:
        validate_parameters(kwargs, model_input("RunTask"))
    except ParamValidationError as exc:  # pragma: no cover - the failure is the message
        pytest.fail(f"RunTask arguments do not fit the ECS model: {exc}")
    # AND it names the template's task definition, cluster, network and container
    assert kwargs["taskDefinition"] == arn
    assert kwargs["cluster"] == "airflow-dev"
    assert kwargs["launchType"] == "FARGATE"
    network = kwargs["networkConfiguration"]["awsvpcConfiguration"]
    assert network == {
        "subnets": [aws["<PrivateSubnet1>"], aws["<PrivateSubnet2>"]],
        "securityGroups": [aws["<AirflowSecurityGroup>"]],
        "assignPublicIp": "DISABLED",
    }
    (override,) = kwargs["overrides"]["containerOverrides"]
    assert override["name"] == container["name"] == "ecs-task"
    assert override["command"] == command
    for key, value in executor_config.get("overrides", {}).items():
        assert kwargs["overrides"][key] == value
    # AND moto runs it: one task of that definition with the command in its override
    ecs = boto3.client("ecs", region_name=REGION)
    (task,) = ecs.run_task(**kwargs)["tasks"]
    assert task["taskDefinitionArn"] == arn
    assert task["overrides"]["containerOverrides"][0]["command"] == command
    # AND the executor can watch and stop it with the calls the scheduler's role allows
    (described,) = ecs.describe_tasks(cluster="airflow-dev", tasks=[task["taskArn"]])["tasks"]
    assert described["taskArn"] == task["taskArn"]
    ecs.stop_task(cluster="airflow-dev", task=task["taskArn"], reason="test")
    # AND the container's entry point role accepts exactly that command, with the task
    # definition's own environment (no database, the Task Execution API)
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert container["entryPoint"][-1] == "ecs-task"
    plan = ep.plan("ecs-task", command, env)
    assert plan.exec_argv == tuple(command)
    assert "isolated_fargate_sample.heavy_step" in plan.reason


def test_the_task_definition_from_the_template_fits_botocores_model(
    template: dict[str, Any], aws: dict[str, str]
) -> None:
    arn, container = register_from_template(template, aws)
    described = boto3.client("ecs", region_name=REGION).describe_task_definition(taskDefinition=arn)[
        "taskDefinition"
    ]
    assert described["family"] == "airflow-dev-ecs-task"
    assert described["requiresCompatibilities"] == ["FARGATE"]
    assert described["networkMode"] == "awsvpc"
    assert (described["cpu"], described["memory"]) == ("1024", "2048")
    assert described["taskRoleArn"] == aws["<TaskRole.Arn>"]
    assert described["executionRoleArn"] == aws["<TaskExecutionRole.Arn>"]
    assert os.path.basename(container["entryPoint"][-2]) == "entrypoint.py"
