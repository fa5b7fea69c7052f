"""Announce worker count changes: an EventBridge event on AWS, a list in tests.

Event: source ``airflow.control-plane.autoscaler``, detail-type ``Worker count changed``,
detail = the decision (queue, service, from, to, action, reason, demand, environment).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from airflow_control_plane.errors import TransientError
from airflow_control_plane.scaling.policy import ScalingDecision

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
else:
    EventBridgeClient = Any

EVENT_SOURCE = "airflow.control-plane.autoscaler"
EVENT_DETAIL_TYPE = "Worker count changed"


def event_detail(decision: ScalingDecision, environment: str) -> dict[str, object]:
    return {
        "environment": environment,
        "queue": decision.queue,
        "service": decision.service,
        "action": decision.action.value,
        "from": decision.current,
        "to": decision.target,
        "demand": decision.demand,
        "reason": decision.reason,
    }


class ChangePublisher(Protocol):
    def publish(self, decision: ScalingDecision) -> None: ...


class EventBridgePublisher:
    def __init__(self, client: EventBridgeClient, bus_name: str, environment: str) -> None:
        self._client = client
        self._bus = bus_name
        self._environment = environment

    def publish(self, decision: ScalingDecision) -> None:
        entry = {
            "Source": EVENT_SOURCE,
            "DetailType": EVENT_DETAIL_TYPE,
            "Detail": json.dumps(event_detail(decision, self._environment)),
            "EventBusName": self._bus,
        }
        try:
            response = self._client.put_events(Entries=[entry])  # type: ignore[list-item]
        except (ClientError, BotoCoreError) as exc:
            raise TransientError(f"EventBridge PutEvents failed: {exc}") from exc
        if response.get("FailedEntryCount", 0):
            raise TransientError(f"EventBridge rejected the event: {response.get('Entries')}")


class RecordingPublisher:
    """Fake and local publisher: keeps what was announced."""

    def __init__(self) -> None:
        self.published: list[ScalingDecision] = []

    def publish(self, decision: ScalingDecision) -> None:
        self.published.append(decision)
