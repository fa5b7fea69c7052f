"""Parse the autoscaler's trigger at the edge: an EventBridge schedule, a dry run, a wake-up, or
hibernate's release of the workers.

Time is an input, and it comes from the handler's own clock (``now``), never from an event
that can act: an event dated in the future would skip the idle period, one dated in the past
would store an old idle-since time and let the next tick scale down at once. Only a dry run
(which changes nothing) may carry its own ``time``, to replay a decision. Only the four known
triggers are accepted, by ``source`` and ``detail-type``. Malformed input raises
InvalidInputError; nothing is changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from airflow_control_plane.errors import InvalidInputError
from airflow_control_plane.scaling.wakeup import WAKEUP_DETAIL_TYPE

SCHEDULE = ("aws.events", "Scheduled Event")
WAKEUP = ("airflow.scheduler", WAKEUP_DETAIL_TYPE)
DRY_RUN = ("airflow.control-plane.operator", "Autoscaler dry run")
# From statemachines/hibernate.asl.json once nothing runs or waits: drain every worker.
RELEASE = ("airflow.control-plane.hibernate", "Release workers")
TRIGGERS = (SCHEDULE, WAKEUP, DRY_RUN, RELEASE)


@dataclass(frozen=True)
class AutoscalerRequest:
    now: datetime
    dry_run: bool
    trigger: str
    reason: str
    release: bool = False  # drain every worker (hibernate), instead of evaluating demand


def parse_request(event: object, *, now: datetime) -> AutoscalerRequest:
    """``now`` is the handler's clock; the event's ``time`` counts only in a dry run."""
    if not isinstance(event, Mapping):
        raise InvalidInputError(f"autoscaler event must be a JSON object, got {type(event).__name__}")
    source, detail_type = event.get("source"), event.get("detail-type")
    if (source, detail_type) not in TRIGGERS:
        known = "; ".join(f"{s!r}/{d!r}" for s, d in TRIGGERS)
        raise InvalidInputError(
            f"unknown autoscaler trigger source={source!r} detail-type={detail_type!r}; accepted: {known}"
        )
    detail = event.get("detail", {})
    if not isinstance(detail, Mapping):
        raise InvalidInputError("event detail must be a JSON object")
    dry_run = detail.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise InvalidInputError(f"detail.dryRun must be true or false, got {dry_run!r}")
    if (source, detail_type) == DRY_RUN and not dry_run:
        raise InvalidInputError("an operator event is a dry run only: set detail.dryRun to true")
    if (source, detail_type) == RELEASE:
        if dry_run:
            raise InvalidInputError("a release of the workers is never a dry run")
        return AutoscalerRequest(
            now, False, str(detail_type), "hibernate: release every worker", release=True
        )
    if not dry_run:
        reason = f"{detail_type}: evaluated at the handler's clock"
        return AutoscalerRequest(now, False, str(detail_type), reason)
    return AutoscalerRequest(_event_time(event.get("time"), now), True, str(detail_type), "dry run")


def _event_time(raw: object, default: datetime) -> datetime:
    if raw is None:
        return default
    if not isinstance(raw, str):
        raise InvalidInputError(f"event time must be a string, got {raw!r}")
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(f"event time {raw!r} is not an ISO 8601 timestamp") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
