"""Decide what a bring-up has to do, given the request and what is running now.

Pure: the caller observes the services (ECS DescribeServices, or the local process table)
and passes them in. The decision never lowers a count: bring-up only raises services to
the requested numbers (the autoscaler may have added workers; an operator may run more
schedulers), so running it again on a running environment changes nothing and skips the
admin user (the admin decision is bringup/jobs.py's, shared with ``afctl up``). The migration
is not decided here: the state machine keeps no record of past migrations, so
``airflow db migrate`` (idempotent) always runs, which is also the cheapest way to be sure
the schema matches the image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_control_plane.bringup.input import BringUpRequest
from airflow_control_plane.bringup.jobs import JobDecision, decide_admin
from airflow_control_plane.bringup.steps import CORE_SERVICES
from airflow_control_plane.errors import InvalidInputError


@dataclass(frozen=True)
class WorkerService:
    """One Celery worker service (one per queue) and the minimum bring-up starts it at."""

    queue: str
    service_name: str
    minimum: int = 0


@dataclass(frozen=True)
class ObservedService:
    """One service as it is now (missing from ECS -> not observed at all)."""

    desired_count: int
    running_count: int

    @property
    def steady_and_up(self) -> bool:
        return self.desired_count > 0 and self.running_count == self.desired_count


@dataclass(frozen=True)
class ServiceChange:
    key: str
    service_name: str
    current: int
    desired: int

    @property
    def changes(self) -> bool:
        return self.desired != self.current


@dataclass(frozen=True)
class BringUpPlan:
    core: tuple[ServiceChange, ...]
    workers: tuple[ServiceChange, ...]
    create_admin_user: bool
    already_running: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        def change(c: ServiceChange) -> dict[str, Any]:
            return {"key": c.key, "serviceName": c.service_name, "current": c.current, "desired": c.desired}

        return {
            "coreUpdates": [change(c) for c in self.core if c.changes],
            "core": [change(c) for c in self.core],
            "workerUpdates": [change(c) for c in self.workers if c.changes],
            "workers": [change(c) for c in self.workers],
            "createAdminUser": self.create_admin_user,
            "alreadyRunning": self.already_running,
            "reason": self.reason,
        }


def plan_bring_up(
    request: BringUpRequest,
    service_names: Mapping[str, str],
    observed: Mapping[str, ObservedService],
    worker_services: Sequence[WorkerService],
) -> BringUpPlan:
    """Return the changes bring-up makes; ``observed`` is keyed by ECS service name.

    Every worker service is raised to ``max(current, its minimum, request.workers.minimum)``.
    """
    missing_names = [key for key in CORE_SERVICES if key not in service_names]
    if missing_names:
        raise InvalidInputError(f"no service name configured for {missing_names}")
    if not worker_services:
        raise InvalidInputError("no worker service configured")

    def observed_count(name: str) -> ObservedService:
        return observed.get(name, ObservedService(0, 0))

    def current(key: str) -> ObservedService:
        return observed_count(service_names[key])

    core = tuple(
        ServiceChange(
            key,
            service_names[key],
            current(key).desired_count,
            max(current(key).desired_count, request.core_counts[key]),
        )
        for key in CORE_SERVICES
    )
    workers = tuple(
        ServiceChange(
            f"worker:{w.queue}",
            w.service_name,
            observed_count(w.service_name).desired_count,
            max(observed_count(w.service_name).desired_count, w.minimum, request.worker_minimum),
        )
        for w in worker_services
    )
    already_running = all(current(key).steady_and_up for key in CORE_SERVICES)
    admin = decide_admin(
        request.admin_user.mode, request.admin_user.username, already_running=already_running
    )
    return BringUpPlan(
        core, workers, admin.run, already_running, _reason(core, workers, admin, already_running)
    )


def _reason(
    core: tuple[ServiceChange, ...],
    workers: tuple[ServiceChange, ...],
    admin: JobDecision,
    already_running: bool,
) -> str:
    raised = [f"{c.key} {c.current}->{c.desired}" for c in (*core, *workers) if c.changes]
    parts = [
        "core services already running and steady" if already_running else "environment not fully running",
        f"raise {', '.join(raised)}" if raised else "no service count changes",
    ]
    parts.append(admin.reason)
    kept = [f"{w.key} at {w.current}" for w in workers if not w.changes and w.current > 0]
    if kept:
        parts.append(f"kept {', '.join(kept)} (bring-up never lowers a count)")
    return "; ".join(parts)
