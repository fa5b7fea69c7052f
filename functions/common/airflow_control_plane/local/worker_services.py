"""The local adapter of the scaler's ``WorkerServices`` port: the supervisor's worker service.

- ``describe``: desired and running count of the local service, from the supervisor;
- ``set_desired``: the supervisor's desired count;
- ``protected_workers``: how many workers must stay so that no busy one is stopped.

Which workers are busy comes from the metadata database and /proc, both cheap and real: the
``pid`` of every ``running`` task instance (the task runner reports its task process's pid
when the task starts) is looked up among the descendants of each worker process (Celery main
process -> pool child -> task process). A worker's slot index is read from its command line
(``--celery-hostname worker-<index>@%h``).

Local scale-in stops the highest slot indices first (``process_table._plan_stops``), the way
ECS picks tasks by availability zone rather than by load. So the protected count is not the
number of busy workers but the number of lowest slots to keep so that every busy worker is
among them: busy workers 0 and 1 of 3 -> 2 (one idle worker can go); busy worker 2 of 3 -> 3
(nothing can go until it finishes). It equals the running count only while the highest slot
is busy, never by default. A running task instance whose process is found under no worker
makes the count unknown (``TransientError``): the policy then holds instead of guessing.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_control_plane.errors import ConfigError, TransientError
from airflow_control_plane.local import proc
from airflow_control_plane.local.ecs import ServiceControl
from airflow_control_plane.scaling.ecs import ServiceCounts

RUNNING_TASK_PIDS_SQL = "SELECT pid FROM task_instance WHERE state = 'running'"
_SLOT_RE = re.compile(r"(?<![\w-])worker-(\d+)@")


@dataclass(frozen=True)
class WorkerProcess:
    index: int
    pid: int


@dataclass(frozen=True)
class Protection:
    """How many lowest slots must stay, and why (pure result)."""

    keep: int
    busy: tuple[int, ...]  # busy slot indices
    reason: str


def slot_index(argv: Sequence[str]) -> int | None:
    """The slot index from a worker's command line: its ``--celery-hostname worker-<index>@%h``
    argument, or the node name ``worker-<index>@host`` in the process title Celery sets (it
    rewrites /proc/<pid>/cmdline to ``[celeryd: worker-0@host:MainProcess] -active- (...)``)."""
    found = {int(m.group(1)) for m in _SLOT_RE.finditer(" ".join(argv))}
    return found.pop() if len(found) == 1 else None


def owner_of(pid: int, parents: Mapping[int, int], workers: Mapping[int, int]) -> int | None:
    """The slot index of the worker whose process tree holds ``pid``, walking up ``parents``."""
    seen: set[int] = set()
    current: int | None = pid
    while current is not None and current not in seen and current > 1:
        if current in workers:
            return workers[current]
        seen.add(current)
        current = parents.get(current)
    return None


def decide_protection(
    workers: Sequence[WorkerProcess], task_pids: Iterable[int | None], parents: Mapping[int, int]
) -> Protection:
    """Slots to keep so that no worker running a task is stopped (highest slots stop first)."""
    by_pid = {w.pid: w.index for w in workers}
    busy: set[int] = set()
    orphans: list[int | None] = []
    for pid in task_pids:
        owner = None if pid is None else owner_of(pid, parents, by_pid)
        if owner is None:
            orphans.append(pid)
        else:
            busy.add(owner)
    if orphans:
        raise TransientError(
            f"running task instance(s) with pid {orphans} run under no local worker: "
            "busy workers unknown, no scale-down"
        )
    ranks = [rank for rank, w in enumerate(sorted(workers, key=lambda w: w.index)) if w.index in busy]
    keep = max(ranks) + 1 if ranks else 0
    names = ", ".join(f"worker[{i}]" for i in sorted(busy)) or "none"
    reason = f"busy: {names} of {len(workers)}; keep the lowest {keep} (highest slots stop first)"
    return Protection(keep, tuple(sorted(busy)), reason)


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _parent_map() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = proc.read_stat(int(entry.name))
            if stat is not None:
                parents[stat.pid] = stat.ppid
    return parents


class LocalWorkerServices:
    """``WorkerServices`` over the local supervisor (``LocalEcs``) and the metadata database."""

    def __init__(
        self,
        ecs: ServiceControl,
        connect: Callable[[], Any],
        *,
        cmdline: Callable[[int], list[str]] = _cmdline,
        parent_map: Callable[[], dict[int, int]] = _parent_map,
    ) -> None:
        self._ecs = ecs
        self._connect = connect
        self._cmdline = cmdline
        self._parent_map = parent_map
        self.last_protection: Protection | None = None

    def _state(self, service: str) -> Any:
        for state in self._ecs.describe():
            if state.name == service:
                return state
        raise ConfigError(f"the local supervisor runs no service {service!r}")

    def describe(self, service: str) -> ServiceCounts:
        state = self._state(service)
        return ServiceCounts(desired=state.desired, running=state.running)

    def set_desired(self, service: str, count: int) -> None:
        self._ecs.set_desired_count(service, count)

    def _task_pids(self) -> list[int | None]:
        try:
            conn = self._connect()
        except Exception as exc:
            raise TransientError(f"metadata database unreachable: {exc}") from exc
        try:
            rows = conn.run(RUNNING_TASK_PIDS_SQL)
        except Exception as exc:
            raise TransientError(f"running task pids unreadable: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):
                conn.close()
        return [None if row[0] is None else int(row[0]) for row in rows or []]

    def protected_workers(self, service: str) -> int:
        state = self._state(service)
        workers = []
        for pid in state.pids:
            index = slot_index(self._cmdline(pid))
            if index is None:
                raise TransientError(f"{service} process {pid} has no readable slot index: busy unknown")
            workers.append(WorkerProcess(index, pid))
        task_pids = self._task_pids()
        protection = decide_protection(workers, task_pids, self._parent_map() if task_pids else {})
        self.last_protection = protection
        return protection.keep
