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
design does not rely on protection alone: the policy never sets a desired count below the
number of protected (busy) workers -- which also keeps DEPLOYMENT_BLOCKED from ever stopping a
worker from protecting itself -- and never scales down when protection cannot be read.

moto 5.2.5 implements DescribeServices, UpdateService, ListTasks and tags, but not
GetTaskProtection/UpdateTaskProtection; the contract tests cover those two calls with
botocore's Stubber, which validates requests and responses against the real service model.
"""

from __future__ import annotations

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

    def protected_workers(self, service: str) -> int:
        """How many workers currently hold scale-in protection (are running tasks)."""
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

    def protected_workers(self, service: str) -> int:
        arns = self._task_arns(service)
        protected = 0
        for start in range(0, len(arns), GET_TASK_PROTECTION_BATCH):
            batch = arns[start : start + GET_TASK_PROTECTION_BATCH]
            try:
                response = self._client.get_task_protection(cluster=self._cluster, tasks=batch)
            except (ClientError, BotoCoreError) as exc:
                raise _ecs_error(f"GetTaskProtection({service})", exc) from exc
            failures = [f for f in response.get("failures", []) if f.get("reason") != "MISSING"]
            if failures:
                # A task whose protection cannot be read might be busy: the count is unknown.
                raise TransientError(
                    f"GetTaskProtection({service}) failed for {len(failures)} task(s): {failures}"
                )
            protected += sum(
                1 for task in response.get("protectedTasks", []) if task.get("protectionEnabled")
            )
        return protected


class InMemoryWorkerServices:
    """Fake for unit tests and the simulation: counts in a dict, protected = busy workers."""

    def __init__(self, services: dict[str, ServiceCounts], protected: dict[str, int] | None = None) -> None:
        self.services = dict(services)
        self.protected = dict(protected or {})
        self.calls: list[tuple[str, int]] = []

    def describe(self, service: str) -> ServiceCounts:
        if service not in self.services:
            raise ConfigError(f"no worker service {service!r}")
        return self.services[service]

    def set_desired(self, service: str, count: int) -> None:
        self.calls.append((service, count))
        current = self.describe(service)
        self.services[service] = ServiceCounts(count, current.running, current.pending)

    def protected_workers(self, service: str) -> int:
        return self.protected.get(service, 0)
