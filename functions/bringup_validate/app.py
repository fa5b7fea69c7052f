"""Validate a bring-up or hibernate execution input, and plan the bring-up.

First state of both state machines. Event::

    {"machine": "bringup", "request": {...execution input...},
     "serviceNames": {"api-server": "...", "scheduler": "...", "dag-processor": "...",
                      "triggerer": "..."},
     "workerServices": [{"queue": "default", "serviceName": "...", "minimum": 0}, ...],
     "observed": [{"serviceName": "...", "desiredCount": 1, "runningCount": 1}, ...]}

    {"machine": "hibernate", "request": {...execution input...}}

Returns the normalised request (defaults filled in) and, for bring-up, the plan. Bad
input raises ``InvalidInputError``, which the state machine turns into a named failure
before anything changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from airflow_control_plane.bringup.input import parse_bring_up, parse_hibernate
from airflow_control_plane.bringup.plan import ObservedService, WorkerService, plan_bring_up
from airflow_control_plane.edge import event_object
from airflow_control_plane.errors import InvalidInputError

logger = Logger()
metrics = Metrics(namespace="AirflowControlPlane")


def _observed(raw: object) -> dict[str, ObservedService]:
    if not isinstance(raw, list):
        raise InvalidInputError("observed must be a list of services")
    observed: dict[str, ObservedService] = {}
    for item in raw:
        if not isinstance(item, Mapping) or not isinstance(item.get("serviceName"), str):
            raise InvalidInputError(f"observed entry without a serviceName: {item!r}")
        desired, running = item.get("desiredCount", 0), item.get("runningCount", 0)
        if not isinstance(desired, int) or not isinstance(running, int):
            raise InvalidInputError(f"observed counts must be integers: {item!r}")
        observed[item["serviceName"]] = ObservedService(desired, running)
    return observed


def _service_names(raw: object) -> dict[str, str]:
    if not isinstance(raw, Mapping) or not all(isinstance(v, str) and v for v in raw.values()):
        raise InvalidInputError("serviceNames must map service keys to ECS service names")
    return {str(k): str(v) for k, v in raw.items()}


def _worker_services(raw: object) -> list[WorkerService]:
    """The worker services (one per queue) the template passes in, each with its minimum."""
    if isinstance(raw, Mapping):  # a one-element JSONata sequence arrives as the object itself
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise InvalidInputError("workerServices must be a non-empty list of worker services")
    services = []
    for item in raw:
        if not isinstance(item, Mapping):
            raise InvalidInputError(f"workerServices entry is not an object: {item!r}")
        queue, name, minimum = item.get("queue"), item.get("serviceName"), item.get("minimum", 0)
        if not isinstance(queue, str) or not queue or not isinstance(name, str) or not name:
            raise InvalidInputError(f"workerServices entry needs a queue and a serviceName: {item!r}")
        if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 0:
            raise InvalidInputError(f"workerServices entry {queue!r}: minimum must be an integer >= 0")
        services.append(WorkerService(queue, name, minimum))
    return services


def validate(event: Mapping[str, Any]) -> dict[str, Any]:
    machine = event.get("machine")
    if machine == "hibernate":
        hibernate = parse_hibernate(event.get("request"))
        logger.info("hibernate input valid", extra={"request": hibernate.to_json()})
        metrics.add_metric(name="HibernateInputValid", unit=MetricUnit.Count, value=1)
        return {"request": hibernate.to_json()}
    if machine != "bringup":
        raise InvalidInputError(f"machine must be 'bringup' or 'hibernate', got {machine!r}")
    request = parse_bring_up(event.get("request"))
    plan = plan_bring_up(
        request,
        _service_names(event.get("serviceNames")),
        _observed(event.get("observed", [])),
        _worker_services(event.get("workerServices")),
    )
    logger.info("bring-up planned", extra={"reason": plan.reason, "already_running": plan.already_running})
    metrics.add_metric(name="BringUpAlreadyRunning", unit=MetricUnit.Count, value=int(plan.already_running))
    return {"request": request.to_json(), "plan": plan.to_json()}


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    return validate(event_object(event, "bringup-validate"))
