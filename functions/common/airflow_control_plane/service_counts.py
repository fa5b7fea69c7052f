"""What desired count a deploy gives each ECS service: the one it runs at now, or 0 if new.

CloudFormation sends an ECS service's ``DesiredCount`` with every update of the service (a new
image, CPU, tags). A literal count in the template would therefore reset a running
environment on every deploy (0: everything stops; the autoscaler then reads the scheduler at
0 as "hibernated"), and an omitted count makes ECS start one task of each service on create,
before the migration. So the template takes each service's count from a custom resource
(``Custom::ServiceCounts``, ``functions/service_counts``) that answers, on Create and Update,
the count each service runs at now, and 0 for a service that does not exist yet. Bring-up,
hibernate and the autoscaler own the counts; a deploy only repeats them.

Decide, then act: :func:`decide_counts` is pure (the observation is its input); the ECS read
is the port :class:`ServiceObserver`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from airflow_control_plane.errors import InvalidInputError

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient

DESCRIBE_BATCH = 10  # ecs:DescribeServices takes at most 10 services per call


@dataclass(frozen=True)
class CountsDecision:
    counts: dict[str, int]
    reason: str


def decide_counts(
    request_type: str, services: Mapping[str, str], observed: Mapping[str, int]
) -> CountsDecision:
    """Pure: the count to declare for each service key.

    ``services`` maps a key (the attribute name, e.g. ``ApiServer``) to the ECS service name;
    ``observed`` maps the names of the services that exist (ACTIVE) to their desired count.
    A service that does not exist (first deploy, or a renamed worker queue) starts at 0;
    one that exists keeps its count, whatever it is.
    """
    if request_type not in ("Create", "Update"):
        raise InvalidInputError(f"counts are decided for Create and Update only, not {request_type!r}")
    counts = {key: max(0, int(observed.get(name, 0))) for key, name in services.items()}
    kept = [f"{key}={counts[key]}" for key, name in services.items() if name in observed]
    new = [key for key, name in services.items() if name not in observed]
    parts = []
    if kept:
        parts.append("kept as running now: " + ", ".join(kept))
    if new:
        parts.append("not created yet, start at 0: " + ", ".join(new))
    return CountsDecision(counts, f"{request_type.lower()}: " + "; ".join(parts or ["no services"]))


class ServiceObserver(Protocol):
    def desired_counts(self, cluster: str, names: list[str]) -> dict[str, int]:
        """Desired count of each named service that exists (ACTIVE); others are left out."""
        ...


class EcsServiceObserver:
    """ServiceObserver on ECS DescribeServices (the boto3 client is injected)."""

    def __init__(self, client: ECSClient) -> None:
        self._client = client

    def desired_counts(self, cluster: str, names: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(names), DESCRIBE_BATCH):
            batch = names[start : start + DESCRIBE_BATCH]
            answer = self._client.describe_services(cluster=cluster, services=batch)
            for service in answer.get("services", []):
                if service.get("status") == "ACTIVE" and service.get("serviceName") in batch:
                    found[service["serviceName"]] = int(service.get("desiredCount", 0))
        return found


def parse_services(raw: object) -> dict[str, str]:
    if not isinstance(raw, Mapping) or not raw:
        raise InvalidInputError("ResourceProperties.Services must map attribute names to ECS service names")
    services: dict[str, str] = {}
    for key, name in raw.items():
        if not isinstance(key, str) or not key.isalnum() or not isinstance(name, str) or not name:
            raise InvalidInputError(
                f"Services entry {key!r}: {name!r} is not an attribute name and a service name"
            )
        services[key] = name
    return services
