"""Retention: keep live, the last N and anything young; delete the rest."""

from __future__ import annotations

import pytest

from airflow_control_plane.dagsync.retention import ReleaseInfo, decide_retention

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0
HOUR = 3600.0


def _releases(ages_h: list[float], live_index: int) -> list[ReleaseInfo]:
    return [ReleaseInfo(f"r{i}", NOW - age * HOUR, i == live_index) for i, age in enumerate(ages_h)]


def test_keeps_the_last_n_and_deletes_older_ones() -> None:
    # GIVEN six releases, 1..6 hours old, the newest live
    releases = _releases([1, 2, 3, 4, 5, 6], live_index=0)
    # WHEN keeping 3 with a 30 min minimum age
    decision = decide_retention(releases, now=NOW, keep_last=3, min_age_s=1800)
    # THEN the three newest stay and the three oldest go
    assert set(decision.keep) == {"r0", "r1", "r2"}
    assert set(decision.delete) == {"r3", "r4", "r5"}
    assert "deleting 3" in decision.reason


def test_never_deletes_a_young_release_even_beyond_n() -> None:
    releases = _releases([0.1, 0.2, 0.3, 0.4], live_index=0)
    decision = decide_retention(releases, now=NOW, keep_last=1, min_age_s=HOUR)
    assert decision.delete == ()


def test_never_deletes_the_live_release_even_when_old() -> None:
    # GIVEN a rollback made an old release live, and newer ones exist
    releases = _releases([1, 2, 30], live_index=2)
    decision = decide_retention(releases, now=NOW, keep_last=1, min_age_s=0)
    assert "r2" in decision.keep
    assert set(decision.delete) == {"r1"}
