"""Worker services: the ``WorkerServices`` port and its ECS adapter.

What AWS documents about task scale-in protection (Amazon ECS Developer Guide, "Protect your
Amazon ECS tasks from being terminated by scale-in events",
https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-scale-in-protection.html, and
the API reference for UpdateTaskProtection):

- protected tasks are not terminated by scale-in events from Service Auto Scaling or
  deployments; protection lasts 1 to 2,880 minutes (default 120) and is cleared on expiry;
- the container agent endpoint ``$ECS_AGENT_URI/task-protection/v1/state`` is the recommended
  way for queue workers to protect themselves; the task role needs ``ecs:GetTaskProtection``
  and ``ecs:UpdateTaskProtection``;
- setting protection fails with ``DEPLOYMENT_BLOCKED`` when "the service has more protected
  tasks than the desired count of tasks for the service".

Service Auto Scaling acts only by changing the service's desired count, and the service
scheduler chooses which tasks to stop, so a plain ``UpdateService(desiredCount=...)`` is the
same scale-in event. The documentation does not spell out that case word for word, so the
design does not rely on it alone: every worker protects itself from its start, the scaler
lowers the count only by the workers it drained and released (:mod:`.drain`), after reading
every other running worker as protected, and releases nothing when protection cannot be read.
A drained worker is idle and consumes nothing, so even a wrong pick by ECS would stop no task.

moto 5.2.5 implements DescribeServices, UpdateService, ListTasks and tags, but not
GetTaskProtection/UpdateTaskProtection (checked: no ``task_protection`` in ``moto/ecs``); the
contract tests cover those two calls with botocore's Stubber, which validates requests and
responses against the real service model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from airflow_control_plane.errors import ConfigError, TransientError

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient
else:
    ECSClient = Any

GET_TASK_PROTECTION_BATCH = 10  # GetTaskProtection accepts up to 10 tasks per call


@dataclass(frozen=True)
class ServiceCounts:
    desired: int
    running: int
    pending: int = 0


class WorkerServices(Protocol):
    """Port: the worker services of one environment (ECS on AWS, processes locally)."""

    def describe(self, service: str) -> ServiceCounts:
        """Desired, running and pending worker count of ``service``."""
        ...

    def set_desired(self, service: str, count: int) -> None:
        """Ask for ``count`` workers. Lowering it must never stop a protected worker."""
        ...

    def unprotected(self, service: str) -> set[str]:
        """Ids of the running workers that hold no scale-in protection."""
        ...

    def release(self, service: str, ids: Sequence[str]) -> set[str]:
        """Release those workers' scale-in protection; returns the ids released."""
        ...


def _ecs_error(action: str, exc: Exception) -> TransientError:
    return TransientError(f"ECS {action} failed: {exc}")


class EcsWorkerServices:
    """The ECS adapter; the boto3 client is injected (built once per Lambda container)."""

    def __init__(self, client: ECSClient, cluster: str) -> None:
        self._client = client
        self._cluster = cluster

    def _service(self, service: str) -> dict[str, Any]:
        try:
            response = self._client.describe_services(cluster=self._cluster, services=[service])
        except (ClientError, BotoCoreError) as exc:
            raise _ecs_error(f"DescribeServices({service})", exc) from exc
        found = [s for s in response.get("services", []) if s.get("status") != "INACTIVE"]
        if not found:
            reasons = ", ".join(f.get("reason", "?") for f in response.get("failures", [])) or "not found"
            raise ConfigError(f"ECS service {service!r} in cluster {self._cluster!r}: {reasons}")
        return dict(found[0])

    def describe(self, service: str) -> ServiceCounts:
        data = self._service(service)
        return ServiceCounts(
            desired=int(data.get("desiredCount", 0)),
            running=int(data.get("runningCount", 0)),
            pending=int(data.get("pendingCount", 0)),
        )

    def service_arn(self, service: str) -> str:
        return str(self._service(service)["serviceArn"])

    def set_desired(self, service: str, count: int) -> None:
        try:
            self._client.update_service(cluster=self._cluster, service=service, desiredCount=count)
        except (ClientError, BotoCoreError) as exc:
            raise _ecs_error(f"UpdateService({service}, desiredCount={count})", exc) from exc

    def _task_arns(self, service: str) -> list[str]:
        arns: list[str] = []
        try:
            paginator = self._client.get_paginator("list_tasks")
            for page in paginator.paginate(
                cluster=self._cluster, serviceName=service, desiredStatus="RUNNING"
            ):
                arns.extend(page.get("taskArns", []))
        except (ClientError, BotoCoreError) as exc:
            raise _ecs_error(f"ListTasks({service})", exc) from exc
        return arns

    def unprotected(self, service: str) -> set[str]:
        arns = self._task_arns(service)
        found: set[str] = set()
        for start in range(0, len(arns), GET_TASK_PROTECTION_BATCH):
            batch = arns[start : start + GET_TASK_PROTECTION_BATCH]
            try:
                response = self._client.get_task_protection(cluster=self._cluster, tasks=batch)
            except (ClientError, BotoCoreError) as exc:
                raise _ecs_error(f"GetTaskProtection({service})", exc) from exc
            failures = [f for f in response.get("failures", []) if f.get("reason") != "MISSING"]
            if failures:
                # A task whose protection cannot be read might be unprotected: unknown.
                raise TransientError(
                    f"GetTaskProtection({service}) failed for {len(failures)} task(s): {failures}"
                )
            answered = {task.get("taskArn", "") for task in response.get("protectedTasks", [])}
            found.update(
                task_id(task["taskArn"])
                for task in response.get("protectedTasks", [])
                if not task.get("protectionEnabled")
            )
            missing = {f.get("arn", "") for f in response.get("failures", [])}
            found.update(task_id(arn) for arn in batch if arn not in answered and arn not in missing)
        return found

    def release(self, service: str, ids: Sequence[str]) -> set[str]:
        released: set[str] = set()
        for start in range(0, len(ids), GET_TASK_PROTECTION_BATCH):
            batch = list(ids[start : start + GET_TASK_PROTECTION_BATCH])
            try:
                response = self._client.update_task_protection(
                    cluster=self._cluster, tasks=batch, protectionEnabled=False
                )
            except (ClientError, BotoCoreError) as exc:
                raise _ecs_error(f"UpdateTaskProtection({service}, release {batch})", exc) from exc
            released.update(
                task_id(task["taskArn"])
                for task in response.get("protectedTasks", [])
                if not task.get("protectionEnabled")
            )
        return released


def task_id(arn: str) -> str:
    """The task id at the end of an ECS task ARN (``.../task/<cluster>/<id>``); an id stays an id."""
    return arn.rsplit("/", 1)[-1]


class InMemoryWorkerServices:
    """Fake for unit tests: counts in a dict; every worker protected until released."""

    def __init__(self, services: dict[str, ServiceCounts]) -> None:
        self.services = dict(services)
        self.released: dict[str, set[str]] = {}
        self.calls: list[tuple[str, int]] = []

    def describe(self, service: str) -> ServiceCounts:
        if service not in self.services:
            raise ConfigError(f"no worker service {service!r}")
        return self.services[service]

    def set_desired(self, service: str, count: int) -> None:
        self.calls.append((service, count))
        current = self.describe(service)
        self.services[service] = ServiceCounts(count, current.running, current.pending)

    def unprotected(self, service: str) -> set[str]:
        return set(self.released.get(service, set()))

    def release(self, service: str, ids: Sequence[str]) -> set[str]:
        self.released.setdefault(service, set()).update(ids)
        return set(ids)
