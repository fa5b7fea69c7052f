"""The SQS broker option of the local runtime (``AFCTL_BROKER=sqs``), as on AWS with
``CeleryBroker=sqs``.

Every Airflow component gets ``sqs://`` as broker URL (no credentials: kombu signs with the
ordinary AWS credential chain of the process) and the transport options template.yaml gives the
Celery containers (region, queue-name prefix, SQS's longest visibility timeout), plus where
the SQS endpoint is when it is not AWS's own (a local SQS such as moto's server). ``up``
creates the worker queue and its dead-letter queue with the template's attributes, so the
autoscaler can read the depth before the first task is sent; the autoscaler reads it through
the same :class:`SqsQueueDepth` as the Lambda.

Celery remote control (``inspect``, ``cancel_consumer``) does not work on kombu's SQS transport
(README "SQS broker"), so with this broker the autoscaler never drains a worker: workers scale
up from zero and stay until ``afctl down``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from airflow_control_plane.errors import ConfigError
from airflow_control_plane.scaling.broker import SqsQueueDepth, kombu_sqs_queue_name

BROKERS = ("redis", "sqs")
# template.yaml's broker queues (generated:broker-queues): SQS's longest visibility timeout,
# 4 days' retention, 10 s long polling, a dead-letter queue after 5 receives.
VISIBILITY_TIMEOUT_S = 43200
QUEUE_ATTRIBUTES = {"VisibilityTimeout": str(VISIBILITY_TIMEOUT_S), "MessageRetentionPeriod": "345600"}
LONG_POLL_S = 10
MAX_RECEIVES = 5
DLQ_RETENTION_S = 1209600
TRANSPORT_ENV = "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__"


@dataclass(frozen=True)
class SqsBroker:
    """Where the local runtime's SQS broker is and how kombu names its queues."""

    region: str
    queue_name_prefix: str
    endpoint_url: str = ""  # "": AWS's own endpoint for the region

    def __post_init__(self) -> None:
        if self.endpoint_url:
            parts = urlsplit(self.endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
                raise ConfigError(
                    f"AFCTL_SQS_ENDPOINT_URL must be http(s)://host[:port], got {self.endpoint_url!r}"
                )
        if kombu_sqs_queue_name(self.queue_name_prefix) != self.queue_name_prefix:
            raise ConfigError(
                f"AFCTL_SQS_QUEUE_PREFIX {self.queue_name_prefix!r} may hold only letters, digits, - and _"
            )

    @property
    def broker_url(self) -> str:
        """kombu's SQS URL: the endpoint's host and port (kombu picks http or https from the
        ``is_secure`` option), no credentials."""
        if not self.endpoint_url:
            return "sqs://"
        parts = urlsplit(self.endpoint_url)
        port = f":{parts.port}" if parts.port else ""
        return f"sqs://{parts.hostname}{port}/"

    @property
    def transport_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "region": self.region,
            "queue_name_prefix": self.queue_name_prefix,
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
        }
        if self.endpoint_url:
            options["is_secure"] = urlsplit(self.endpoint_url).scheme == "https"
        return options

    def airflow_env(self) -> dict[str, str]:
        """The ``[celery_broker_transport_options]`` settings, as template.yaml sets them."""
        return {f"{TRANSPORT_ENV}{key.upper()}": str(value) for key, value in self.transport_options.items()}

    def client(self) -> Any:
        """A boto3 SQS client on the endpoint (credentials: the process's AWS chain)."""
        import boto3

        return boto3.client("sqs", region_name=self.region, endpoint_url=self.endpoint_url or None)

    def queue_name(self, queue: str) -> str:
        return kombu_sqs_queue_name(queue, queue_name_prefix=self.queue_name_prefix)

    def ensure_queue(self, client: Any, queue: str) -> str:
        """Create the Celery queue's SQS queue and its dead-letter queue as the template does
        (CreateQueue with the same attributes is idempotent); returns the queue's name."""
        dlq_url = client.create_queue(
            QueueName=f"{self.queue_name(queue)}-dlq",
            Attributes={"MessageRetentionPeriod": str(DLQ_RETENTION_S)},
        )["QueueUrl"]
        dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        name = self.queue_name(queue)
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVES}
        client.create_queue(
            QueueName=name,
            Attributes={
                **QUEUE_ATTRIBUTES,
                "ReceiveMessageWaitTimeSeconds": str(LONG_POLL_S),
                "RedrivePolicy": json.dumps(redrive),
            },
        )
        return name

    def depth(self) -> SqsQueueDepth:
        return SqsQueueDepth(self.client(), queue_name_prefix=self.queue_name_prefix)

    def to_record(self) -> dict[str, str]:
        return {
            "region": self.region,
            "queue_name_prefix": self.queue_name_prefix,
            "endpoint_url": self.endpoint_url,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SqsBroker:
        try:
            return cls(
                region=str(record["region"]),
                queue_name_prefix=str(record["queue_name_prefix"]),
                endpoint_url=str(record.get("endpoint_url") or ""),
            )
        except KeyError as exc:
            raise ConfigError(f"the recorded SQS broker lacks {exc}; run `afctl up` again") from None
