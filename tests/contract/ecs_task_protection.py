"""ECS in moto for the tests: a cluster with its services, running worker tasks, and task
scale-in protection.

moto 5.2.5 implements neither GetTaskProtection nor UpdateTaskProtection (no
``task_protection`` anywhere in ``moto/ecs``). This answers both from a table, the way ECS
does (API reference: a task never protected reads ``protectionEnabled: false``; an ARN or a
bare task id is accepted; at most 10 tasks per call), through botocore's ``before-call``
event, so every other call still reaches moto. The answers' shape is the one botocore's ECS
model parses (checked against the Stubber-validated responses in test_scaling_ecs.py).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

REGION = "us-east-1"
ACCOUNT = "123456789012"


class TaskProtectionTable:
    """Protection per task id. ``agents`` (task id -> the state of that task's agent stand-in,
    see test_scaling_protection_agent.py) makes the API and the task's own agent endpoint share
    one state, as they do in ECS."""

    def __init__(self, cluster: str, agents: dict[str, Any] | None = None) -> None:
        self.cluster = cluster
        self.enabled: dict[str, bool] = {}  # task id -> protected (tasks without an agent)
        self.agents = dict(agents or {})
        self.calls: list[tuple[str, tuple[str, ...], bool | None]] = []

    def is_enabled(self, task_id: str) -> bool:
        agent = self.agents.get(task_id)
        if agent is None:
            return self.enabled.get(task_id, False)
        with agent.lock:
            return bool(agent.enabled)

    def set_enabled(self, task_id: str, enabled: bool) -> None:
        agent = self.agents.get(task_id)
        if agent is None:
            self.enabled[task_id] = enabled
            return
        with agent.lock:
            agent.enabled = enabled
            agent.expires = datetime.now(UTC) + timedelta(hours=2) if enabled else None

    def arn(self, task: str) -> str:
        task_id = task.rsplit("/", 1)[-1]
        return f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{self.cluster}/{task_id}"

    def _answer(self, tasks: list[str]) -> dict[str, Any]:
        expires = datetime.now(UTC) + timedelta(hours=1)
        protected = []
        for task in tasks:
            task_id = task.rsplit("/", 1)[-1]
            item: dict[str, Any] = {
                "taskArn": self.arn(task_id),
                "protectionEnabled": self.is_enabled(task_id),
            }
            if item["protectionEnabled"]:
                item["expirationDate"] = expires
            protected.append(item)
        return {"protectedTasks": protected, "failures": [], "ResponseMetadata": {"HTTPStatusCode": 200}}

    def get(self, params: dict[str, Any], **_: object) -> tuple[SimpleNamespace, dict[str, Any]]:
        tasks = list(_body(params)["tasks"])
        assert 1 <= len(tasks) <= 10, "GetTaskProtection takes 1 to 10 tasks"
        self.calls.append(("get", tuple(tasks), None))
        return SimpleNamespace(status_code=200), self._answer(tasks)

    def update(self, params: dict[str, Any], **_: object) -> tuple[SimpleNamespace, dict[str, Any]]:
        body = _body(params)
        tasks = list(body["tasks"])
        assert 1 <= len(tasks) <= 10, "UpdateTaskProtection takes 1 to 10 tasks"
        enabled = bool(body["protectionEnabled"])
        self.calls.append(("update", tuple(tasks), enabled))
        for task in tasks:
            self.set_enabled(task.rsplit("/", 1)[-1], enabled)
        return SimpleNamespace(status_code=200), self._answer(tasks)


def _body(params: dict[str, Any]) -> dict[str, Any]:
    """The request as botocore serialized it (ECS speaks JSON 1.1)."""
    raw = params.get("body", b"{}")
    return dict(json.loads(raw.decode() if isinstance(raw, bytes) else raw))


def emulate_task_protection(
    client: Any, cluster: str, agents: dict[str, Any] | None = None
) -> TaskProtectionTable:
    table = TaskProtectionTable(cluster, agents)
    client.meta.events.register("before-call.ecs.GetTaskProtection", table.get)
    client.meta.events.register("before-call.ecs.UpdateTaskProtection", table.update)
    return table


def create_cluster(
    client: Any,
    cluster: str,
    services: dict[str, int] | None = None,
    *,
    family: str = "worker",
    fargate: bool = True,
) -> None:
    """A cluster, one task definition (``family``; a Fargate/awsvpc one unless ``fargate`` is
    false) and a service of it per entry of ``services`` (name -> desired count)."""
    client.create_cluster(clusterName=cluster)
    size: dict[str, Any] = {}
    if fargate:
        size = {
            "requiresCompatibilities": ["FARGATE"],
            "networkMode": "awsvpc",
            "cpu": "256",
            "memory": "512",
        }
    client.register_task_definition(
        family=family,
        containerDefinitions=[{"name": family, "image": "airflow:3.3.2", "cpu": 256, "memory": 512}],
        **size,
    )
    for name, count in (services or {}).items():
        client.create_service(cluster=cluster, serviceName=name, taskDefinition=family, desiredCount=count)


def run_worker_tasks(client: Any, cluster: str, count: int) -> list[str]:
    """Start ``count`` Fargate tasks of the ``worker`` task definition in moto; their ids."""
    ec2 = __import__("boto3").client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="workers", Description="workers", VpcId=vpc)["GroupId"]
    response = client.run_task(
        cluster=cluster,
        taskDefinition="worker",
        count=count,
        launchType="FARGATE",
        startedBy="ecs-svc/worker-etl",
        networkConfiguration={"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [group]}},
    )
    return [task["taskArn"].rsplit("/", 1)[-1] for task in response["tasks"]]
