"""At most one sync per target: a lease file that a dead holder cannot keep, safe on NFS/EFS.

Why not ``flock``/``fcntl`` on EFS: EFS does support NFSv4.1 byte-range and whole-file locks,
and the server releases them when the client's NFS lease lapses, but that lapse is the
client's business: a Lambda sandbox that is frozen (after a timeout or between
invocations) keeps its NFS client and its lock alive, and nothing in the lock says who holds
it or lets an operator break it. So the lease is a file that records its holder, created
whole: the record is written to a file of the holder's own and hard-linked to the lease name
(``link`` fails when the name exists, atomically, on NFSv3+/v4 and local file systems). A
holder killed while creating it leaves its own file at most, never an empty lease that nobody
can read and that would block every sync for a TTL. And:

- it is short (``ttl_s``, one minute by default) and renewed by a heartbeat thread every
  third of it, so a holder that stops (killed, frozen, timed out) loses it within one TTL
  while a long sync keeps it as long as it runs;
- a holder on this machine (same host and boot id) whose process is gone (or whose pid now
  belongs to another process: the start time differs) is provably dead, and its lease is
  taken at once;
- a sync that finds a lease from another machine waits for it (up to ``wait_s``): a lease
  that is not renewed meanwhile expires and is taken over; one that is renewed has a living
  holder, and the sync reports it busy straight away;
- ``break_lease`` (``afctl sync-break-lease``) removes a lease by hand.

Taking over renames the lease aside (rename is atomic, so of two racing takers only one
wins) and checks that the renamed file is the stale one. Before the irreversible step (the
symlink swap) the holder verifies it still holds the lease. Time is an input (``clock``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from airflow_control_plane.dagsync.errors import LockLostError, SyncBusyError

LOCK_NAME = ".dagsync.lock"
DEFAULT_TTL_S = 60.0


@dataclass(frozen=True)
class Identity:
    """Who holds a lease: enough to prove, on the same machine, that the holder is dead."""

    host: str
    boot_id: str
    pid: int
    started: str  # the process's start time in clock ticks since boot ("" where unknown)


@dataclass(frozen=True)
class LockRecord:
    owner: str
    acquired_at: float
    expires_at: float
    host: str = ""
    boot_id: str = ""
    pid: int = 0
    started: str = ""

    def describe(self, now: float) -> str:
        where = f"pid {self.pid} on {self.host}" if self.host else "an unknown process"
        left = self.expires_at - now
        when = f"expires in {left:.0f} s" if left > 0 else f"expired {-left:.0f} s ago"
        return f"sync {self.owner[:12]} ({where}; {when})"


def process_started(pid: int) -> str:
    """Start time of ``pid`` in clock ticks since boot (Linux), or "" if unknown or gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]


def this_process() -> Identity:
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = ""
    pid = os.getpid()
    return Identity(socket.gethostname(), boot_id, pid, process_started(pid))


def pid_alive(pid: int, started: str) -> bool:
    """True unless ``pid`` is provably gone (or reused by a process started at another time)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now_started = process_started(pid)
    return not (started and now_started and now_started != started)


def holder_is_dead(record: LockRecord, me: Identity, alive: Callable[[int, str], bool]) -> bool:
    """Pure: provably dead only on the same machine (same host and boot) with the process gone."""
    same_machine = bool(record.host) and record.host == me.host and record.boot_id == me.boot_id
    return same_machine and record.pid > 0 and not alive(record.pid, record.started)


def is_stale(record: LockRecord | None, *, now: float, file_mtime: float, ttl_s: float) -> bool:
    """Pure: expired? An unreadable record counts by its file's age."""
    if record is None:
        return now - file_mtime > ttl_s
    return now > record.expires_at


