"""One way to wait: poll a check until it answers, with the clock and the sleep as inputs.

Every bounded wait in the control plane and its tests goes through `poll_until`, so a wait
is tested with a fake clock instead of real seconds, and every timeout says what it waited
for and what it saw last.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class PollTimedOut(TimeoutError):
    """The check never answered within the timeout; `last` is what it returned last."""

    def __init__(self, what: str, timeout_s: float, last: object) -> None:
        super().__init__(f"{what}: not done after {timeout_s:g} s (last seen: {last!r:.300})")
        self.what = what
        self.timeout_s = timeout_s
        self.last = last


def poll_until(
    check: Callable[[], T | None],
    *,
    timeout_s: float,
    interval_s: float = 0.5,
    what: str = "condition",
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `check` until it returns something other than None or False; return that.

    The check runs at least once, even with a timeout of 0. Exceptions from the check
    propagate: a check that can fail transiently catches its own errors and returns None.
    """
    if timeout_s < 0 or interval_s <= 0:
        raise ValueError(f"poll_until needs timeout_s >= 0 and interval_s > 0, got {timeout_s}, {interval_s}")
    deadline = clock() + timeout_s
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        remaining = deadline - clock()
        if remaining <= 0:
            raise PollTimedOut(what, timeout_s, value)
        sleep(min(interval_s, remaining))


def poll_done(
    check: Callable[[], object],
    *,
    timeout_s: float,
    interval_s: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """`poll_until` for a wait whose timeout is not an error by itself (the caller escalates,
    say from SIGTERM to SIGKILL): True when `check` answered in time, False when not."""
    try:
        poll_until(check, timeout_s=timeout_s, interval_s=interval_s, clock=clock, sleep=sleep)
    except PollTimedOut:
        return False
    return True
