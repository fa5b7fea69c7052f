"""Parse the autoscaler's trigger at the edge: an EventBridge schedule, a dry run or a wake-up.

Time is an input: the evaluation time is the event's ``time`` (the schedule's tick), so a
replayed event gives the same decision. Malformed input raises InvalidInputError; nothing
is changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from airflow_control_plane.errors import InvalidInputError


@dataclass(frozen=True)
class AutoscalerRequest:
    now: datetime
    dry_run: bool
    trigger: str


def parse_request(event: Mapping[str, object], *, fallback_now: datetime) -> AutoscalerRequest:
    if not isinstance(event, Mapping):
        raise InvalidInputError(f"autoscaler event must be a JSON object, got {type(event).__name__}")
    raw_time = event.get("time")
    if raw_time is None:
        now = fallback_now
    elif isinstance(raw_time, str):
        try:
            now = datetime.fromisoformat(raw_time.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInputError(f"event time {raw_time!r} is not an ISO 8601 timestamp") from None
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
    else:
        raise InvalidInputError(f"event time must be a string, got {raw_time!r}")
    detail = event.get("detail", {})
    if not isinstance(detail, Mapping):
        raise InvalidInputError("event detail must be a JSON object")
    dry_run = detail.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise InvalidInputError(f"detail.dryRun must be true or false, got {dry_run!r}")
    trigger = str(event.get("detail-type", "direct invocation"))
    return AutoscalerRequest(now=now, dry_run=dry_run, trigger=trigger)
