"""The reconcile decision: which service processes to start or stop to meet desired counts.

A pure function of the desired counts, the live processes, each slot's restart history and
the time. The supervisor applies the plan; nothing here touches a process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from airflow_control_plane.local.restart_policy import RestartPolicy, SlotHistory, decide_restart


@dataclass(frozen=True)
class ProcessView:
    service: str
    index: int
    pid: int
    started_at: float
    stopping: bool = False
    protected: bool = True  # scale-in protection: unprotected processes are stopped first


@dataclass(frozen=True)
class StartProcess:
    service: str
    index: int
    reason: str


@dataclass(frozen=True)
class StopProcess:
    service: str
    index: int
    pid: int
    reason: str


@dataclass(frozen=True)
class ReconcilePlan:
    starts: tuple[StartProcess, ...] = ()
    stops: tuple[StopProcess, ...] = ()
    waiting: tuple[str, ...] = field(default=())  # reasons a slot is not started yet (backoff)

    @property
    def is_empty(self) -> bool:
        return not (self.starts or self.stops)


def _plan_stops(service: str, want: int, active: list[ProcessView]) -> list[StopProcess]:
    """Unprotected processes first (as ECS stops only unprotected tasks on scale-in), then the
    highest slot indices."""
    extra = sorted(active, key=lambda p: (not p.protected, p.index), reverse=True)[
        : max(0, len(active) - want)
    ]
    return [
        StopProcess(
            service, p.index, p.pid, f"desired {want}, running {len(active)}: stop {service}[{p.index}]"
        )
        for p in extra
    ]


def _plan_starts(
    service: str,
    want: int,
    busy_indices: set[int],
    active_count: int,
    histories: Mapping[tuple[str, int], SlotHistory],
    now: float,
    policy: RestartPolicy,
) -> tuple[list[StartProcess], list[str]]:
    starts: list[StartProcess] = []
    waiting: list[str] = []
    index = 0
    while active_count + len(starts) + len(waiting) < want:
        if index not in busy_indices:
            decision = decide_restart(histories.get((service, index), SlotHistory()), now, policy)
            if decision.start_now:
                starts.append(
                    StartProcess(service, index, f"desired {want}, running {active_count}: {decision.reason}")
                )
            else:
                waiting.append(f"{service}[{index}]: {decision.reason}")
        index += 1
    return starts, waiting


def plan_reconcile(
    desired: Mapping[str, int],
    processes: Sequence[ProcessView],
    histories: Mapping[tuple[str, int], SlotHistory],
    now: float,
    policy: RestartPolicy,
) -> ReconcilePlan:
    """Start missing processes (lowest free index first, respecting backoff), stop extras.

    A service without a desired count is treated as desired 0. A process already stopping
    keeps its index busy until it has exited, so two processes never share an index.
    """
    starts: list[StartProcess] = []
    stops: list[StopProcess] = []
    waiting: list[str] = []
    services = sorted(set(desired) | {p.service for p in processes})
    for service in services:
        want = max(0, desired.get(service, 0))
        mine = [p for p in processes if p.service == service]
        active = [p for p in mine if not p.stopping]
        if len(active) > want:
            stops.extend(_plan_stops(service, want, active))
        elif len(active) < want:
            new, held = _plan_starts(
                service, want, {p.index for p in mine}, len(active), histories, now, policy
            )
            starts.extend(new)
            waiting.extend(held)
    return ReconcilePlan(tuple(starts), tuple(stops), tuple(waiting))
