"""Drain before scale-in: only a worker that has stopped consuming and is confirmed idle loses its
scale-in protection, and the desired count is lowered only by the workers released.

Every worker holds ECS task scale-in protection from its start (:mod:`.protection`), so ECS
can stop only a worker the scaler released. For the workers a ``SCALE_DOWN`` decision names:

1. **cancel**: Celery control ``cancel_consumer`` for the queue, sent to those hostnames only
   (through the broker, as ``celery control`` does); from its acknowledgement on, the worker
   fetches no new message. A worker that does not acknowledge is resumed and kept;
2. **settle**, then **confirm idle**: ``inspect active`` + ``inspect reserved`` for those
   hostnames. A message fetched in the instant before the cancel is now either running or
   reserved (prefetched). The settle outlasts the broker's blocking read: with Redis, a worker
   whose consumer was cancelled still has a ``BRPOP`` pending for up to kombu's
   ``brpop_timeout`` (1 s); a message handed to it then is pushed back to the queue only when
   the worker reads the reply, so a worker stopped before that loses the message
   (``make bench-scalein`` lost one that way with a 0.2 s settle). A worker that is busy, or
   does not answer, is kept: its consumer is added back (``add_consumer``) and it never lost
   protection -- the race is closed here;
3. **release**: ECS ``UpdateTaskProtection(protectionEnabled=false)`` for exactly the confirmed
   workers' tasks (worker hostname ``worker-<ECS task id>@host`` -> task id). Before that, every
   other worker must be read as protected (a worker still starting is not yet): otherwise ECS
   could stop the wrong task, so nothing is released;
4. **lower** the desired count by the number released. If that fails, the released workers
   are resumed (their keeper protects them again as soon as they consume).

Every step's failure keeps the workers (the safe default): at worst an idle worker lives until
the next evaluation. The pure part (:func:`confirm_idle`) decides from what was read; the
ports do the I/O.

Celery remote control needs a broker with broadcast (fanout) exchanges. kombu's SQS transport
(5.7) declares only ``direct`` exchanges, so Celery workers on SQS run no remote-control mailbox
and nothing can be asked or cancelled; :class:`KombuWorkerControl` raises
:class:`RemoteControlUnavailable` for such a broker before any call, and the autoscaler then
never scales in (README "SQS broker" has what was measured).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from airflow_control_plane.errors import ControlPlaneError, InvalidInputError, TransientError

WORKER_PREFIX = "worker-"
DEFAULT_SETTLE_S = 1.5  # > kombu's Redis brpop_timeout (1 s): see step 2
DEFAULT_REPLY_TIMEOUT_S = 1.0


class RemoteControlUnavailable(ControlPlaneError):
    """The broker's transport offers no Celery remote control: no worker can be inspected,
    cancelled or drained. A lasting property of the broker, not a failed read."""


def remote_control_unavailable_reason(transport: str) -> str:
    """Why a broker's workers cannot be asked or cancelled (named in the autoscaler's decision)."""
    if transport == "sqs":
        return (
            "Celery remote control is unavailable on the SQS broker: kombu's SQS transport declares no "
            'fanout exchange, so workers run no remote-control mailbox (README "SQS broker")'
        )
    return f"Celery remote control is unavailable on the {transport} broker: no fanout exchanges"


def missing_remote_control(broker_url: str, transport_options: Mapping[str, Any] | None = None) -> str:
    """Why Celery workers on this broker run no remote control ("" when they do): Celery's own
    test, the transport's support of fanout exchanges. Building the connection object contacts
    nothing."""
    kombu = importlib.import_module("kombu")
    conn = kombu.Connection(broker_url, transport_options=dict(transport_options or {}))
    try:
        if conn.supports_exchange_type("fanout"):
            return ""
        return remote_control_unavailable_reason(conn.transport.driver_type)
    finally:
        conn.release()


def worker_id(hostname: str) -> str:
    """The id in a worker's Celery hostname ``worker-<id>@host``: the ECS task id on AWS, the
    slot index locally."""
    node = hostname.partition("@")[0]
    if not node.startswith(WORKER_PREFIX) or len(node) == len(WORKER_PREFIX):
        raise InvalidInputError(f"worker hostname {hostname!r} is not worker-<id>@host")
    return node[len(WORKER_PREFIX) :]


class WorkerControl(Protocol):
    """Port: the Celery workers of a queue, through the broker."""

    def busy(self, queue: str, hostnames: Sequence[str] | None = None) -> dict[str, int]:
        """Active + reserved tasks of each worker that answered (all, or just ``hostnames``)."""
        ...

    def cancel(self, queue: str, hostnames: Sequence[str]) -> set[str]:
        """Stop those workers consuming ``queue``; returns the hostnames that acknowledged."""
        ...

    def resume(self, queue: str, hostnames: Sequence[str]) -> set[str]:
        """Make those workers consume ``queue`` again; returns the hostnames that acknowledged."""
        ...


class ProtectionControl(Protocol):
    """Port: scale-in protection of a worker service's tasks (ECS, or the local supervisor)."""

    def unprotected(self, service: str) -> set[str]:
        """Ids of the service's running workers that do not hold scale-in protection."""
        ...

    def release(self, service: str, ids: Sequence[str]) -> set[str]:
        """Release the protection of those workers; returns the ids released."""
        ...


