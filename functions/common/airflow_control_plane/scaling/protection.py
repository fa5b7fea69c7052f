"""Worker-side ECS task scale-in protection: every worker protects itself from its start and
keeps it while it consumes or works; only the scaler's drain releases it.

The ECS container agent injects ``ECS_AGENT_URI`` into every container; ``PUT
$ECS_AGENT_URI/task-protection/v1/state`` with ``{"ProtectionEnabled": true, "ExpiresInMinutes":
N}`` protects the whole ECS task (1 to 2,880 minutes, default 120), ``{"ProtectionEnabled":
false}`` releases it, ``GET`` reads it (AWS: "Amazon ECS task scale-in protection endpoint").
The task role needs ``ecs:UpdateTaskProtection`` and ``ecs:GetTaskProtection``.

How it is wired into a Celery worker (:func:`install_celery_hooks`, a no-op without
``ECS_AGENT_URI``, so local workers are untouched):

- ``worker_init`` (main process, before it connects to the broker): protect at once, so a
  worker is protected before it can receive its first task;
- ``worker_ready`` (main process): a :class:`ProtectionKeeper` thread reads, every ``interval``
  seconds, whether the worker still consumes its queues and how many requests it runs or holds
  reserved, and through the pure :func:`decide_protection` protects and renews while it
  consumes or works. A worker that stopped consuming (the scaler's drain sent
  ``cancel_consumer``) and is idle is left alone: the scaler releases its protection
  (``UpdateTaskProtection``) after confirming it idle, and the keeper must not take it back.
  If its consumer is added back (it got a task during the drain), it protects again;
- ``task_prerun`` (in the pool child that runs the task): protect, a safety net for a task
  that reaches a worker whose protection was released.

Expiry is a safety net, not the mechanism: protection is renewed every ``interval`` while busy,
so a task longer than ``expires_minutes`` stays protected, and a worker that dies while
protected stops blocking scale-in when the expiry passes.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from airflow_control_plane.errors import InvalidInputError, TransientError

LOG = logging.getLogger(__name__)
PROTECTION_PATH = "/task-protection/v1/state"
DEFAULT_EXPIRES_MINUTES = 60
DEFAULT_RENEW_BEFORE = timedelta(minutes=20)
DEFAULT_INTERVAL_SECONDS = 15.0


class ProtectionAction(StrEnum):
    PROTECT = "protect"
    NONE = "none"


@dataclass(frozen=True)
class ProtectionState:
    protected: bool
    expires_at: datetime | None = None


@dataclass(frozen=True)
class ProtectionDecision:
    action: ProtectionAction
    reason: str
    expires_minutes: int | None = None


def decide_protection(
    busy: int,
    state: ProtectionState,
    now: datetime,
    *,
    consuming: bool = True,
    expires_minutes: int = DEFAULT_EXPIRES_MINUTES,
    renew_before: timedelta = DEFAULT_RENEW_BEFORE,
) -> ProtectionDecision:
    """Protect (or renew) while consuming or busy; once drained and idle, leave it to the
    scaler. The worker never releases protection itself. Pure."""
    if not 1 <= expires_minutes <= 2880:
        raise InvalidInputError(f"ExpiresInMinutes must be 1..2880, got {expires_minutes}")
    if busy > 0 or consuming:
        what = f"{busy} task(s) running or reserved" if busy else "consuming, idle"
        if not state.protected:
            return ProtectionDecision(ProtectionAction.PROTECT, f"{what} and not protected", expires_minutes)
        if state.expires_at is None or state.expires_at - now <= renew_before:
            return ProtectionDecision(
                ProtectionAction.PROTECT, f"{what}, protection expires soon: renewing", expires_minutes
            )
        return ProtectionDecision(ProtectionAction.NONE, f"{what}, protection valid")
    return ProtectionDecision(
        ProtectionAction.NONE, "drained (not consuming) and idle: the scaler releases protection"
    )


def _parse_expiry(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class AgentProtectionClient:
    """Pure-stdlib client of the agent endpoint (no boto3 in the worker's hot path)."""

    def __init__(self, agent_uri: str, *, timeout: float = 3.0) -> None:
        if not agent_uri.startswith(("http://", "https://")):
            raise InvalidInputError(f"ECS_AGENT_URI must be an http(s) URL, got {agent_uri!r}")
        self._url = agent_uri.rstrip("/") + PROTECTION_PATH
        self._timeout = timeout

    def _call(self, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the agent URL is validated as http(s) above
            self._url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310
                payload = json.loads(response.read() or b"{}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise TransientError(f"task protection {method} {self._url} failed: {exc}") from exc
        if not isinstance(payload, dict):
            raise TransientError(f"task protection {method}: unexpected answer {payload!r}")
        for key in ("error", "failure"):
            if payload.get(key):
                raise TransientError(f"task protection {method}: agent {key} {payload[key]}")
        return payload

    @staticmethod
    def _state(payload: dict[str, Any]) -> ProtectionState:
        protection = payload.get("protection", payload)
        if not isinstance(protection, dict):
            return ProtectionState(False)
        return ProtectionState(
            bool(protection.get("ProtectionEnabled", False)), _parse_expiry(protection.get("ExpirationDate"))
        )

    def get(self) -> ProtectionState:
        return self._state(self._call("GET"))

    def protect(self, expires_minutes: int = DEFAULT_EXPIRES_MINUTES) -> ProtectionState:
        return self._state(
            self._call("PUT", {"ProtectionEnabled": True, "ExpiresInMinutes": expires_minutes})
        )

    def release(self) -> ProtectionState:
        return self._state(self._call("PUT", {"ProtectionEnabled": False}))


class ProtectionKeeper:
    """Applies :func:`decide_protection` to the worker's busy count, every ``interval`` seconds."""

    def __init__(
        self,
        client: AgentProtectionClient,
        busy: Callable[[], int],
        *,
        consuming: Callable[[], bool] = lambda: True,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        interval: float = DEFAULT_INTERVAL_SECONDS,
        expires_minutes: int = DEFAULT_EXPIRES_MINUTES,
    ) -> None:
        self._client = client
        self._busy = busy
        self._consuming = consuming
        self._clock = clock
        self._interval = interval
        self._expires = expires_minutes
        self._state = ProtectionState(False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> ProtectionDecision:
        """One step: read busy and the agent's state, decide, act."""
        busy = self._busy()
        consuming = self._consuming()
        try:
            self._state = self._client.get()
        except TransientError as exc:
            LOG.warning("reading task protection failed, using the last known state: %s", exc)
        decision = decide_protection(
            busy, self._state, self._clock(), consuming=consuming, expires_minutes=self._expires
        )
        if decision.action is ProtectionAction.PROTECT:
            self._state = self._client.protect(self._expires)
        if decision.action is not ProtectionAction.NONE:
            LOG.info("task protection: %s (%s)", decision.action.value, decision.reason)
        return decision

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # keep the keeper alive; the next tick retries
                LOG.exception("task protection tick failed")
            self._stop.wait(self._interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ecs-task-protection", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._interval + 5)


def _celery_busy_count() -> int:
    """Active plus reserved (prefetched, unacknowledged) requests of this worker process."""
    state = importlib.import_module("celery.worker.state")
    return len(state.active_requests) + len(state.reserved_requests)


def _consumes(consumer: Any) -> bool:
    """Whether the Celery consumer still consumes any queue (``cancel_consumer`` removes them).
    Unknown (not started yet) counts as consuming: protection is then kept."""
    task_consumer = getattr(consumer, "task_consumer", None)
    queues = getattr(task_consumer, "queues", None)
    return True if queues is None else len(queues) > 0


def install_celery_hooks(environ: dict[str, str] | None = None) -> bool:
    """Connect the protection hooks to Celery's signals; returns False (no-op) outside ECS."""
    env = os.environ if environ is None else environ
    agent_uri = env.get("ECS_AGENT_URI", "").strip()
    if not agent_uri:
        return False
    expires = int(env.get("WORKER_PROTECTION_EXPIRES_MINUTES", str(DEFAULT_EXPIRES_MINUTES)))
    interval = float(env.get("WORKER_PROTECTION_INTERVAL_SECONDS", str(DEFAULT_INTERVAL_SECONDS)))
    client = AgentProtectionClient(agent_uri)
    signals = importlib.import_module("celery.signals")
    consumer: list[Any] = []
    keeper = ProtectionKeeper(
        client,
        _celery_busy_count,
        consuming=lambda: _consumes(consumer[0]) if consumer else True,
        interval=interval,
        expires_minutes=expires,
    )

    def protect_now(what: str) -> None:
        try:
            client.protect(expires)
        except TransientError:
            LOG.exception("could not protect the task at %s; the keeper retries", what)

    def on_worker_init(**_: object) -> None:
        protect_now("worker start")

    def on_task_prerun(**_: object) -> None:
        protect_now("task start")

    def on_worker_ready(sender: Any = None, **_: object) -> None:
        if sender is not None:
            consumer.append(sender)
        keeper.start()

    def on_worker_shutdown(**_: object) -> None:
        keeper.stop()

    signals.worker_init.connect(on_worker_init, weak=False)
    signals.task_prerun.connect(on_task_prerun, weak=False)
    signals.worker_ready.connect(on_worker_ready, weak=False)
    signals.worker_shutting_down.connect(on_worker_shutdown, weak=False)
    return True
