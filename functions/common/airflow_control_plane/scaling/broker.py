"""Queue depth in the Celery broker: Redis transport (the default) or Amazon SQS.

kombu's Redis transport keeps each queue as a Redis list named after the queue, plus one list
per priority step: ``<queue>`` for priority 0 and ``<queue>\\x06\\x16<step>`` for the other steps
(``Channel.sep = '\\x06\\x16'``, ``PRIORITY_STEPS = [0, 3, 6, 9]``, ``_q_for_pri``; checked in
kombu 5.7.0), each key prefixed with ``global_keyprefix`` when set. Messages are LPUSHed and
consumed with RPOP/BRPOP, so LLEN of those keys is what waits; messages a worker has prefetched
(unacked) are not in the lists, and show up as queued/running task instances instead.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any, Protocol

import redis

from airflow_control_plane.errors import TransientError

KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS: tuple[int, ...] = (0, 3, 6, 9)


class BrokerDepth(Protocol):
    """Port: how many messages wait in one Celery queue."""

    def waiting(self, queue: str) -> int: ...


def kombu_queue_keys(
    queue: str, *, priority_steps: Sequence[int] = KOMBU_PRIORITY_STEPS, global_keyprefix: str = ""
) -> list[str]:
    """The Redis list keys kombu uses for ``queue``, one per priority step."""
    return [
        f"{global_keyprefix}{queue}{KOMBU_PRIORITY_SEP}{step}" if step else f"{global_keyprefix}{queue}"
        for step in priority_steps
    ]


class RedisQueueDepth:
    """LLEN over every priority list of the queue, in one pipeline round trip."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        priority_steps: Sequence[int] = KOMBU_PRIORITY_STEPS,
        global_keyprefix: str = "",
    ) -> None:
        self._client = client
        self._steps = tuple(priority_steps)
        self._prefix = global_keyprefix

    @classmethod
    def from_url(cls, url: str, *, global_keyprefix: str = "") -> RedisQueueDepth:
        return cls(
            redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5),
            global_keyprefix=global_keyprefix,
        )

    def waiting(self, queue: str) -> int:
        keys = kombu_queue_keys(queue, priority_steps=self._steps, global_keyprefix=self._prefix)
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.llen(key)
                sizes = pipe.execute()
        except redis.RedisError as exc:
            raise TransientError(f"broker unreadable (queue {queue!r}): {exc}") from exc
        return sum(int(size) for size in sizes)


# kombu's SQS transport (kombu/transport/SQS, 5.7.0): the SQS queue of a Celery queue is
# ``entity_name(queue_name_prefix + queue)``: '.' becomes '-', other punctuation but '-' and
# '_' becomes '_'.
_SQS_NAME_TABLE = {ord(c): ord("_") for c in string.punctuation if c not in "-_."}
_SQS_NAME_TABLE[ord(".")] = ord("-")
SQS_DEPTH_ATTRIBUTES = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")


def kombu_sqs_queue_name(queue: str, *, queue_name_prefix: str = "") -> str:
    """The SQS queue name kombu's SQS transport uses for the Celery queue ``queue``."""
    name = queue_name_prefix + queue
    if name.endswith(".fifo"):
        return name[: -len(".fifo")].translate(_SQS_NAME_TABLE) + ".fifo"
    return name.translate(_SQS_NAME_TABLE)


class SqsQueueDepth:
    """ApproximateNumberOfMessages + ApproximateNumberOfMessagesNotVisible of the queue's SQS
    queue: messages waiting plus messages a worker received and has not acknowledged yet.

    Airflow's Celery executor acknowledges late (``task_acks_late``), so a running task's
    message stays in flight until it ends: it is counted here and as a running task instance,
    which can ask for one worker more near saturation (still bounded by the queue's max), never
    for fewer. SQS figures are approximate (eventually consistent for about a minute).
    """

    def __init__(self, client: Any, *, queue_name_prefix: str = "") -> None:
        self._client = client
        self._prefix = queue_name_prefix
        self._urls: dict[str, str] = {}

    def _url(self, queue: str) -> str:
        if queue not in self._urls:
            name = kombu_sqs_queue_name(queue, queue_name_prefix=self._prefix)
            self._urls[queue] = str(self._client.get_queue_url(QueueName=name)["QueueUrl"])
        return self._urls[queue]

    def waiting(self, queue: str) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            attributes = self._client.get_queue_attributes(
                QueueUrl=self._url(queue), AttributeNames=list(SQS_DEPTH_ATTRIBUTES)
            )["Attributes"]
        except (BotoCoreError, ClientError) as exc:
            raise TransientError(f"broker unreadable (SQS queue of {queue!r}): {exc}") from exc
        return sum(int(attributes.get(name, 0)) for name in SQS_DEPTH_ATTRIBUTES)
