"""Drain check for hibernate: count running/queued task instances and decide.

Event (built by the hibernate state machine)::

    {"attempt": 1, "maxPolls": 20, "force": false}

Returns the decision: ``{"action": "proceed"|"wait"|"timed_out", "running": n,
"queued": n, "attempt": n, "reason": "..."}``. A database that cannot be reached raises
``TransientError`` (retried by the state machine); nothing here stops anything.

Environment: DB_HOST, DB_PORT (default 5432), DB_NAME (default airflow),
DB_SECRET_ARN (a Secrets Manager secret holding JSON with ``username`` and ``password``,
the format RDS-managed secrets use), DB_CONNECT_TIMEOUT_SECONDS (default 5), DB_SSLMODE
(disable, require (default: RDS forces SSL) or verify-full; see airflow_control_plane.pg_tls).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from airflow_control_plane.bringup.drain import PostgresTaskInstanceCounter, TaskInstanceCounter, decide_drain
from airflow_control_plane.config import optional_int, optional_str, require_str
from airflow_control_plane.edge import event_object
from airflow_control_plane.errors import InvalidInputError
from airflow_control_plane.metadata_db import rds_secret_connector
from airflow_control_plane.secret_source import SecretsManagerSecret, database_credentials

logger = Logger()
metrics = Metrics(namespace="AirflowControlPlane")


@dataclass(frozen=True)
class DrainCheckConfig:
    db_host: str
    db_port: int
    db_name: str
    db_secret_arn: str
    db_sslmode: str
    connect_timeout_seconds: int

    @classmethod
    def from_env(cls) -> DrainCheckConfig:
        return cls(
            db_host=require_str("DB_HOST"),
            db_port=optional_int("DB_PORT", 5432, minimum=1),
            db_name=optional_str("DB_NAME", "airflow"),
            db_secret_arn=require_str("DB_SECRET_ARN"),
            db_sslmode=optional_str("DB_SSLMODE", "require"),
            connect_timeout_seconds=optional_int("DB_CONNECT_TIMEOUT_SECONDS", 5, minimum=1),
        )


def _credentials(secret_arn: str, client: Any) -> tuple[str, str]:
    """The database user and password in the secret (what the counter reads at each connect)."""
    return database_credentials(SecretsManagerSecret(client, secret_arn).read(), secret_arn)


def build_counter(config: DrainCheckConfig, secrets_client: Any | None = None) -> TaskInstanceCounter:
    """The pg8000 adapter; credentials are read from Secrets Manager at each connect."""
    connect = rds_secret_connector(
        SecretsManagerSecret(secrets_client or boto3.client("secretsmanager"), config.db_secret_arn),
        config.db_secret_arn,
        host=config.db_host,
        port=config.db_port,
        database=config.db_name,
        sslmode=config.db_sslmode,
        timeout_s=config.connect_timeout_seconds,
    )
    return PostgresTaskInstanceCounter(connect)


def _positive_int(event: Mapping[str, Any], name: str) -> int:
    value = event.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return value


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    event = event_object(event, "drain-check")
    attempt, max_polls = _positive_int(event, "attempt"), _positive_int(event, "maxPolls")
    force = event.get("force", False)
    if not isinstance(force, bool):
        raise InvalidInputError(f"force must be true or false, got {force!r}")
    counts = build_counter(DrainCheckConfig.from_env()).count_active()
    decision = decide_drain(counts, attempt=attempt, max_polls=max_polls, force=force)
    logger.info("drain decision", extra=decision.to_json())
    metrics.add_metric(name="ActiveTaskInstances", unit=MetricUnit.Count, value=counts.total)
    return decision.to_json()
