"""Where the per-worker idle clocks (:class:`ScaleMemory`) are stored between evaluations.

On AWS they are tags on the worker service itself, one per idle worker
(``autoscaler:idle:<worker hostname>`` = ISO time; a service holds at most 50 tags, far more
than a queue's workers): no extra resource, they live and die with the service, and an
operator sees them in the console. Locally they are a JSON file. A clock that cannot be read
restarts (the worker then waits one more idle period): the safe direction.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from airflow_control_plane.errors import TransientError
from airflow_control_plane.scaling.policy import ScaleMemory

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient
else:
    ECSClient = Any

IDLE_TAG_PREFIX = "autoscaler:idle:"


class MemoryStore(Protocol):
    """Port: the stored idle clock of each worker service."""

    def load(self, service: str) -> ScaleMemory: ...

    def save(self, service: str, memory: ScaleMemory) -> None: ...


def encode(memory: ScaleMemory) -> dict[str, str]:
    return {IDLE_TAG_PREFIX + name: since.isoformat() for name, since in sorted(memory.idle_since.items())}


def decode(values: dict[str, str]) -> ScaleMemory:
    """Read stored clocks; a malformed one is dropped (that worker's clock restarts, the safe way)."""
    clocks: dict[str, datetime] = {}
    for key, raw in values.items():
        if not key.startswith(IDLE_TAG_PREFIX) or len(key) == len(IDLE_TAG_PREFIX):
            continue
        try:
            since = datetime.fromisoformat(raw)
        except (TypeError, ValueError):
            continue
        if since.tzinfo is not None:
            clocks[key[len(IDLE_TAG_PREFIX) :]] = since
    return ScaleMemory(clocks)


class InMemoryStore:
    def __init__(self) -> None:
        self.values: dict[str, ScaleMemory] = {}

    def load(self, service: str) -> ScaleMemory:
        return self.values.get(service, ScaleMemory())

    def save(self, service: str, memory: ScaleMemory) -> None:
        self.values[service] = memory


class JsonFileStore:
    """Local runtime: one JSON file, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def _all(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self._path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise TransientError(f"idle clock file {self._path} unreadable: {exc}") from exc
        return data if isinstance(data, dict) else {}

    def load(self, service: str) -> ScaleMemory:
        return decode(self._all().get(service, {}))

    def save(self, service: str, memory: ScaleMemory) -> None:
        data = self._all()
        data[service] = encode(memory)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".scale-memory-")
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
        os.replace(tmp, self._path)


class EcsTagStore:
    """AWS: the clock as tags on the worker service (ecs:ListTagsForResource, ecs:TagResource)."""

    def __init__(self, client: ECSClient, cluster: str) -> None:
        self._client = client
        self._cluster = cluster
        self._arns: dict[str, str] = {}

    def _arn(self, service: str) -> str:
        if service not in self._arns:
            response = self._client.describe_services(cluster=self._cluster, services=[service])
            services = response.get("services", [])
            if not services:
                raise TransientError(f"ECS service {service!r} not found for its idle clock")
            self._arns[service] = services[0]["serviceArn"]
        return self._arns[service]

    def load(self, service: str) -> ScaleMemory:
        try:
            tags = self._client.list_tags_for_resource(resourceArn=self._arn(service)).get("tags", [])
        except (ClientError, BotoCoreError) as exc:
            raise TransientError(f"ECS ListTagsForResource({service}) failed: {exc}") from exc
        return decode({t["key"]: t["value"] for t in tags if "key" in t and "value" in t})

    def save(self, service: str, memory: ScaleMemory) -> None:
        wanted = encode(memory)
        arn = self._arn(service)
        try:
            tags = self._client.list_tags_for_resource(resourceArn=arn).get("tags", [])
            stale = [
                t["key"]
                for t in tags
                if t.get("key", "").startswith(IDLE_TAG_PREFIX) and t["key"] not in wanted
            ]
            if stale:
                self._client.untag_resource(resourceArn=arn, tagKeys=stale)
            if wanted:
                self._client.tag_resource(
                    resourceArn=arn,
                    tags=[{"key": k, "value": v} for k, v in wanted.items()],
                )
        except (ClientError, BotoCoreError) as exc:
            raise TransientError(f"ECS tags of {service} (idle clocks) could not be saved: {exc}") from exc
