"""The AwsEcsExecutor on containers: the scheduler container's executor calls an ECS API over
HTTP, and the task instance it hands over runs in the template's ``<env>-ecs-task`` container.

GIVEN the template's task definitions resolved with ``EcsExecutorEnabled=true`` and the stack's
containers running (migrate, create-user, api-server, scheduler, dag-processor, one Celery
worker), and moto's ECS served over HTTP in this process (``ThreadedMotoServer`` shares moto's
in-process backends, so :mod:`tests.containers.ecs_bridge` applies to calls that arrive over
HTTP): a VPC with two private subnets and the Airflow security group, the cluster, and the
template's EcsExecutorTaskDefinition registered and bridged to its container;

WHEN a run of ``dags/isolated_task.py`` is triggered;

THEN prepare and check run on the Celery worker, and heavy_step reaches the scheduler's
AwsEcsExecutor, whose RunTask (the template's task definition, subnets, security group and the
executor's command override) starts the real one-off container; DescribeTasks reports its real
exit, and the run succeeds with heavy_step on its first try, having run in that container.
And when the container exits non-zero (the second test), the executor's DescribeTasks reads that
exit (moto alone reports 0 for every container), it runs the task again up to its attempts, and
the try fails; the retry succeeds in a new container.

The scheduler gets three test-only variables: ``AWS_ENDPOINT_URL`` (the moto server; every AWS
call it makes stays in the emulated account) and dummy credentials, which its task role gives
it on ECS. Everything else is the template's.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from airflow_control_plane.poll import poll_until
from tests.conftest import REPO_ROOT
from tests.containers.docker import RunningContainer
from tests.containers.ecs_bridge import EcsBridge, bridged
from tests.containers.stack import Stack
from tests.containers.taskdefs import ContainerSpec
from tests.contract.test_ecs_executor_run_task import register_from_template
from tests.harness import request_json
from tests.static.tools import load_template

pytestmark = pytest.mark.containers

PARAMETERS = {"EcsExecutorEnabled": "true"}
REGION = "us-east-1"
CLUSTER = "airflow-dev"
WORKLOAD_COMMAND = ["python", "-m", "airflow.sdk.execution_time.execute_workload", "--json-string"]
SERVICES = ("api-server", "scheduler", "dag-processor", "celery-worker")
ONE_OFF_TIMEOUT_S = 600
RUN_STATE = "SELECT state FROM dag_run WHERE dag_id = 'isolated_task' AND run_id = :r"


@dataclass
class EcsExecutorStack:
    stack: Stack
    bridge: EcsBridge
    names: dict[str, str]  # template placeholder -> the emulated account's resource
    task_definition_arn: str
    services: dict[str, RunningContainer]


def _client(service: str, url: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _account(url: str) -> dict[str, str]:
    """What the template creates around the ECS executor, in the emulated account."""
    ec2 = _client("ec2", url)
    vpc = ec2.create_vpc(CidrBlock="10.60.0.0/16")["Vpc"]["VpcId"]
    # moto's awsvpc tasks need DNS hostnames on the VPC (their ENI's private DNS name).
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": True})
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.60.{n}.0/24")["Subnet"]["SubnetId"] for n in (1, 2)
    ]
    group = ec2.create_security_group(GroupName="airflow", Description="Airflow tasks", VpcId=vpc)["GroupId"]
    iam = _client("iam", url)
    trust = json.dumps({"Version": "2012-10-17", "Statement": []})
    roles = {
        name: iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
        for name in ("TaskRole", "TaskExecutionRole")
    }
    _client("ecs", url).create_cluster(clusterName=CLUSTER)
    return {
        "<PrivateSubnet1>": subnets[0],
        "<PrivateSubnet2>": subnets[1],
        "<AirflowSecurityGroup>": group,
        "<Cluster>": CLUSTER,
        "<TaskRole.Arn>": roles["TaskRole"],
        "<TaskExecutionRole.Arn>": roles["TaskExecutionRole"],
    }


def _localized(spec: ContainerSpec, names: dict[str, str]) -> ContainerSpec:
    """The spec with the emulated account's resources where the template names its own."""
    environment = {}
    for key, value in spec.environment.items():
        for placeholder, real in names.items():
            value = value.replace(placeholder, real)
        environment[key] = value
    unresolved = {
        k: v for k, v in environment.items() if k.startswith("AIRFLOW__AWS_ECS_EXECUTOR__") and "<" in v
    }
    assert not unresolved, f"executor settings naming resources the emulated account lacks: {unresolved}"
    return replace(spec, environment=environment)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    # One line per request otherwise: the executor polls DescribeTasks every few seconds.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def env(stack_factory: Callable[..., Stack], moto_url: str) -> Iterator[EcsExecutorStack]:
    stack = stack_factory(PARAMETERS)
    (ecs_task,) = [s for s in stack.specs if s.task_definition == "EcsExecutorTaskDefinition"]
    names = _account(moto_url)
    arn, _container = register_from_template(
        load_template(REPO_ROOT / "template.yaml"),
        names,
        ecs=_client("ecs", moto_url),
        parameters={**PARAMETERS, "AirflowImageUri": stack.specs[0].image},
    )
    names["<EcsExecutorTaskDefinition>"] = arn
    bridge = EcsBridge(ecs=stack.ecs, task_definitions={arn: ecs_task}, services={}, cluster=CLUSTER)
    with bridged(bridge):
        for role in ("db-migrate", "create-user"):
            container = stack.ecs.run(stack.spec(role))
            code = container.wait_exit(ONE_OFF_TIMEOUT_S)
            assert code == 0, f"{role} exited {code}:\n{container.logs()[-4000:]}"
        services = {}
        for role in SERVICES:
            spec = stack.spec(role)
            extra: dict[str, str] = {}
            if role == "scheduler":
                spec = _localized(spec, names)
                extra = {
                    "AWS_ENDPOINT_URL": moto_url,
                    "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing",
                }
            services[role] = stack.ecs.run(spec, extra_env=extra)
        services["api-server"].wait_healthy(300)
        yield EcsExecutorStack(stack, bridge, names, arn, services)


