"""The DAG sync Lambda's event parsed at the edge (dagsync/request.py), and the one builder of
a sync's settings (dagsync/settings.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_control_plane.dagsync.request import SyncRequest, parse_request
from airflow_control_plane.dagsync.service import SyncSettings
from airflow_control_plane.dagsync.settings import SyncOptions, build_sync_settings
from airflow_control_plane.errors import ConfigError, InvalidInputError
from tests.conftest import load_event

pytestmark = pytest.mark.unit

SHA = "a" * 40


def test_a_scheduled_event_syncs_the_tip() -> None:
    event = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
    assert parse_request(event) == SyncRequest(trigger="schedule")


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"trigger": "webhook", "sha": SHA, "delivery_id": "d-1"}, SyncRequest("webhook", SHA, None, "d-1")),
        ({"trigger": "manual", "rollback_to": SHA}, SyncRequest("manual", None, SHA, None)),
        ({"trigger": "schedule"}, SyncRequest("schedule")),
        ({"trigger": "break_lease", "sha": SHA}, SyncRequest("break_lease")),  # nothing else counts
    ],
)
def test_each_known_trigger_becomes_its_request(event: dict[str, object], expected: SyncRequest) -> None:
    assert parse_request(event) == expected


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ([], "must be a JSON object"),
        ("sync", "must be a JSON object"),
        ({"hello": "world"}, "unrecognised event"),
        ({"source": "aws.events", "detail-type": "Object Created"}, "unrecognised event"),
        ({"trigger": "manual", "rollback_to": 123}, "must be strings"),
        ({"trigger": "webhook", "sha": [SHA]}, "must be strings"),
    ],
)
def test_anything_else_is_refused_before_any_work(event: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_request(event)


def test_the_sample_events_parse() -> None:
    assert parse_request(load_event("dag_sync_schedule.json")) == SyncRequest(trigger="schedule")


def test_the_builder_defaults_are_the_sync_defaults(tmp_path: Path) -> None:
    # GIVEN no option WHEN built THEN the same settings as SyncSettings' own defaults
    built = build_sync_settings("file:///repo", "main", tmp_path, subdir="dags")
    assert built == SyncSettings("file:///repo", "main", tmp_path, subdir="dags")


def test_the_builder_carries_every_option_as_given(tmp_path: Path) -> None:
    options = SyncOptions(
        keep_releases=2, min_release_age_s=0, lease_wait_s=65, deadline_s=30, ignore_syntax="regexp"
    )
    built = build_sync_settings("file:///repo", "v1", tmp_path, options=options)
    assert (built.keep_releases, built.min_release_age_s, built.lock_wait_s, built.deadline_s) == (
        2,
        0.0,
        65.0,
        30.0,
    )
    assert built.ignore_syntax == "regexp"
    assert isinstance(built.min_release_age_s, float)


@pytest.mark.parametrize(
    ("repository", "options", "message"),
    [
        ("", SyncOptions(), "repository URL"),
        ("file:///r", SyncOptions(keep_releases=0), "at least 1 release"),
        ("file:///r", SyncOptions(min_release_age_s=-1), "cannot be negative"),
        ("file:///r", SyncOptions(lease_wait_s=-1), "cannot be negative"),
        ("file:///r", SyncOptions(deadline_s=0), "must be positive"),
        ("file:///r", SyncOptions(ignore_syntax="fnmatch"), "dag_ignore_file_syntax"),
    ],
)
def test_the_builder_refuses_settings_no_sync_can_run_with(
    tmp_path: Path, repository: str, options: SyncOptions, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_sync_settings(repository, "main", tmp_path, options=options)
