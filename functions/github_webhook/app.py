"""The GitHub webhook Lambda (Function URL): verify, parse, ignore, dedupe, hand off, answer fast.

The signature is checked over the raw body before any other work; a bad or missing one gets
401. Accepted pushes are handed to the sync Lambda with an asynchronous invoke, so the answer
goes back to GitHub in milliseconds (GitHub waits at most 10 s). The replay store lives on the
EFS DAGs target (this function mounts it too), so a redelivered delivery id syncs once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from airflow_control_plane.config import optional_str, require_str
from airflow_control_plane.dagsync.credentials import SecretReader, SecretsManagerSecret
from airflow_control_plane.dagsync.webhook import (
    FileDeliveryStore,
    LambdaAsyncDispatcher,
    WebhookResponse,
    handle_webhook,
    lower_headers,
    raw_body,
)

logger = Logger(service="github-webhook")
metrics = Metrics(service="github-webhook")

DELIVERIES_DIR = ".webhook-deliveries"
DELIVERY_MEMORY_S = 7 * 24 * 3600  # GitHub lets you redeliver recent deliveries; remember a week


@dataclass(frozen=True)
class WebhookConfig:
    secret_id: str
    repository: str
    branch: str
    sync_function: str
    target: Path

    @classmethod
    def from_env(cls) -> WebhookConfig:
        return cls(
            secret_id=require_str("WEBHOOK_SECRET_ARN"),
            repository=optional_str("GITHUB_REPOSITORY", ""),
            branch=require_str("DAG_REPO_REF"),
            sync_function=require_str("DAG_SYNC_FUNCTION_NAME"),
            target=Path(require_str("DAGS_TARGET_DIR")),
        )


@cache
def _secrets_client() -> Any:
    return boto3.client("secretsmanager")


@cache
def _lambda_client() -> Any:
    return boto3.client("lambda")


_secret_cache: dict[str, bytes] = {}


def webhook_secret(reader: SecretReader, secret_id: str) -> bytes:
    """The signing secret, read once per container (rotate by redeploying or waiting a cold start)."""
    if secret_id not in _secret_cache:
        _secret_cache[secret_id] = reader.read().strip().encode()
    return _secret_cache[secret_id]


def to_function_url_response(response: WebhookResponse) -> dict[str, Any]:
    return {
        "statusCode": response.status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(response.body),
    }


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    config = WebhookConfig.from_env()
    secret = webhook_secret(SecretsManagerSecret(_secrets_client(), config.secret_id), config.secret_id)
    store = FileDeliveryStore(config.target / DELIVERIES_DIR)
    now = time.time()
    response = handle_webhook(
        lower_headers(event.get("headers")),
        raw_body(event),
        secret=secret,
        repository=config.repository,
        branch=config.branch,
        store=store,
        dispatcher=LambdaAsyncDispatcher(_lambda_client(), config.sync_function),
        now=now,
    )
    if response.status == 202:
        store.prune(older_than=now - DELIVERY_MEMORY_S)
    metrics.add_metric(name=f"Webhook{response.status}", unit=MetricUnit.Count, value=1)
    logger.info("webhook answered", extra={"status": response.status, "response": response.body})
    return to_function_url_response(response)