def _api(stack: Stack, path: str, body: object | None = None, method: str = "GET", token: str = "") -> Any:
    return request_json(stack.base_url + path, method=method, body=body, token=token)


def _trigger(stack: Stack, dag_id: str) -> str:
    token = str(
        _api(stack, "/auth/token", {"username": "admin", "password": stack.admin_password}, "POST")[
            "access_token"
        ]
    )

    def parsed() -> bool:
        try:
            _api(stack, f"/api/v2/dags/{dag_id}", token=token)
        except urllib.error.HTTPError:
            return False
        return True

    poll_until(parsed, timeout_s=300, interval_s=3, what=f"{dag_id} to be parsed")
    _api(stack, f"/api/v2/dags/{dag_id}", {"is_paused": False}, "PATCH", token)
    run = _api(stack, f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None}, "POST", token)
    return str(run["dag_run_id"])


def _query(stack: Stack, sql: str, **params: Any) -> list[list[Any]]:
    connection = stack.database.connect()
    try:
        return list(connection.run(sql, **params))
    finally:
        connection.close()


def _ecs_tasks(env: EcsExecutorStack, run_id: str) -> list[tuple[int, Any, RunningContainer]]:
    """(try number, moto's task, its container) of every RunTask the bridge saw for this run,
    in the order they were started (the try number is the workload's, in the command override)."""
    found = []
    for task_id, task in env.bridge.task_models.items():
        (override,) = task.overrides["containerOverrides"]
        ti = json.loads(override["command"][-1])["ti"]
        if ti["run_id"] == run_id:
            found.append((int(ti["try_number"]), task, env.bridge.tasks[task_id]))
    return found


def _wait_finished(env: EcsExecutorStack, run_id: str, timeout_s: float) -> None:
    def finished() -> bool:
        rows = _query(env.stack, RUN_STATE, r=run_id)
        return bool(rows) and rows[0][0] in ("success", "failed")

    try:
        poll_until(finished, timeout_s=timeout_s, interval_s=5, what="the isolated_task run to finish")
    except TimeoutError as exc:
        scheduler = env.services["scheduler"].logs()[-6000:]
        raise AssertionError(f"{exc}\nscheduler:\n{scheduler}") from exc


def _task_instances(stack: Stack, run_id: str) -> dict[str, tuple[str, int, str | None]]:
    rows = _query(
        stack,
        "SELECT task_id, state, try_number, executor FROM task_instance"
        " WHERE dag_id = 'isolated_task' AND run_id = :r",
        r=run_id,
    )
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


