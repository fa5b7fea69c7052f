"""The DAG sync Lambda: publish the configured repository's DAGs into the EFS-mounted DAGs folder.

Input: an EventBridge scheduled event (sync the ref's tip), the webhook Lambda's asynchronous
hand-off ``{"trigger": "webhook", "sha": ..., "delivery_id": ...}``, or an operator's
``{"trigger": "manual", "rollback_to": "<sha>"}``, or ``{"trigger": "break_lease"}`` to remove
the target's lease by hand. The lease on the target keeps it to one sync per target; one sync
stops by itself at ``SYNC_DEADLINE_SECONDS`` (default 240, below the 300 s timeout). With
``DB_HOST`` set, releases used by queued or running DAG runs are never deleted (an unreadable
database means nothing is deleted). Errors are raised typed (RefNotFoundError,
ReleaseValidationError, GitAuthenticationError, RemoteUnavailableError, SyncBusyError,
GitCacheError, SyncDeadlineError, ...).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from airflow_control_plane.config import optional_int, optional_str, require_str
from airflow_control_plane.dagsync.airflowignore import check_syntax
from airflow_control_plane.dagsync.credentials import parse_secret
from airflow_control_plane.dagsync.events import EventBridgePublisher
from airflow_control_plane.dagsync.git_source import DulwichGitSource
from airflow_control_plane.dagsync.in_use import PostgresReleasesInUse, ReleasesInUse
from airflow_control_plane.dagsync.local import system_clock
from airflow_control_plane.dagsync.lock import break_lease
from airflow_control_plane.dagsync.request import parse_request
from airflow_control_plane.dagsync.service import DEFAULT_DEADLINE_S, SyncResult, SyncSettings, sync_once
from airflow_control_plane.dagsync.settings import (
    DEFAULT_KEEP_RELEASES,
    DEFAULT_LEASE_WAIT_S,
    DEFAULT_MIN_RELEASE_AGE_S,
    SyncOptions,
    build_sync_settings,
)
from airflow_control_plane.errors import ConfigError
from airflow_control_plane.metadata_db import rds_secret_connector
from airflow_control_plane.secret_source import SecretReader, SecretsManagerSecret

logger = Logger(service="dag-sync")
metrics = Metrics(service="dag-sync")


@dataclass(frozen=True)
class DagSyncConfig:
    repo_url: str
    ref: str
    subdir: str
    target: Path
    cache_dir: Path
    token_secret_id: str
    event_bus_name: str
    keep_releases: int
    min_release_age_s: int
    history_depth: int
    deadline_s: int
    lease_wait_s: int
    ignore_syntax: str
    db_host: str
    db_port: int
    db_name: str
    db_secret_arn: str
    db_sslmode: str

    @classmethod
    def from_env(cls) -> DagSyncConfig:
        return cls(
            repo_url=require_str("DAG_REPO_URL"),
            ref=optional_str("DAG_REPO_REF", "main"),
            subdir=optional_str("DAG_REPO_SUBDIR", ""),
            target=Path(require_str("DAGS_TARGET_DIR")),
            cache_dir=Path(optional_str("GIT_CACHE_DIR", "/tmp/dagsync-cache")),  # noqa: S108 - Lambda's /tmp
            token_secret_id=optional_str("GIT_TOKEN_SECRET_ARN", ""),
            event_bus_name=optional_str("EVENT_BUS_NAME", "default"),
            keep_releases=optional_int("KEEP_RELEASES", DEFAULT_KEEP_RELEASES, minimum=1),
            min_release_age_s=optional_int(
                "MIN_RELEASE_AGE_SECONDS", int(DEFAULT_MIN_RELEASE_AGE_S), minimum=0
            ),
            history_depth=optional_int("GIT_HISTORY_DEPTH", 50, minimum=1),
            deadline_s=optional_int("SYNC_DEADLINE_SECONDS", int(DEFAULT_DEADLINE_S), minimum=10),
            lease_wait_s=optional_int("LEASE_WAIT_SECONDS", int(DEFAULT_LEASE_WAIT_S), minimum=0),
            ignore_syntax=check_syntax(optional_str("DAG_IGNORE_FILE_SYNTAX", "glob")),
            db_host=optional_str("DB_HOST", ""),
            db_port=optional_int("DB_PORT", 5432, minimum=1),
            db_name=optional_str("DB_NAME", "airflow"),
            db_secret_arn=optional_str("DB_SECRET_ARN", ""),
            db_sslmode=optional_str("DB_SSLMODE", "require"),
        )

    def settings(self) -> SyncSettings:
        options = SyncOptions(
            keep_releases=self.keep_releases,
            min_release_age_s=self.min_release_age_s,
            lease_wait_s=self.lease_wait_s,
            deadline_s=self.deadline_s,
            ignore_syntax=self.ignore_syntax,
        )
        return build_sync_settings(self.repo_url, self.ref, self.target, subdir=self.subdir, options=options)


@cache
def _secrets_client() -> Any:
    return boto3.client("secretsmanager")


@cache
def _events_client() -> Any:
    return boto3.client("events")


def build_source(config: DagSyncConfig, secret: SecretReader | None) -> DulwichGitSource:
    credentials = parse_secret(secret.read()) if secret is not None else None
    return DulwichGitSource(
        config.repo_url, config.cache_dir, credentials, history_depth=config.history_depth
    )


def build_in_use(config: DagSyncConfig, secrets_client: Any) -> ReleasesInUse | None:
    """The metadata database reader, or None when the function is not given one."""
    if not config.db_host:
        return None
    if not config.db_secret_arn:
        raise ConfigError("DB_HOST is set but DB_SECRET_ARN is not")

    connect = rds_secret_connector(
        SecretsManagerSecret(secrets_client, config.db_secret_arn),
        config.db_secret_arn,
        host=config.db_host,
        port=config.db_port,
        database=config.db_name,
        sslmode=config.db_sslmode,
        timeout_s=5,
    )

    return PostgresReleasesInUse(connect)


def record_metrics(result: SyncResult) -> None:
    metrics.add_metric(name=f"Sync{result.action.capitalize()}", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="SyncDuration", unit=MetricUnit.Seconds, value=result.duration_s)
    if result.action == "published":
        metrics.add_metric(name="FilesWritten", unit=MetricUnit.Count, value=result.files_written)
        metrics.add_metric(name="BytesWritten", unit=MetricUnit.Bytes, value=result.bytes_written)


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    request = parse_request(event)
    config = DagSyncConfig.from_env()
    if request.trigger == "break_lease":
        broken = break_lease(config.target, now=time.time(), force=True)
        logger.info(broken.reason)
        return {"action": "break_lease", "broken": broken.broken, "reason": broken.reason}
    logger.info("sync requested", extra={"request": request.to_payload(), "ref": config.ref})
    secret = (
        SecretsManagerSecret(_secrets_client(), config.token_secret_id) if config.token_secret_id else None
    )
    source = build_source(config, secret)
    publisher = EventBridgePublisher(_events_client(), config.event_bus_name)
    try:
        in_use = build_in_use(config, _secrets_client())
        result = sync_once(config.settings(), request, source, publisher, system_clock(), in_use)
    except Exception:
        metrics.add_metric(name="SyncFailed", unit=MetricUnit.Count, value=1)
        raise
    record_metrics(result)
    logger.info(result.reason, extra={"result": result.to_dict()})
    return result.to_dict()
