"""What ``up`` chose and recorded in the state folder (ports, effective URLs, migration)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from airflow_control_plane.errors import ConfigError
from airflow_control_plane.local.files import read_json, write_json
from airflow_control_plane.local.paths import StatePaths


@dataclass(frozen=True)
class RuntimeState:
    api_port: int | None = None
    database_url: str | None = None
    redis_url: str | None = None
    embedded_postgres: bool = False
    embedded_redis: bool = False
    # The Celery broker in use: "redis" (redis_url) or "sqs" (sqs: SqsBroker.to_record()).
    broker: str = "redis"
    sqs: dict[str, Any] | None = None
    migration: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, paths: StatePaths) -> RuntimeState:
        data = read_json(paths.settings)
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError(f"{paths.settings} is malformed; fix or remove it")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def save(self, paths: StatePaths) -> None:
        write_json(paths.settings, self.__dict__)

    def with_(self, **changes: Any) -> RuntimeState:
        return replace(self, **changes)
