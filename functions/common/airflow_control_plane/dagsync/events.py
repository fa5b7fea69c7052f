"""Announcing sync outcomes: an EventPublisher port with EventBridge and JSON-lines adapters."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from airflow_control_plane.errors import TransientError

SOURCE = "airflow-control-plane.dagsync"
RELEASE_PUBLISHED = "DAG release published"
SYNC_FAILED = "DAG sync failed"


class EventPublisher(Protocol):
    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None: ...


class EventBridgePublisher:
    """PutEvents on a bus, with an injected boto3 ``events`` client."""

    def __init__(self, client: Any, bus_name: str, source: str = SOURCE) -> None:
        self._client = client
        self._bus = bus_name
        self._source = source

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        entry = {
            "Source": self._source,
            "DetailType": detail_type,
            "Detail": json.dumps(detail, sort_keys=True),
            "EventBusName": self._bus,
        }
        response = self._client.put_events(Entries=[entry])
        if response.get("FailedEntryCount", 0):
            failure = response["Entries"][0]
            code, message = failure.get("ErrorCode"), failure.get("ErrorMessage")
            raise TransientError(f"EventBridge rejected {detail_type!r}: {code} {message}")


class JsonLinesPublisher:
    """Append one JSON object per event to a file (the local runtime's event bus)."""

    def __init__(self, path: Path, source: str = SOURCE) -> None:
        self._path = path
        self._source = source

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(
            {"source": self._source, "detail-type": detail_type, "detail": detail}, sort_keys=True
        )
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


class InMemoryPublisher:
    """Test fake: keeps every event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        self.events.append((detail_type, dict(detail)))