@dataclass(frozen=True)
class Confirmation:
    idle: tuple[str, ...]
    kept: tuple[tuple[str, str], ...]  # (hostname, why)


def confirm_idle(chosen: Sequence[str], acknowledged: Iterable[str], busy: Mapping[str, int]) -> Confirmation:
    """Which chosen workers may be released: acknowledged the cancel, answered, and run and
    hold nothing. Pure."""
    acked = set(acknowledged)
    idle: list[str] = []
    kept: list[tuple[str, str]] = []
    for name in chosen:
        if name not in acked:
            kept.append((name, "did not acknowledge the cancel"))
        elif name not in busy:
            kept.append((name, "did not answer the idle check"))
        elif busy[name] > 0:
            kept.append((name, f"received {busy[name]} task(s) during the drain"))
        else:
            idle.append(name)
    return Confirmation(tuple(idle), tuple(kept))


@dataclass(frozen=True)
class DrainResult:
    released: tuple[str, ...]  # hostnames released and counted down
    kept: tuple[tuple[str, str], ...]
    target: int  # the desired count set (the current one when nothing was released)
    reason: str


def drain(
    *,
    queue: str,
    service: str,
    chosen: Sequence[str],
    current: int,
    control: WorkerControl,
    protection: ProtectionControl,
    set_desired: Callable[[int], None],
    settle_s: float = DEFAULT_SETTLE_S,
    sleep: Callable[[float], None] = time.sleep,
) -> DrainResult:
    """Cancel, confirm idle, release, lower the count (see the module doc). Raises only what
    the caller must record; the workers are resumed before anything is raised."""
    acked = control.cancel(queue, chosen)
    try:
        sleep(settle_s)
        confirmation = confirm_idle(chosen, acked, control.busy(queue, sorted(acked)) if acked else {})
        kept = list(confirmation.kept)
        ids = {name: worker_id(name) for name in confirmation.idle}
        if ids:
            strangers = protection.unprotected(service) - set(ids.values())
            if strangers:
                kept.extend((name, f"worker(s) {sorted(strangers)} hold no protection yet") for name in ids)
                ids = {}
        released_ids = protection.release(service, sorted(ids.values())) if ids else set()
    except Exception:
        control.resume(queue, list(chosen))
        raise
    released = tuple(name for name, task in ids.items() if task in released_ids)
    kept.extend((name, "protection could not be released") for name in ids if name not in released)
    to_resume = [name for name, _ in kept]
    if released:
        try:
            set_desired(current - len(released))
        except Exception:
            control.resume(queue, [*to_resume, *released])
            raise
    if to_resume:
        control.resume(queue, to_resume)
    target = current - len(released)
    parts = [f"drained {', '.join(released) or 'none'}: desired {current} -> {target}"]
    parts.extend(f"kept {name}: {why}" for name, why in kept)
    return DrainResult(released, tuple(kept), target, "; ".join(parts))


def _replies(raw: Any) -> dict[str, Any]:
    """Celery's reply list [{hostname: answer}, ...] as one dict."""
    merged: dict[str, Any] = {}
    for item in raw or []:
        if isinstance(item, dict):
            merged.update(item)
    return merged


