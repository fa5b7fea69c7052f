"""Parse the DAG sync Lambda's event at the edge into a typed :class:`SyncRequest`.

Accepted, and nothing else: an EventBridge scheduled event (sync the ref's tip), the webhook
Lambda's asynchronous hand-off ``{"trigger": "webhook", "sha": ..., "delivery_id": ...}``, an
operator's ``{"trigger": "manual", "rollback_to": "<sha>"}`` (or ``"schedule"``), and
``{"trigger": "break_lease"}`` to remove the target's lease by hand. Anything else raises
InvalidInputError before any work; nothing is changed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from airflow_control_plane.edge import event_object
from airflow_control_plane.errors import InvalidInputError

SCHEDULE = ("aws.events", "Scheduled Event")
SYNC_TRIGGERS = ("webhook", "manual", "schedule")
BREAK_LEASE = "break_lease"


@dataclass(frozen=True)
class SyncRequest:
    """What the sync Lambda (or the local runner) is asked to do."""

    trigger: str
    sha: str | None = None
    rollback_to: str | None = None
    delivery_id: str | None = None

    def to_payload(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def parse_request(event: object) -> SyncRequest:
    """Turn the raw event into a SyncRequest; anything unrecognised is rejected, nothing done."""
    event = event_object(event, "dag-sync")
    if (event.get("source"), event.get("detail-type")) == SCHEDULE:
        return SyncRequest(trigger="schedule")
    trigger = event.get("trigger")
    if trigger == BREAK_LEASE:
        return SyncRequest(trigger=BREAK_LEASE)
    if trigger in SYNC_TRIGGERS:
        fields = {k: event.get(k) for k in ("sha", "rollback_to", "delivery_id")}
        if any(v is not None and not isinstance(v, str) for v in fields.values()):
            raise InvalidInputError("sha, rollback_to and delivery_id must be strings")
        return SyncRequest(trigger=str(trigger), **fields)
    raise InvalidInputError("unrecognised event: expected a scheduled event or a {'trigger': ...} request")
