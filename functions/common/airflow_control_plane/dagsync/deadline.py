"""An overall deadline for one sync, below the Lambda's own timeout.

Checked between steps (``check``) and enforced during network I/O (``alarm``): in the main
thread a ``SIGALRM`` timer interrupts a blocking read, so a server that trickles a byte every
few seconds cannot keep a sync alive past the deadline; elsewhere the socket timeouts are
capped at the remaining time. Expiry raises :class:`SyncDeadlineError`; the publish is
crash-safe at every instant, so stopping anywhere leaves ``current`` on a complete release.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from airflow_control_plane.dagsync.errors import SyncDeadlineError


class Deadline:
    def __init__(self, budget_s: float, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self.budget_s = budget_s
        self._at = monotonic() + budget_s

    def remaining(self) -> float:
        return self._at - self._monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def check(self, step: str) -> None:
        if self.expired():
            raise SyncDeadlineError(
                f"the sync ran past its {self.budget_s:.0f} s deadline before {step}: nothing more was "
                "done; the next sync resumes from the live release"
            )

    @contextmanager
    def alarm(self) -> Iterator[None]:
        """Interrupt blocking I/O at the deadline (main thread only; elsewhere a no-op)."""
        self.check("talking to the Git remote")
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def expire(signum: int, frame: FrameType | None) -> None:
            raise SyncDeadlineError(
                f"the sync ran past its {self.budget_s:.0f} s deadline during network I/O"
            )

        previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, max(self.remaining(), 0.001))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
