"""Health gate: one check of the api-server's /api/v2/monitor/health.

Runs inside the VPC (the api-server is not public). Healthy -> returns the verdict;
anything else raises ``NotHealthyYet`` with a reason naming each unhealthy component,
and the bring-up state machine retries it with backoff, a bounded number of times.
The event carries nothing the check needs (``{}`` is fine); it is logged for tracing.

Environment: API_SERVER_URL (e.g. http://api-server.airflow.local:8080),
HEALTH_HTTP_TIMEOUT_SECONDS (default 5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from airflow_control_plane.config import optional_int, require_str
from airflow_control_plane.edge import event_object
from airflow_control_plane.health import HealthSource, HttpHealthSource, NotHealthyYet, check_health

logger = Logger()
metrics = Metrics(namespace="AirflowControlPlane")


@dataclass(frozen=True)
class HealthGateConfig:
    api_server_url: str
    timeout_seconds: int

    @classmethod
    def from_env(cls) -> HealthGateConfig:
        return cls(
            api_server_url=require_str("API_SERVER_URL"),
            timeout_seconds=optional_int("HEALTH_HTTP_TIMEOUT_SECONDS", 5, minimum=1),
        )


def build_source(config: HealthGateConfig) -> HealthSource:
    return HttpHealthSource(config.api_server_url, timeout_seconds=config.timeout_seconds)


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    event = event_object(event, "health-gate")
    logger.info("health check requested", extra={"event": event})
    source = build_source(HealthGateConfig.from_env())
    try:
        verdict = check_health(source)
    except NotHealthyYet as exc:
        logger.info("not healthy yet", extra={"reason": str(exc)})
        metrics.add_metric(name="HealthGateNotHealthy", unit=MetricUnit.Count, value=1)
        raise
    logger.info("healthy", extra={"components": dict(verdict.components)})
    metrics.add_metric(name="HealthGateHealthy", unit=MetricUnit.Count, value=1)
    return verdict.to_json()