class FileLock:
    def __init__(
        self,
        directory: Path,
        owner: str,
        ttl_s: float,
        clock: Callable[[], float],
        *,
        wait_s: float = 0.0,
        identity: Identity | None = None,
        alive: Callable[[int, str], bool] = pid_alive,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = directory / LOCK_NAME
        self.owner = owner
        self._ttl = ttl_s
        self._clock = clock
        self._wait = wait_s
        self._me = identity or this_process()
        self._alive = alive
        self._sleep = sleep
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self.took_over: str | None = None

    # -- acquire ------------------------------------------------------------------------------
    def acquire(self) -> None:
        waited = 0.0
        first_seen: LockRecord | None = None
        while True:
            if self._create():
                return
            record = self._read(self.path)
            try:
                mtime = self.path.stat().st_mtime
            except FileNotFoundError:  # released meanwhile
                continue
            now = self._clock()
            dead = record is not None and holder_is_dead(record, self._me, self._alive)
            if dead or is_stale(record, now=now, file_mtime=mtime, ttl_s=self._ttl):
                self._take_over(record)
                return
            renewed = first_seen is not None and record is not None and record != first_seen
            if renewed or waited >= self._wait:
                who = record.describe(now) if record else "an unreadable lease"
                alive = " and renewed it while we waited" if renewed else ""
                raise SyncBusyError(
                    f"another sync holds {self.path}: {who}{alive}; retry later, or run "
                    "`afctl sync-break-lease` if you know it is dead"
                )
            first_seen = first_seen or record
            step = min(1.0, max(self._wait - waited, 0.05))
            self._sleep(step)
            waited += step

    def _take_over(self, stale: LockRecord | None) -> None:
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{self.owner}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            raise SyncBusyError(f"another sync is taking over the stale lease {self.path}") from None
        moved = self._read(aside)
        if stale is not None and (moved is None or moved.owner != stale.owner):
            # we moved a fresh lease another taker had just created: put it back, back off
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
            aside.unlink(missing_ok=True)
            raise SyncBusyError(f"another sync took over the stale lease {self.path} first")
        aside.unlink(missing_ok=True)
        if not self._create():
            raise SyncBusyError(f"another sync took the lease {self.path} during takeover")
        self.took_over = stale.describe(self._clock()) if stale else "an unreadable lease"

    # -- hold ---------------------------------------------------------------------------------
    def start_heartbeat(self) -> None:
        """Renew the lease every third of its TTL until released (a daemon thread)."""
        if self._heartbeat is not None:
            return
        self._heartbeat = threading.Thread(target=self._beat, name="dagsync-lease", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(self._ttl / 3):
            try:
                self.renew()
            except LockLostError:
                self._lost.set()
                return
            except OSError:
                continue  # a failed renewal is retried; the lease lasts a full TTL

    def renew(self) -> None:
        record = self._read(self.path)
        if record is None or record.owner != self.owner:
            raise LockLostError(f"lease {self.path} is no longer held by {self.owner}")
        now = self._clock()
        fresh = self._record(now, acquired_at=record.acquired_at)
        tmp = self.path.with_name(f"{LOCK_NAME}.renew-{self.owner}")
        tmp.write_text(json.dumps(asdict(fresh)))
        os.replace(tmp, self.path)

    def verify(self) -> None:
        """Raise LockLostError unless this owner still holds the lease."""
        record = self._read(self.path)
        if self._lost.is_set() or record is None or record.owner != self.owner:
            raise LockLostError(f"lease {self.path} is no longer held by {self.owner}: publishing nothing")

    def release(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        record = self._read(self.path)
        if record is not None and record.owner == self.owner:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> FileLock:
        self.acquire()
        self.start_heartbeat()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    # -- the file -----------------------------------------------------------------------------
    def _record(self, now: float, acquired_at: float | None = None) -> LockRecord:
        me = self._me
        return LockRecord(
            self.owner,
            now if acquired_at is None else acquired_at,
            now + self._ttl,
            me.host,
            me.boot_id,
            me.pid,
            me.started,
        )

    def _create(self) -> bool:
        """Create the lease with its record in one step (see the module doc); False if it exists."""
        record = self._record(self._clock())
        own = self.path.with_name(f"{LOCK_NAME}.new-{self.owner}")
        fd = os.open(own, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, json.dumps(asdict(record)).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(own, self.path)
        except FileExistsError:
            return False
        finally:
            own.unlink(missing_ok=True)
        self._sweep_leftovers()
        return True

    def _sweep_leftovers(self) -> None:
        """Remove the lease's working files that killed holders left (older than a TTL: a live
        holder's own file lives for milliseconds)."""
        now = self._clock()
        for prefix in (".new-", ".renew-", ".stale-"):
            for leftover in self.path.parent.glob(f"{LOCK_NAME}{prefix}*"):
                with contextlib.suppress(FileNotFoundError):
                    if now - leftover.stat().st_mtime > self._ttl:
                        leftover.unlink()

    @staticmethod
    def _read(path: Path) -> LockRecord | None:
        try:
            data = json.loads(path.read_text())
            return LockRecord(
                str(data["owner"]),
                float(data["acquired_at"]),
                float(data["expires_at"]),
                str(data.get("host", "")),
                str(data.get("boot_id", "")),
                int(data.get("pid", 0)),
                str(data.get("started", "")),
            )
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class BreakResult:
    broken: bool
    reason: str


def break_lease(
    directory: Path,
    *,
    now: float,
    force: bool,
    identity: Identity | None = None,
    alive: Callable[[int, str], bool] = pid_alive,
) -> BreakResult:
    """Remove the target's lease by hand. Refused (without ``force``) when its holder is a
    process on this machine that is still running."""
    path = directory / LOCK_NAME
    record = FileLock._read(path)
    if record is None and not path.exists():
        return BreakResult(False, f"no lease at {path}: nothing to break")
    me = identity or this_process()
    same_machine = record is not None and record.host == me.host and record.boot_id == me.boot_id
    if record is not None and same_machine and alive(record.pid, record.started) and not force:
        return BreakResult(
            False,
            f"{record.describe(now)} is running on this machine: not breaking its lease "
            "(stop it, or pass --force)",
        )
    aside = path.with_name(f"{LOCK_NAME}.broken-{int(now)}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return BreakResult(False, f"the lease at {path} was released meanwhile")
    aside.unlink(missing_ok=True)
    who = record.describe(now) if record else "an unreadable lease"
    return BreakResult(True, f"broke the lease of {who}")
