"""Autoscaler Lambda: size each Celery worker ECS service from queue demand.

Triggered by an EventBridge schedule (every minute), invoked with a dry-run event, or by
statemachines/hibernate.asl.json to release every worker once nothing runs (see
``release_workers`` in scaling/service.py). Parse the event, build the adapters (once per
container), evaluate (read -> decide -> act), log every decision with its reason, emit metrics,
return the decisions. Outside failures never scale
down; they are returned in ``errors`` and counted in the ``ScalingErrors`` metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.typing import LambdaContext

from airflow_control_plane.metadata_db import connector
from airflow_control_plane.scaling.broker import BrokerDepth, RedisQueueDepth, SqsQueueDepth
from airflow_control_plane.scaling.config import AutoscalerConfig
from airflow_control_plane.scaling.demand import PgDemandReader
from airflow_control_plane.scaling.drain import KombuWorkerControl
from airflow_control_plane.scaling.ecs import EcsWorkerServices
from airflow_control_plane.scaling.events import EventBridgePublisher
from airflow_control_plane.scaling.hibernation import SchedulerStopped
from airflow_control_plane.scaling.memory import EcsTagStore
from airflow_control_plane.scaling.policy import Action
from airflow_control_plane.scaling.request import parse_request
from airflow_control_plane.scaling.service import ScalingPorts, ScalingRun, evaluate, release_workers
from airflow_control_plane.secret_source import CachedSecret, SecretsManagerSecret

logger = Logger(service="autoscaler")
metrics = Metrics(service="autoscaler")
SECRET_MAX_AGE_S = 300


@lru_cache(maxsize=8)
def _secret(secret_id: str) -> CachedSecret:
    """One cached reader per secret and container: read again after SECRET_MAX_AGE_S."""
    return CachedSecret(SecretsManagerSecret(boto3.client("secretsmanager"), secret_id), SECRET_MAX_AGE_S)


class _SecretBroker:
    """Reads the broker URL secret on first use, so a secret failure is a guarded broker read."""

    def __init__(self, secret: str, key_prefix: str) -> None:
        self._secret = secret
        self._prefix = key_prefix

    def waiting(self, queue: str) -> int:
        url = _secret(self._secret).read()
        return RedisQueueDepth.from_url(url, global_keyprefix=self._prefix).waiting(queue)


class _SecretControl:
    """Celery worker control (inspect, cancel/add consumer) on the broker URL secret, read on
    first use so a secret failure is a guarded read (no scale-down on it)."""

    def __init__(self, secret: str, key_prefix: str) -> None:
        self._secret = secret
        self._options = {"global_keyprefix": key_prefix} if key_prefix else {}

    def _control(self) -> KombuWorkerControl:
        url = _secret(self._secret).read()
        return KombuWorkerControl(url, transport_options=self._options)

    def busy(self, queue: str, hostnames: Sequence[str] | None = None) -> dict[str, int]:
        return self._control().busy(queue, hostnames)

    def cancel(self, queue: str, hostnames: Sequence[str]) -> set[str]:
        return self._control().cancel(queue, hostnames)

    def resume(self, queue: str, hostnames: Sequence[str]) -> set[str]:
        return self._control().resume(queue, hostnames)


def build_broker(config: AutoscalerConfig) -> BrokerDepth:
    """Queue depth from Redis (the broker URL secret) or from SQS (the Lambda's own role)."""
    if config.broker_transport == "sqs":
        return SqsQueueDepth(boto3.client("sqs"), queue_name_prefix=config.sqs_queue_prefix)
    return _SecretBroker(config.broker_url_secret, config.broker_key_prefix)


@lru_cache(maxsize=1)
def build_runtime() -> tuple[AutoscalerConfig, ScalingPorts]:
    """Config and adapters, built once per Lambda container (clients injected into adapters)."""
    config = AutoscalerConfig.from_env()
    ecs = boto3.client("ecs")
    services = EcsWorkerServices(ecs, config.cluster)
    ports = ScalingPorts(
        demand=PgDemandReader(connector(_secret(config.metadata_db_secret).read)),
        broker=build_broker(config),
        services=services,
        memory=EcsTagStore(ecs, config.cluster),
        hibernation=SchedulerStopped(services, config.scheduler_service),
        publisher=EventBridgePublisher(boto3.client("events"), config.event_bus, config.environment),
        control=_SecretControl(config.broker_url_secret, config.broker_key_prefix),
        interval_s=config.interval_s,
    )
    return config, ports


def emit_metrics(run: ScalingRun) -> None:
    """Per queue: demand, desired (target), running, action; overall: errors."""
    for outcome in run.outcomes:
        decision = outcome.decision
        values = {
            "QueueDemand": decision.demand,
            "ScaleUp": int(outcome.applied and decision.action is Action.SCALE_UP),
            "ScaleDown": int(outcome.applied and decision.action is Action.SCALE_DOWN),
        }
        if outcome.running is not None:  # the worker service was read: its counts are real
            values["DesiredWorkers"] = outcome.target
            values["RunningWorkers"] = outcome.running
        for name, value in values.items():
            with single_metric(name=name, unit=MetricUnit.Count, value=value) as metric:
                metric.add_dimension("queue", decision.queue)
    metrics.add_metric(name="ScalingErrors", unit=MetricUnit.Count, value=len(run.errors))


def shape_result(run: ScalingRun) -> dict[str, Any]:
    return run.to_dict()


@logger.inject_lambda_context(log_event=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    # The clock is read here, at the edge: a schedule event's own `time` is never trusted.
    request = parse_request(event, now=datetime.now(UTC))
    logger.info(request.reason, extra={"trigger": request.trigger, "now": request.now.isoformat()})
    config, ports = build_runtime()
    if request.release:
        released = release_workers(config.queues, ports)
        for error in released.errors:
            logger.error("releasing a worker failed; it keeps running, protected", extra={"error": error})
        metrics.add_metric(name="ScalingErrors", unit=MetricUnit.Count, value=len(released.errors))
        return released.to_dict()
    run = evaluate(config.queues, ports, request.now, dry_run=request.dry_run or config.dry_run)
    for outcome in run.outcomes:
        logger.info(
            outcome.decision.reason, extra={"queue": outcome.decision.queue, "applied": outcome.applied}
        )
    for error in run.errors:
        logger.error("scaling input or action failed; no scale-down on it", extra={"error": error})
    emit_metrics(run)
    return shape_result(run)
