"""Hibernate's drain step: are task instances still running or queued?

Hibernate stops the scheduler first, then waits (bounded) until the metadata database
shows no task instance in state ``running`` or ``queued`` before it stops the workers.
:class:`PostgresTaskInstanceCounter` counts them with pg8000 (the same query works from
the drain-check Lambda inside the VPC and from the local runtime); :func:`decide_drain`
is the pure decision the state machine's loop acts on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from airflow_control_plane.errors import InvalidInputError, TransientError

ACTIVE_STATES: tuple[str, ...] = ("running", "queued")
_COUNT_SQL = "SELECT state, count(*) FROM task_instance WHERE state IN ('running', 'queued') GROUP BY state"


@dataclass(frozen=True)
class ActiveTaskInstances:
    running: int
    queued: int

    @property
    def total(self) -> int:
        return self.running + self.queued


class TaskInstanceCounter(Protocol):
    def count_active(self) -> ActiveTaskInstances: ...


class _Connection(Protocol):
    def run(self, sql: str, **params: Any) -> Any: ...

    def close(self) -> None: ...


class PostgresTaskInstanceCounter:
    """Count active task instances in Airflow's metadata database (PostgreSQL, pg8000).

    ``connect`` opens a fresh ``pg8000.native.Connection``; it is closed after each count
    so a Lambda frozen between polls never holds a stale connection.
    """

    def __init__(self, connect: Callable[[], _Connection]) -> None:
        self._connect = connect

    def count_active(self) -> ActiveTaskInstances:
        try:
            connection = self._connect()
        except Exception as exc:  # pg8000 raises InterfaceError/OSError subclasses
            raise TransientError(f"cannot connect to the metadata database: {exc}") from exc
        try:
            rows = connection.run(_COUNT_SQL)
        except Exception as exc:
            raise TransientError(f"cannot count task instances: {exc}") from exc
        finally:
            connection.close()
        counts = {str(state): int(count) for state, count in rows}
        return ActiveTaskInstances(running=counts.get("running", 0), queued=counts.get("queued", 0))


class DrainAction(StrEnum):
    PROCEED = "proceed"  # nothing active (or forced at the end of the window): stop the rest
    WAIT = "wait"  # still active and polls left: wait and count again
    TIMED_OUT = "timed_out"  # still active, no polls left, not forced: fail, stop nothing more


@dataclass(frozen=True)
class DrainDecision:
    action: DrainAction
    running: int
    queued: int
    attempt: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "running": self.running,
            "queued": self.queued,
            "attempt": self.attempt,
            "reason": self.reason,
        }


def decide_drain(counts: ActiveTaskInstances, *, attempt: int, max_polls: int, force: bool) -> DrainDecision:
    """Decide after poll number ``attempt`` (1-based) of at most ``max_polls``."""
    if attempt < 1 or max_polls < 1:
        raise InvalidInputError(f"attempt and maxPolls must be >= 1, got {attempt} and {max_polls}")
    active = f"{counts.running} running and {counts.queued} queued task instance(s)"

    def decision(action: DrainAction, reason: str) -> DrainDecision:
        return DrainDecision(action, counts.running, counts.queued, attempt, reason)

    if counts.total == 0:
        return decision(DrainAction.PROCEED, f"drained: no running or queued task instances (poll {attempt})")
    if attempt < max_polls:
        return decision(DrainAction.WAIT, f"{active} at poll {attempt} of {max_polls}: waiting")
    if force:
        return decision(DrainAction.PROCEED, f"{active} after {max_polls} poll(s): stopping anyway (force)")
    return decision(
        DrainAction.TIMED_OUT,
        f"{active} after {max_polls} poll(s): not stopping workers (set force to stop anyway)",
    )