class KombuWorkerControl:
    """Celery's remote control over the broker, with kombu (what ``celery inspect``/``control``
    use): the ``celery`` fanout mailbox, JSON, replies on ``reply.celery.pidbox``."""

    def __init__(
        self,
        broker_url: str,
        *,
        timeout_s: float = DEFAULT_REPLY_TIMEOUT_S,
        transport_options: Mapping[str, Any] | None = None,
        namespace: str = "celery",
    ) -> None:
        pidbox = importlib.import_module("kombu.pidbox")
        self._connection = importlib.import_module("kombu").Connection
        self._url = broker_url
        self._timeout = timeout_s
        self._options = dict(transport_options or {})
        self._mailbox = pidbox.Mailbox(namespace, type="fanout", accept=["json"], serializer="json")

    def _require_remote_control(self) -> None:
        """Celery's own test (its worker runs the remote-control mailbox only if the transport
        supports fanout exchanges), made before any broker call."""
        missing = missing_remote_control(self._url, self._options)
        if missing:
            raise RemoteControlUnavailable(missing)

    def _broadcast(
        self, command: str, arguments: Mapping[str, Any], destination: Sequence[str] | None
    ) -> dict[str, Any]:
        try:
            with self._connection(self._url, transport_options=self._options, connect_timeout=5) as conn:
                raw = self._mailbox(conn)._broadcast(
                    command,
                    dict(arguments),
                    list(destination) if destination is not None else None,
                    reply=True,
                    timeout=self._timeout,
                    limit=len(destination) if destination else None,
                )
        except Exception as exc:
            raise TransientError(f"Celery control {command} failed: {exc}") from exc
        return _replies(raw)

    def busy(self, queue: str, hostnames: Sequence[str] | None = None) -> dict[str, int]:
        self._require_remote_control()
        # Addressed to every worker, a broadcast waits its whole reply timeout: the three
        # questions go out at once, each on its own connection.
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="celery-inspect") as pool:
            asked = [
                pool.submit(self._broadcast, c, {}, hostnames)
                for c in ("active", "reserved", "active_queues")
            ]
            active, reserved, consuming = (future.result() for future in asked)
        counts: dict[str, int] = {}
        for name, queues in consuming.items():
            names = {q.get("name") for q in queues or [] if isinstance(q, dict)}
            draining = hostnames is not None and name in hostnames
            if queue not in names and not draining:
                continue  # a worker of another queue (several queues share one broker)
            if name not in active or name not in reserved:
                continue  # no full answer: unknown, so never counted as idle
            counts[name] = len(active[name] or []) + len(reserved[name] or [])
        return counts

    def _consumer(self, command: str, queue: str, hostnames: Sequence[str]) -> set[str]:
        if not hostnames:
            return set()
        self._require_remote_control()
        replies = self._broadcast(command, {"queue": queue}, hostnames)
        return {name for name, answer in replies.items() if isinstance(answer, dict) and "ok" in answer}

    def cancel(self, queue: str, hostnames: Sequence[str]) -> set[str]:
        return self._consumer("cancel_consumer", queue, hostnames)

    def resume(self, queue: str, hostnames: Sequence[str]) -> set[str]:
        return self._consumer("add_consumer", queue, hostnames)


class InMemoryWorkerControl:
    """Fake for unit tests: workers with busy counts, consuming or not."""

    def __init__(self, busy: Mapping[str, int], queue_of: Mapping[str, str] | None = None) -> None:
        self.counts = dict(busy)
        self.queue_of = dict(queue_of or {})  # hostname -> queue; absent: every queue
        self.consuming = set(busy)
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.on_cancel: Callable[[str], None] | None = None  # e.g. a task landing during the drain
        self.silent: set[str] = set()
        self.down = False
        self.unavailable = ""  # set: a broker without remote control (RemoteControlUnavailable)

    def _require_remote_control(self) -> None:
        if self.unavailable:
            raise RemoteControlUnavailable(self.unavailable)

    def busy(self, queue: str, hostnames: Sequence[str] | None = None) -> dict[str, int]:
        self._require_remote_control()
        if self.down:
            raise TransientError("Celery control active failed: broker unreachable")
        if hostnames is None:
            names = [n for n in self.counts if self.queue_of.get(n, queue) == queue and n in self.consuming]
        else:
            names = [n for n in hostnames if n in self.counts]
        return {n: self.counts[n] for n in names if n not in self.silent}

    def cancel(self, queue: str, hostnames: Sequence[str]) -> set[str]:
        self._require_remote_control()
        self.calls.append(("cancel", tuple(hostnames)))
        acked = {n for n in hostnames if n in self.counts and n not in self.silent}
        self.consuming -= acked
        for name in acked:
            if self.on_cancel:
                self.on_cancel(name)
        return acked

    def resume(self, queue: str, hostnames: Sequence[str]) -> set[str]:
        self._require_remote_control()
        self.calls.append(("resume", tuple(hostnames)))
        acked = {n for n in hostnames if n in self.counts}
        self.consuming |= acked
        return acked


class InMemoryProtection:
    """Fake: every worker protected until released."""

    def __init__(self, ids: Iterable[str]) -> None:
        self.protected = set(ids)
        self.released: set[str] = set()

    def unprotected(self, service: str) -> set[str]:
        return set(self.released)

    def release(self, service: str, ids: Sequence[str]) -> set[str]:
        done = {i for i in ids if i in self.protected}
        self.protected -= done
        self.released |= done
        return done
