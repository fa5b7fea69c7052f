"""The stored idle clock: encoding, the local JSON file store, and unreadable clocks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from airflow_control_plane.errors import TransientError
from airflow_control_plane.scaling.memory import (
    IDLE_SINCE_TAG,
    PEAK_NEEDED_TAG,
    JsonFileStore,
    decode,
    encode,
)
from airflow_control_plane.scaling.policy import ScaleMemory

pytestmark = pytest.mark.unit

CLOCK = ScaleMemory(datetime(2026, 1, 5, 6, 0, tzinfo=UTC), 2)


def test_encode_decode_round_trip() -> None:
    assert decode(encode(CLOCK)) == CLOCK
    assert decode(encode(ScaleMemory())) == ScaleMemory()


@pytest.mark.parametrize(
    "values",
    [
        {IDLE_SINCE_TAG: "yesterday", PEAK_NEEDED_TAG: "2"},
        {IDLE_SINCE_TAG: "2026-01-05T06:00:00", PEAK_NEEDED_TAG: "2"},  # no time zone
        {IDLE_SINCE_TAG: "2026-01-05T06:00:00+00:00", PEAK_NEEDED_TAG: "two"},
        {},
    ],
)
def test_a_malformed_clock_restarts(values: dict[str, str]) -> None:
    # A clock that cannot be trusted reads as "no clock": the scale-down waits a full idle period.
    assert decode(values) == ScaleMemory()


def test_json_file_store_keeps_each_service(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path / "state" / "scale-memory.json")
    assert store.load("worker-etl") == ScaleMemory()
    store.save("worker-etl", CLOCK)
    store.save("worker-default", ScaleMemory())
    again = JsonFileStore(tmp_path / "state" / "scale-memory.json")
    assert again.load("worker-etl") == CLOCK
    assert again.load("worker-default") == ScaleMemory()


def test_unreadable_file_is_a_transient_error(tmp_path: Path) -> None:
    path = tmp_path / "scale-memory.json"
    path.write_text("{not json")
    with pytest.raises(TransientError, match="idle clock file"):
        JsonFileStore(path).load("worker-etl")
