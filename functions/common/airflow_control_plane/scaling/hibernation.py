"""Is the environment hibernated? Then the autoscaler starts no worker.

On AWS the signal is the scheduler service's desired count: the hibernate state machine stops
the scheduler first and bring-up starts it, so "scheduler desired count is 0" is exactly
"hibernated or not yet up" with no extra resource to keep in sync. Locally it is a flag file
the local runtime writes on ``afctl down`` and removes on ``afctl up``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from airflow_control_plane.scaling.ecs import WorkerServices


class HibernationFlag(Protocol):
    def is_hibernated(self) -> bool: ...


class SchedulerStopped:
    """AWS: hibernated when the scheduler ECS service wants zero tasks."""

    def __init__(self, services: WorkerServices, scheduler_service: str) -> None:
        self._services = services
        self._scheduler = scheduler_service

    def is_hibernated(self) -> bool:
        return self._services.describe(self._scheduler).desired == 0


class FileFlag:
    """Local: hibernated while the flag file exists."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def is_hibernated(self) -> bool:
        return self._path.exists()


class FixedFlag:
    """Fake for tests and the CLI's dry runs."""

    def __init__(self, hibernated: bool = False) -> None:
        self.hibernated = hibernated

    def is_hibernated(self) -> bool:
        return self.hibernated
