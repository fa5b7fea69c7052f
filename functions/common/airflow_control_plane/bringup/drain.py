"""Hibernate's drain step: are task instances still running or queued?

Hibernate stops the scheduler first, then waits (bounded) until the metadata database
shows no task instance in state ``running`` or ``queued`` before it stops the workers.
:class:`PostgresTaskInstanceCounter` counts them with pg8000 and :func:`decide_drain` is
the pure decision; both runtimes use both. The drain-check Lambda counts and decides once
per poll of the hibernate state machine's loop; ``afctl down`` (local/hibernate.py) runs
the same poll loop in-process, its window in seconds turned into polls by
:func:`polls_in_window`, and ``--force`` as a window of one poll.
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

    @property
    def proceed(self) -> bool:
        return self.action is DrainAction.PROCEED

    @property
    def give_up(self) -> bool:
        return self.action is DrainAction.TIMED_OUT

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "running": self.running,
            "queued": self.queued,
            "attempt": self.attempt,
            "reason": self.reason,
        }


def polls_in_window(window_s: float, interval_s: float) -> int:
    """How many polls, ``interval_s`` apart and the first at once, fit in ``window_s``."""
    if window_s < 0 or interval_s <= 0:
        raise InvalidInputError(
            f"a drain window needs window >= 0 and interval > 0, got {window_s}, {interval_s}"
        )
    return int(window_s // interval_s) + 1


def decide_drain(
    counts: ActiveTaskInstances | None, *, attempt: int, max_polls: int, force: bool
) -> DrainDecision:
    """Decide after poll number ``attempt`` (1-based) of at most ``max_polls``.

    ``counts`` None means the count is unknown (metadata database unreachable): like active
    work it never lets the workers stop before the window ends, and then only when forced.
    """
    if attempt < 1 or max_polls < 1:
        raise InvalidInputError(f"attempt and maxPolls must be >= 1, got {attempt} and {max_polls}")
    if counts is None:
        running = queued = 0
        active = "the task count is unknown (metadata DB unreachable)"
    else:
        running, queued = counts.running, counts.queued
        active = (
            f"{counts.total} task instance(s) running or queued "
            f"({counts.running} running and {counts.queued} queued)"
        )

    def decision(action: DrainAction, reason: str) -> DrainDecision:
        return DrainDecision(action, running, queued, attempt, reason)

    if counts is not None and counts.total == 0:
        return decision(DrainAction.PROCEED, f"drained: no running or queued task instances (poll {attempt})")
    if attempt < max_polls:
        return decision(DrainAction.WAIT, f"{active} at poll {attempt} of {max_polls}: waiting")
    if force:
        return decision(DrainAction.PROCEED, f"{active} after {max_polls} poll(s): stopping anyway (force)")
    return decision(
        DrainAction.TIMED_OUT,
        f"{active} after {max_polls} poll(s): workers left running "
        "(set force in the hibernate input, or use --force locally, to stop anyway)",
    )