@pytest.mark.timeout(1200)
def test_isolated_task_runs_its_heavy_step_in_a_container_started_by_the_executors_run_task(
    env: EcsExecutorStack,
) -> None:
    stack = env.stack
    # WHEN a run of isolated_task is triggered
    started = time.monotonic()
    run_id = _trigger(stack, "isolated_task")

    _wait_finished(env, run_id, 900)
    print(f"isolated_task run finished {time.monotonic() - started:.0f} s after the trigger")

    # THEN the run succeeded, every task on its first try, heavy_step through the AwsEcsExecutor
    tis = _task_instances(stack, run_id)
    ecs_logs = "\n".join(c.logs()[-3000:] for _, _, c in _ecs_tasks(env, run_id))
    assert tis["heavy_step"] == ("success", 1, "AwsEcsExecutor"), (tis, ecs_logs)
    assert {tis["prepare"][:2], tis["check"][:2]} == {("success", 1)}, tis
    assert {tis["prepare"][2], tis["check"][2]} <= {None, "CeleryExecutor"}, tis
    assert _query(stack, RUN_STATE, r=run_id) == [["success"]]

    # AND the executor's health check at start-up passed against the ECS API
    assert "ECS Executor health check has succeeded" in env.services["scheduler"].logs()

    # AND exactly one RunTask reached the bridge: the template's task definition, its subnets and
    # security group, Fargate, and the executor's command for heavy_step, try 1
    ((_try, task, container),) = _ecs_tasks(env, run_id)
    assert task.task_definition_arn == env.task_definition_arn
    assert task.launch_type == "FARGATE"
    assert task.network_configuration["awsvpcConfiguration"] == {
        "subnets": [env.names["<PrivateSubnet1>"], env.names["<PrivateSubnet2>"]],
        "securityGroups": [env.names["<AirflowSecurityGroup>"]],
        "assignPublicIp": "DISABLED",
    }
    (override,) = task.overrides["containerOverrides"]
    assert override["name"] == "ecs-task"
    command = override["command"]
    assert command[:-1] == WORKLOAD_COMMAND
    ti = json.loads(command[-1])["ti"]
    assert (ti["dag_id"], ti["task_id"], ti["run_id"], ti["try_number"]) == (
        "isolated_task",
        "heavy_step",
        run_id,
        1,
    )
    assert {"name": "AIRFLOW_IS_EXECUTOR_CONTAINER", "value": "true"} in override.get("environment", [])

    # AND that RunTask started the template's ecs-task container with that command after its
    # entry point
    assert container.spec.task_definition == "EcsExecutorTaskDefinition"
    config = container.inspect()["Config"]
    assert isinstance(config, dict)
    assert [*config["Entrypoint"], *config["Cmd"]] == [*container.spec.entry_point, *command]
    # AND the executor's DescribeTasks saw it stop with its real exit code, 0. (The task reports
    # its own state through the Task Execution API, so the run can end before the executor's
    # next sync reads the container's exit: wait for that sync.)
    poll_until(
        lambda: task.desired_status == "STOPPED",
        timeout_s=120,
        interval_s=1,
        what="the executor's DescribeTasks to report the task stopped",
    )
    assert env.bridge.one_off_exit_codes() == [0]  # nothing else went through RunTask
    assert [c.exitCode for c in task.containers] == [0]

    # AND heavy_step said it ran in its own task (the executor's override, read inside the task)
    (xcom,) = _query(
        stack,
        "SELECT value FROM xcom WHERE dag_id = 'isolated_task' AND run_id = :r"
        " AND task_id = 'heavy_step' AND key = 'return_value'",
        r=run_id,
    )
    value = xcom[0] if isinstance(xcom[0], dict) else json.loads(xcom[0])
    assert value["where"] == "own Fargate task", value


@pytest.mark.timeout(1200)
def test_a_task_container_exiting_non_zero_fails_the_try_after_the_executors_attempts(
    env: EcsExecutorStack,
) -> None:
    # GIVEN the ecs-task container refused by its entry point (no Task Execution API URL: it
    # exits 2 before running anything), for heavy_step's first try only. The bridge keys
    # per-role variables by the command's first word, which for the executor's command is "python".
    env.bridge.role_env["python"] = {"AIRFLOW__CORE__EXECUTION_API_SERVER_URL": ""}
    try:
        # WHEN a run of isolated_task is triggered
        run_id = _trigger(env.stack, "isolated_task")

        # THEN the executor runs the task max_run_task_attempts (3) times, each a real container
        # whose exit DescribeTasks reports, then gives the try up
        def given_up() -> bool:
            tries = _ecs_tasks(env, run_id)
            stopped = [t for _, t, _ in tries if t.desired_status == "STOPPED"]
            return len(stopped) >= 3 or _task_instances(env.stack, run_id).get("heavy_step", ("",))[0] in (
                "up_for_retry",
                "failed",
            )

        poll_until(given_up, timeout_s=300, interval_s=2, what="the executor to give try 1 up")
    finally:
        env.bridge.role_env.pop("python")
    first = [(task, container) for number, task, container in _ecs_tasks(env, run_id) if number == 1]
    assert len(first) == 3, [c.name for _, c in first]
    for task, container in first:
        assert container.wait_exit(60) == 2
        assert "needs AIRFLOW__CORE__EXECUTION_API_SERVER_URL" in container.logs()
        assert [c.exitCode for c in task.containers] == [2]

    # AND the try failed, and the retry (retry_delay 1 minute) ran in a new container that exited 0
    _wait_finished(env, run_id, 600)
    tis = _task_instances(env.stack, run_id)
    assert tis["heavy_step"] == ("success", 2, "AwsEcsExecutor"), tis
    assert [(number, c.wait_exit(60)) for number, _, c in _ecs_tasks(env, run_id)] == [
        (1, 2),
        (1, 2),
        (1, 2),
        (2, 0),
    ]
    scheduler = env.services["scheduler"].logs()
    assert "has failed a maximum of 3 times. Marking as failed" in scheduler
