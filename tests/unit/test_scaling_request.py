"""The autoscaler's edge: its own clock on schedule events, a time only in a dry run, and only
the known triggers (by source and detail-type)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from airflow_control_plane.errors import InvalidInputError
from airflow_control_plane.scaling.request import parse_request
from tests.conftest import REPO_ROOT, load_event

pytestmark = pytest.mark.unit

CLOCK = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize("when", ["2099-01-01T00:00:00Z", "2001-01-01T00:00:00Z", "2026-01-05T06:01:00Z"])
def test_a_schedule_event_is_evaluated_at_the_handlers_clock_whatever_its_time(when: str) -> None:
    # GIVEN a schedule event dated in the future, in the past, or as in the sample file
    event = {**load_event("autoscaler_schedule.json"), "time": when}
    # WHEN it is parsed at 10:00 on the handler's clock
    request = parse_request(event, now=CLOCK)
    # THEN the evaluation time is the clock, not the event's time, and it acts (no dry run)
    assert request.now == CLOCK
    assert request.dry_run is False
    assert request.trigger == "Scheduled Event"
    assert "handler's clock" in request.reason


def test_a_wake_up_is_evaluated_at_the_handlers_clock() -> None:
    event = {"source": "airflow.scheduler", "detail-type": "Worker wake-up", "detail": {"queue": "etl"}}
    assert parse_request({**event, "time": "2099-01-01T00:00:00Z"}, now=CLOCK).now == CLOCK


def test_only_a_dry_run_may_carry_its_own_time() -> None:
    # GIVEN the sample dry-run event (dated 2026-01-05 06:01 UTC)
    request = parse_request(load_event("autoscaler_dry_run.json"), now=CLOCK)
    # THEN its time is used (replaying a decision changes nothing)
    assert request.dry_run is True
    assert request.now == datetime(2026, 1, 5, 6, 1, tzinfo=UTC)
    # AND without a time it uses the clock
    event = load_event("autoscaler_dry_run.json")
    del event["time"]
    assert parse_request(event, now=CLOCK).now == CLOCK


def test_a_schedule_event_asking_for_a_dry_run_uses_its_time_and_changes_nothing() -> None:
    event = {**load_event("autoscaler_schedule.json"), "detail": {"dryRun": True}}
    request = parse_request(event, now=CLOCK)
    assert request.dry_run is True
    assert request.now == datetime(2026, 1, 5, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"source": "attacker.example"}, "unknown autoscaler trigger"),
        ({"detail-type": "Something Else"}, "unknown autoscaler trigger"),
        ({"source": None}, "unknown autoscaler trigger"),
        ({"detail": []}, "detail must be a JSON object"),
        ({"detail": {"dryRun": "yes"}}, "dryRun must be true or false"),
    ],
)
def test_unknown_triggers_and_malformed_details_are_refused(change: dict[str, object], message: str) -> None:
    event = {**load_event("autoscaler_schedule.json"), **change}
    with pytest.raises(InvalidInputError, match=message):
        parse_request(event, now=CLOCK)


def test_an_event_without_source_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="unknown autoscaler trigger"):
        parse_request({}, now=CLOCK)


def test_an_operator_event_must_be_a_dry_run() -> None:
    event = {**load_event("autoscaler_dry_run.json"), "detail": {"dryRun": False}}
    with pytest.raises(InvalidInputError, match="dry run only"):
        parse_request(event, now=CLOCK)


@pytest.mark.parametrize("raw", ["not a time", 1735689600, ["2026-01-01"]])
def test_a_dry_runs_bad_time_is_refused(raw: object) -> None:
    event = {**load_event("autoscaler_dry_run.json"), "time": raw}
    with pytest.raises(InvalidInputError, match="event time"):
        parse_request(event, now=CLOCK)


@pytest.mark.parametrize("event", [None, [], "Scheduled Event", 42, 1.5, True])
def test_a_non_object_event_is_refused_with_a_typed_error(event: object) -> None:
    with pytest.raises(InvalidInputError, match="must be a JSON object"):
        parse_request(event, now=CLOCK)


def test_hibernates_release_is_a_release_at_the_handlers_clock_and_never_a_dry_run() -> None:
    # GIVEN the payload statemachines/hibernate.asl.json sends from its ReleaseWorkers state
    states = json.loads((REPO_ROOT / "statemachines" / "hibernate.asl.json").read_text())["States"]
    event = states["ReleaseWorkers"]["Arguments"]["Payload"]
    # WHEN it is parsed
    request = parse_request({**event, "time": "2099-01-01T00:00:00Z"}, now=CLOCK)
    # THEN it asks for a release, acting, at the handler's clock
    assert (request.release, request.dry_run, request.now) == (True, False, CLOCK)
    # AND a release dressed as a dry run is refused
    with pytest.raises(InvalidInputError, match="never a dry run"):
        parse_request({**event, "detail": {"dryRun": True}}, now=CLOCK)
