"""The GitHub webhook Lambda (Function URL): verify, parse, ignore, dedupe, hand off, answer fast.

The signature is checked over the raw body before any other work; a bad or missing one gets
401. Accepted pushes are handed to the sync Lambda with an asynchronous invoke, so the answer
goes back to GitHub in milliseconds (GitHub waits at most 10 s). Replays are keyed on the
signed commit, in the webhook's own DynamoDB table: the public function is outside the VPC and
can write nothing Airflow reads. The repository check is always on: GITHUB_REPOSITORY, or the
owner/name of DAG_REPO_URL; a configuration with neither is refused.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from airflow_control_plane.config import optional_str, require_str
from airflow_control_plane.dagsync.webhook import (
    DynamoDbDeliveryStore,
    LambdaAsyncDispatcher,
    WebhookResponse,
    handle_webhook,
    lower_headers,
    raw_body,
    repository_from_url,
)
from airflow_control_plane.edge import event_object
from airflow_control_plane.errors import ConfigError
from airflow_control_plane.secret_source import SecretReader, SecretsManagerSecret

logger = Logger(service="github-webhook")
metrics = Metrics(service="github-webhook")

DELIVERY_MEMORY_S = 7 * 24 * 3600  # GitHub lets you redeliver recent deliveries; remember a week


@dataclass(frozen=True)
class WebhookConfig:
    secret_id: str
    repository: str
    branch: str
    sync_function: str
    deliveries_table: str

    @classmethod
    def from_env(cls) -> WebhookConfig:
        derived = repository_from_url(optional_str("DAG_REPO_URL", ""))
        repository = optional_str("GITHUB_REPOSITORY", "") or derived
        if not repository:
            raise ConfigError(
                "set GITHUB_REPOSITORY (owner/name) or a https://github.com/owner/name DAG_REPO_URL: "
                "the webhook must know which repository's pushes to accept"
            )
        return cls(
            secret_id=require_str("WEBHOOK_SECRET_ARN"),
            repository=repository,
            branch=require_str("DAG_REPO_REF"),
            sync_function=require_str("DAG_SYNC_FUNCTION_NAME"),
            deliveries_table=require_str("DELIVERIES_TABLE"),
        )


@cache
def _secrets_client() -> Any:
    return boto3.client("secretsmanager")


@cache
def _lambda_client() -> Any:
    return boto3.client("lambda")


@cache
def _dynamodb_client() -> Any:
    return boto3.client("dynamodb")


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
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    event = event_object(event, "github-webhook")
    config = WebhookConfig.from_env()
    secret = webhook_secret(SecretsManagerSecret(_secrets_client(), config.secret_id), config.secret_id)
    response = handle_webhook(
        lower_headers(event.get("headers")),
        raw_body(event),
        secret=secret,
        repository=config.repository,
        branch=config.branch,
        store=DynamoDbDeliveryStore(_dynamodb_client(), config.deliveries_table, DELIVERY_MEMORY_S),
        dispatcher=LambdaAsyncDispatcher(_lambda_client(), config.sync_function),
        now=time.time(),
    )
    metrics.add_metric(name=f"Webhook{response.status}", unit=MetricUnit.Count, value=1)
    logger.info("webhook answered", extra={"status": response.status, "response": response.body})
    return to_function_url_response(response)
