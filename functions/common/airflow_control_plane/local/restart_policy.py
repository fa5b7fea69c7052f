"""When to restart a crashed service process: exponential backoff, reset after a stable run.

Pure functions of the slot's history and the current time (an input), like ECS's restart
throttling: a process that keeps crashing is restarted after 1, 2, 4, ... seconds (capped),
and one that ran long enough before it died starts again at once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    stable_after_s: float = 60.0


@dataclass(frozen=True)
class SlotHistory:
    """What happened to one slot (service, index): failures in a row and when the last ended."""

    consecutive_failures: int = 0
    last_exit_at: float | None = None
    last_exit_code: int | None = None
    restarts: int = 0


@dataclass(frozen=True)
class RestartDecision:
    start_now: bool
    not_before: float
    reason: str


def record_exit(
    history: SlotHistory, *, started_at: float, exited_at: float, exit_code: int | None, policy: RestartPolicy
) -> SlotHistory:
    """The slot's history after its process ended unexpectedly."""
    ran_for = exited_at - started_at
    failures = 1 if ran_for >= policy.stable_after_s else history.consecutive_failures + 1
    return SlotHistory(failures, exited_at, exit_code, history.restarts)


def backoff_delay(consecutive_failures: int, policy: RestartPolicy) -> float:
    if consecutive_failures <= 0:
        return 0.0
    if consecutive_failures == 1:
        # The first crash after a stable run restarts at once (like ECS replacing a task).
        return 0.0
    return float(min(policy.max_delay_s, policy.base_delay_s * 2.0 ** (consecutive_failures - 2)))


def decide_restart(history: SlotHistory, now: float, policy: RestartPolicy) -> RestartDecision:
    if history.last_exit_at is None or history.consecutive_failures == 0:
        return RestartDecision(True, now, "no previous failure: start")
    delay = backoff_delay(history.consecutive_failures, policy)
    not_before = history.last_exit_at + delay
    code = history.last_exit_code
    if now >= not_before:
        return RestartDecision(
            True,
            not_before,
            f"exited with code {code}, failure {history.consecutive_failures} in a row: "
            f"restart after {delay:.0f} s backoff",
        )
    return RestartDecision(
        False,
        not_before,
        f"exited with code {code}, failure {history.consecutive_failures} in a row: "
        f"waiting {not_before - now:.1f} s more (backoff {delay:.0f} s)",
    )
