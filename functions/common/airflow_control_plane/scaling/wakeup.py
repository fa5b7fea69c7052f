"""The fast wake-up path for a queue sitting at zero: the scheduler asks for an evaluation
when it publishes a task, instead of waiting for the next one-minute schedule.

Airflow's CeleryExecutor publishes every task instance to the broker from the scheduler; a
Celery ``after_task_publish`` hook there (:func:`install_wakeup_hook`, wired through
:mod:`.celery_config`) invokes the autoscaler Lambda asynchronously (``InvocationType=Event``,
a wake-up event) for the task's queue. :func:`should_wake` rate-limits it per queue, so a
burst of thousands of tasks costs one invocation per queue per ``min_interval``. The Lambda's
evaluation is the same idempotent read -> decide -> act as the schedule's, so a wake-up can
only ever scale up sooner, never do anything the schedule would not.

Measured in the simulation (``afctl simulate``, strategy ``policy+wake``): it removes the wait
for the next scheduled tick (0-60 s, 30 s on average) from the first task on an idle queue;
what remains is the Fargate start-up. The real Lambda hop (async invoke, cold start included)
cannot be measured without AWS: it is documented as 0.1-1 s, small beside the 30-60 s start-up.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

LOG = logging.getLogger(__name__)
DEFAULT_MIN_INTERVAL_S = 30.0
WAKEUP_DETAIL_TYPE = "Worker wake-up"


def should_wake(
    queue: str, watched: frozenset[str], last_wake: Mapping[str, float], now: float, min_interval: float
) -> bool:
    """Wake for a watched queue, at most once per ``min_interval`` seconds (pure)."""
    if queue not in watched:
        return False
    last = last_wake.get(queue)
    return last is None or now - last >= min_interval


class Waker(Protocol):
    def wake(self, queue: str) -> None: ...


class LambdaWaker:
    """Invoke the autoscaler asynchronously with a wake-up event (lambda:InvokeFunction)."""

    def __init__(self, client: Any, function_name: str) -> None:
        self._client = client
        self._function = function_name

    def wake(self, queue: str) -> None:
        event = {"detail-type": WAKEUP_DETAIL_TYPE, "source": "airflow.scheduler", "detail": {"queue": queue}}
        self._client.invoke(
            FunctionName=self._function, InvocationType="Event", Payload=json.dumps(event).encode()
        )


class WakeUpHook:
    """Rate-limited wake-ups from the publishing process; failures are logged, never raised
    (a failed wake-up only means the schedule wakes the queue a little later)."""

    def __init__(
        self,
        waker: Waker,
        watched: frozenset[str],
        *,
        min_interval: float = DEFAULT_MIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._waker = waker
        self._watched = watched
        self._min_interval = min_interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def on_publish(self, queue: str) -> bool:
        now = self._clock()
        with self._lock:
            if not should_wake(queue, self._watched, self._last, now, self._min_interval):
                return False
            self._last[queue] = now
        try:
            self._waker.wake(queue)
        except Exception:  # the schedule is the fallback; never break task publishing
            LOG.exception("autoscaler wake-up for queue %s failed; the schedule will pick it up", queue)
            return False
        return True


def _queue_of(headers: Mapping[str, Any] | None, routing_key: str | None) -> str | None:
    if routing_key:
        return routing_key
    if headers:
        value = headers.get("queue")
        return str(value) if value else None
    return None


def install_wakeup_hook(
    environ: Mapping[str, str] | None = None, waker: Waker | None = None
) -> WakeUpHook | None:
    """Connect to Celery's ``after_task_publish``; a no-op unless AUTOSCALER_WAKEUP_FUNCTION is
    set (the scheduler's task definition sets it, plus AUTOSCALER_WAKEUP_QUEUES)."""
    env = os.environ if environ is None else environ
    function = env.get("AUTOSCALER_WAKEUP_FUNCTION", "").strip()
    if not function and waker is None:
        return None
    watched = frozenset(
        q.strip() for q in env.get("AUTOSCALER_WAKEUP_QUEUES", "default").split(",") if q.strip()
    )
    interval = float(env.get("AUTOSCALER_WAKEUP_MIN_INTERVAL_SECONDS", str(DEFAULT_MIN_INTERVAL_S)))
    if waker is None:
        import boto3
        from botocore.exceptions import BotoCoreError

        try:
            waker = LambdaWaker(boto3.client("lambda"), function)
        except BotoCoreError as exc:
            # The wake-up only shortens a wait; it must never stop the scheduler from starting
            # (the one-minute schedule still scales the workers).
            LOG.warning("autoscaler wake-up disabled: cannot create a Lambda client (%s)", exc)
            return None
    hook = WakeUpHook(waker, watched, min_interval=interval)
    signals = __import__("celery.signals", fromlist=["after_task_publish"])

    def after_publish(
        headers: Mapping[str, Any] | None = None, routing_key: str | None = None, **_: object
    ) -> None:
        queue = _queue_of(headers, routing_key)
        if queue:
            hook.on_publish(queue)

    signals.after_task_publish.connect(after_publish, weak=False)
    return hook
