"""Queue depth in the Celery broker (Redis transport).

kombu's Redis transport keeps each queue as a Redis list named after the queue, plus one list
per priority step: ``<queue>`` for priority 0 and ``<queue>\\x06\\x16<step>`` for the other steps
(``Channel.sep = '\\x06\\x16'``, ``PRIORITY_STEPS = [0, 3, 6, 9]``, ``_q_for_pri``; checked in
kombu 5.7.0), each key prefixed with ``global_keyprefix`` when set. Messages are LPUSHed and
consumed with RPOP/BRPOP, so LLEN of those keys is what waits; messages a worker has prefetched
(unacked) are not in the lists, and show up as queued/running task instances instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

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
