"""At most one sync per target: a lock file that works on NFS/EFS.

Why not ``fcntl``/``flock``: EFS does support NFSv4 byte-range locks, but a lock held by a
Lambda that is frozen, times out or is killed mid-invocation is only released when the NFS
lease expires, and the holder cannot be seen or explained. Instead the lock is a file created
with ``O_CREAT | O_EXCL`` (atomic on NFSv3+/v4 and local filesystems) that records its owner
and an expiry. A lock past its expiry (its holder died; a Lambda cannot run longer than 15
minutes, so the TTL is set above that) is taken over by renaming it aside (rename is atomic,
so of two racing takers only one wins) and checking that the renamed file is the stale one.
Before the irreversible step (the symlink swap) the holder verifies it still owns the lock,
so a holder whose lock was taken over publishes nothing. Time is an input (``clock``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from airflow_control_plane.dagsync.errors import LockLostError, SyncBusyError

LOCK_NAME = ".dagsync.lock"


@dataclass(frozen=True)
class LockRecord:
    owner: str
    acquired_at: float
    expires_at: float


def is_stale(record: LockRecord | None, *, now: float, file_mtime: float, ttl_s: float) -> bool:
    """Pure: may this lock be taken over? An unreadable record counts by its file's age."""
    if record is None:
        return now - file_mtime > ttl_s
    return now > record.expires_at


class FileLock:
    def __init__(self, directory: Path, owner: str, ttl_s: float, clock: Callable[[], float]) -> None:
        self.path = directory / LOCK_NAME
        self.owner = owner
        self._ttl = ttl_s
        self._clock = clock
        self.took_over: str | None = None

    def acquire(self) -> None:
        if self._create():
            return
        record = self._read(self.path)
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:  # released meanwhile
            if self._create():
                return
            raise SyncBusyError(f"another sync just took the lock at {self.path}") from None
        if not is_stale(record, now=self._clock(), file_mtime=mtime, ttl_s=self._ttl):
            who = f"{record.owner} until {record.expires_at:.0f}" if record else "an unknown owner"
            raise SyncBusyError(f"another sync holds {self.path} ({who}); retry later")
        self._take_over(record)

    def verify(self) -> None:
        """Raise LockLostError unless this owner still holds the lock."""
        record = self._read(self.path)
        if record is None or record.owner != self.owner:
            raise LockLostError(f"lock {self.path} is no longer held by {self.owner}: publishing nothing")

    def release(self) -> None:
        record = self._read(self.path)
        if record is not None and record.owner == self.owner:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def _create(self) -> bool:
        now = self._clock()
        record = LockRecord(self.owner, now, now + self._ttl)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, json.dumps(asdict(record)).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def _take_over(self, stale: LockRecord | None) -> None:
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{self.owner}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            raise SyncBusyError(f"another sync is taking over the stale lock {self.path}") from None
        moved = self._read(aside)
        if stale is not None and (moved is None or moved.owner != stale.owner):
            # we moved a fresh lock another taker had just created: put it back, back off
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
            aside.unlink(missing_ok=True)
            raise SyncBusyError(f"another sync took over the stale lock {self.path} first")
        aside.unlink(missing_ok=True)
        if not self._create():
            raise SyncBusyError(f"another sync took the lock {self.path} during takeover")
        self.took_over = stale.owner if stale else "unreadable lock"

    @staticmethod
    def _read(path: Path) -> LockRecord | None:
        try:
            data = json.loads(path.read_text())
            return LockRecord(str(data["owner"]), float(data["acquired_at"]), float(data["expires_at"]))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None
