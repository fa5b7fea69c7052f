"""CloudFormation custom resource ``Custom::ServiceCounts``: each ECS service's count for a deploy.

Create and Update answer, as attributes, the desired count each service runs at now (0 for a
service that does not exist yet); Delete does nothing. The template's services take their
``DesiredCount`` from these attributes, so a first deploy starts nothing and an update repeats
the running counts instead of resetting them (see ``airflow_control_plane.service_counts``).
CloudFormation always gets an answer; a failed read fails the stack operation, which then
rolls back without having changed a count.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from airflow_control_plane.errors import InvalidInputError
from airflow_control_plane.service_counts import (
    EcsServiceObserver,
    ServiceObserver,
    decide_counts,
    parse_services,
)

logger = Logger()

_REQUIRED_FIELDS = ("RequestType", "ResponseURL", "StackId", "RequestId", "LogicalResourceId")
RESPONSE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class CountsRequest:
    request_type: str
    response_url: str
    stack_id: str
    request_id: str
    logical_resource_id: str
    physical_resource_id: str | None
    properties: Mapping[str, Any]

    @classmethod
    def parse(cls, event: Mapping[str, Any]) -> CountsRequest:
        missing = [name for name in _REQUIRED_FIELDS if not isinstance(event.get(name), str)]
        if missing:
            raise InvalidInputError(f"custom resource event lacks {missing}")
        if event["RequestType"] not in ("Create", "Update", "Delete"):
            raise InvalidInputError(f"unknown RequestType {event['RequestType']!r}")
        if not str(event["ResponseURL"]).startswith("https://"):
            raise InvalidInputError("ResponseURL must be an https:// URL")
        properties = event.get("ResourceProperties") or {}
        physical = event.get("PhysicalResourceId")
        return cls(
            request_type=str(event["RequestType"]),
            response_url=str(event["ResponseURL"]),
            stack_id=str(event["StackId"]),
            request_id=str(event["RequestId"]),
            logical_resource_id=str(event["LogicalResourceId"]),
            physical_resource_id=physical if isinstance(physical, str) else None,
            properties=properties if isinstance(properties, Mapping) else {},
        )


def response_body(
    request: CountsRequest, status: Literal["SUCCESS", "FAILED"], reason: str, data: Mapping[str, str]
) -> dict[str, Any]:
    return {
        "Status": status,
        "Reason": reason[:1000],
        "PhysicalResourceId": request.physical_resource_id
        or f"{request.stack_id}/{request.logical_resource_id}",
        "StackId": request.stack_id,
        "RequestId": request.request_id,
        "LogicalResourceId": request.logical_resource_id,
        "Data": dict(data),
    }


def handle(request: CountsRequest, observer: ServiceObserver) -> dict[str, Any]:
    """Observe, decide and build the response; any failure becomes a FAILED response."""
    if request.request_type == "Delete":
        return response_body(
            request, "SUCCESS", "delete: nothing to do (the services are deleted by the stack)", {}
        )
    try:
        cluster = request.properties.get("Cluster")
        if not isinstance(cluster, str) or not cluster:
            raise InvalidInputError("ResourceProperties.Cluster is required")
        services = parse_services(request.properties.get("Services"))
        observed = observer.desired_counts(cluster, sorted(set(services.values())))
        decision = decide_counts(request.request_type, services, observed)
    except Exception as exc:  # every failure must reach CloudFormation, or the stack waits an hour
        logger.exception("service counts failed", extra={"request_type": request.request_type})
        return response_body(request, "FAILED", f"{type(exc).__name__}: {exc}", {})
    logger.info("service counts", extra={"counts": decision.counts, "reason": decision.reason})
    return response_body(request, "SUCCESS", decision.reason, {k: str(v) for k, v in decision.counts.items()})


def send_response(url: str, body: Mapping[str, Any], timeout_s: float = RESPONSE_TIMEOUT_S) -> int:
    data = json.dumps(body).encode("utf-8")
    request = urllib.request.Request(  # noqa: S310 - scheme checked in CountsRequest.parse
        url, data=data, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(data))}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310 - as above
        return int(answer.status)


def build_observer() -> ServiceObserver:
    import boto3

    return EcsServiceObserver(boto3.client("ecs"))


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = CountsRequest.parse(event)
    body = handle(request, build_observer())
    send_response(request.response_url, body)
    return {"Status": body["Status"], "Reason": body["Reason"], "Data": body["Data"]}
