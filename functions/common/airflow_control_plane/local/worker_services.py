"""The local adapter of the scaler's ``WorkerServices`` port: the supervisor's worker service.

- ``describe``: desired and running count of the local service, from the supervisor;
- ``set_desired``: the supervisor's desired count;
- ``unprotected`` / ``release``: scale-in protection of each worker slot, kept by the
  supervisor the way ECS keeps it per task: every worker is protected from its start, the
  scaler's drain releases the workers it confirmed idle, and a lower desired count stops
  unprotected workers first (``process_table._plan_stops``).

A worker's id is its slot index, from its Celery hostname ``worker-<index>@host`` (the
``--celery-hostname`` the runtime gives it), as the ECS task id is on AWS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_control_plane.errors import ConfigError, InvalidInputError
from airflow_control_plane.local.ecs import ServiceControl
from airflow_control_plane.scaling.ecs import ServiceCounts


class LocalWorkerServices:
    """``WorkerServices`` over the local supervisor (``LocalEcs``)."""

    def __init__(self, ecs: ServiceControl) -> None:
        self._ecs = ecs

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

    def unprotected(self, service: str) -> set[str]:
        return {str(index) for index in self._state(service).unprotected}

    def release(self, service: str, ids: Sequence[str]) -> set[str]:
        try:
            indices = [int(i) for i in ids]
        except ValueError:
            raise InvalidInputError(f"local worker ids are slot indices, got {list(ids)}") from None
        return {str(i) for i in self._ecs.release_protection(service, indices)}
