"""Which worker service serves which Celery queue, and how it may be sized.

The map arrives as JSON (env ``WORKER_QUEUES``), one object per queue::

    [{"queue": "default", "service": "airflow-dev-worker-default", "concurrency": 16,
      "min": 0, "max": 10, "startup_seconds": 75, "prewarm_seconds": 120,
      "capacity_provider": "FARGATE_SPOT"}]

``startup_seconds`` is the measured time from "scale up" to a worker taking tasks (Fargate:
30-60 s from RunTask to RUNNING for a 400 MB image, then the worker's own start). The idle
period ``idle_seconds`` defaults to it: keeping an idle worker for as long as a restart takes
costs about what the restart costs (the ski-rental break-even), and no more is worth paying
when every worker is protected until it is drained.

Every mistake is reported with the entry and the field it concerns; nothing defaults
silently except the documented optional fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_control_plane.config import optional_bool, optional_str, require_str
from airflow_control_plane.errors import ConfigError

DEFAULT_STARTUP_SECONDS = 75  # Fargate RunTask -> RUNNING (30-60 s) + the Celery worker's start
DEFAULT_PREWARM_SECONDS = 0
_KNOWN_FIELDS = frozenset(
    {
        "queue",
        "service",
        "concurrency",
        "min",
        "max",
        "idle_seconds",
        "startup_seconds",
        "prewarm_seconds",
        "capacity_provider",
    }
)


@dataclass(frozen=True)
class QueueScaling:
    """Sizing rules of the worker service that consumes one Celery queue."""

    queue: str
    service: str
    concurrency: int
    min_workers: int
    max_workers: int
    idle_seconds: int | None = None  # None: the start-up time (break-even)
    prewarm_seconds: int = DEFAULT_PREWARM_SECONDS
    capacity_provider: str | None = None
    startup_seconds: int = DEFAULT_STARTUP_SECONDS

    @property
    def idle_period(self) -> int:
        """Seconds a worker stays idle before it is drained: as set, else the start-up time."""
        return self.startup_seconds if self.idle_seconds is None else self.idle_seconds


def _int_field(entry: Mapping[str, Any], name: str, where: str, *, default: int | None, minimum: int) -> int:
    value = entry.get(name, default)
    if value is None:
        raise ConfigError(f"{where}: field {name!r} is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: field {name!r} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{where}: field {name!r} must be >= {minimum}, got {value}")
    return value


def _str_field(entry: Mapping[str, Any], name: str, where: str, *, required: bool) -> str | None:
    value = entry.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: field {name!r} must be a non-empty string, got {value!r}")
    return value.strip()


def _parse_entry(entry: object, index: int) -> QueueScaling:
    where = f"worker queue entry #{index}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(entry).__name__}")
    unknown = sorted(set(entry) - _KNOWN_FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known fields are {sorted(_KNOWN_FIELDS)}")
    queue = _str_field(entry, "queue", where, required=True)
    where = f"worker queue {queue!r}"
    service = _str_field(entry, "service", where, required=True)
    assert queue is not None
    assert service is not None
    scaling = QueueScaling(
        queue=queue,
        service=service,
        concurrency=_int_field(entry, "concurrency", where, default=None, minimum=1),
        min_workers=_int_field(entry, "min", where, default=0, minimum=0),
        max_workers=_int_field(entry, "max", where, default=None, minimum=0),
        idle_seconds=(
            None
            if entry.get("idle_seconds") is None
            else _int_field(entry, "idle_seconds", where, default=None, minimum=0)
        ),
        startup_seconds=_int_field(
            entry, "startup_seconds", where, default=DEFAULT_STARTUP_SECONDS, minimum=0
        ),
        prewarm_seconds=_int_field(
            entry, "prewarm_seconds", where, default=DEFAULT_PREWARM_SECONDS, minimum=0
        ),
        capacity_provider=_str_field(entry, "capacity_provider", where, required=False),
    )
    if scaling.min_workers > scaling.max_workers:
        raise ConfigError(f"{where}: min ({scaling.min_workers}) is greater than max ({scaling.max_workers})")
    return scaling


def parse_queue_map(text: str, *, source: str = "WORKER_QUEUES") -> tuple[QueueScaling, ...]:
    """Parse the queue -> worker service map; raise ConfigError naming the bad entry."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{source} must be a non-empty JSON list of queue objects")
    queues = tuple(_parse_entry(entry, index) for index, entry in enumerate(data))
    seen_queues: set[str] = set()
    seen_services: set[str] = set()
    for scaling in queues:
        if scaling.queue in seen_queues:
            raise ConfigError(f"{source}: queue {scaling.queue!r} is listed twice")
        if scaling.service in seen_services:
            raise ConfigError(
                f"{source}: service {scaling.service!r} serves two queues; give each queue its own service"
            )
        seen_queues.add(scaling.queue)
        seen_services.add(scaling.service)
    return queues


@dataclass(frozen=True)
class AutoscalerConfig:
    """Settings of the autoscaler Lambda, from its environment (fails loudly)."""

    environment: str
    cluster: str
    scheduler_service: str
    queues: tuple[QueueScaling, ...]
    metadata_db_secret: str
    broker_url_secret: str
    event_bus: str = "default"
    broker_key_prefix: str = ""
    # "redis" (default): queue depth from the broker URL secret's Redis; "sqs": from the SQS
    # queues kombu's SQS transport uses (<sqs_queue_prefix><queue>), with the Lambda's role.
    broker_transport: str = "redis"
    sqs_queue_prefix: str = ""
    dry_run: bool = False
    interval_s: float = 60.0  # the schedule's period: the policy's next chance to act

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AutoscalerConfig:
        return cls(
            environment=require_str("ENVIRONMENT_NAME", env),
            cluster=require_str("CLUSTER_NAME", env),
            scheduler_service=require_str("SCHEDULER_SERVICE", env),
            queues=parse_queue_map(require_str("WORKER_QUEUES", env)),
            metadata_db_secret=require_str("METADATA_DB_SECRET_ARN", env),
            broker_url_secret=require_str("BROKER_URL_SECRET_ARN", env),
            event_bus=optional_str("EVENT_BUS_NAME", "default", env),
            broker_key_prefix=optional_str("BROKER_KEY_PREFIX", "", env),
            broker_transport=_transport(optional_str("BROKER_TRANSPORT", "redis", env)),
            sqs_queue_prefix=optional_str("SQS_QUEUE_PREFIX", "", env),
            dry_run=optional_bool("DRY_RUN", False, env),
            interval_s=_positive_float(
                "SCALER_INTERVAL_SECONDS", optional_str("SCALER_INTERVAL_SECONDS", "60", env)
            ),
        )


BROKER_TRANSPORTS = ("redis", "sqs")


def _transport(raw: str) -> str:
    if raw not in BROKER_TRANSPORTS:
        raise ConfigError(f"BROKER_TRANSPORT must be one of {BROKER_TRANSPORTS}, got {raw!r}")
    return raw


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")
    return value
