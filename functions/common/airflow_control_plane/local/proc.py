"""Process inspection and signalling on Linux, through /proc and process groups.

Every service process is started in its own session (so its process group id is its pid)
and carries the state folder's marker variable, so the local runtime can stop a whole tree
(api-server workers, Celery pool processes, task processes) and find strays after a crash.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    pgid: int
    state: str
    start_ticks: int


def read_stat(pid: int) -> ProcStat | None:
    """The process's /proc stat line, or None if it no longer exists."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may contain spaces: split after the last ")".
    fields = raw[raw.rindex(")") + 2 :].split()
    return ProcStat(pid, int(fields[1]), int(fields[2]), fields[0], int(fields[19]))


def is_alive(pid: int, start_ticks: int | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, when given, started at ``start_ticks``."""
    stat = read_stat(pid)
    if stat is None or stat.state in ("Z", "X"):
        return False
    return start_ticks is None or stat.start_ticks == start_ticks


def _all_pids() -> Iterator[int]:
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    members = []
    for pid in _all_pids():
        stat = read_stat(pid)
        if stat is not None and stat.pgid == pgid and stat.state not in ("Z", "X"):
            members.append(pid)
    return members


def _parent_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        stat = read_stat(pid)
        if stat is not None and stat.state not in ("Z", "X"):
            children.setdefault(stat.ppid, []).append(pid)
    return children


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (children, grandchildren, ...), whatever their group."""
    children = _parent_map()
    found: list[int] = []
    frontier = list(children.get(pid, []))
    while frontier:
        child = frontier.pop()
        found.append(child)
        frontier.extend(children.get(child, []))
    return found


def become_child_subreaper() -> bool:
    """Ask Linux to re-parent orphaned descendants to this process instead of to init.

    Airflow's task runner moves task processes into their own process group; if their
    parent dies they would escape a group kill. As a subreaper the supervisor still sees
    them as its children and can stop them. Returns False where unsupported.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_child_subreaper = 36
        return int(libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def reap_orphans(keep: set[int]) -> None:
    """Collect exit statuses of exited children not in ``keep`` (re-parented orphans)."""
    me = os.getpid()
    for pid in _all_pids():
        stat = read_stat(pid)
        if stat is not None and stat.ppid == me and pid not in keep and stat.state in ("Z", "X"):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def direct_children(keep: set[int]) -> list[int]:
    """Live children of this process, other than ``keep``."""
    me = os.getpid()
    result = []
    for pid in _all_pids():
        stat = read_stat(pid)
        if stat is not None and stat.ppid == me and pid not in keep and stat.state not in ("Z", "X"):
            result.append(pid)
    return result


def _environ_has(pid: int, needle: bytes) -> bool:
    try:
        data = (_PROC / str(pid) / "environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return needle in data.split(b"\0")


def marked_processes(marker_name: str, marker_value: str) -> list[int]:
    """Live processes (other than this one) whose environment holds ``NAME=value``."""
    needle = f"{marker_name}={marker_value}".encode()
    me = os.getpid()
    return [pid for pid in _all_pids() if pid != me and is_alive(pid) and _environ_has(pid, needle)]


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to a process group; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def signal_pid(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
