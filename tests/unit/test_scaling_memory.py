"""The stored per-worker idle clocks: encoding, unreadable clocks (the store contract itself runs
against every store in tests/contract/test_port_contracts.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from airflow_control_plane.errors import TransientError
from airflow_control_plane.scaling.memory import (
    IDLE_TAG_PREFIX,
    JsonFileStore,
    decode,
    encode,
)
from airflow_control_plane.scaling.policy import ScaleMemory

pytestmark = pytest.mark.unit

SIX = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
CLOCK = ScaleMemory({"worker-3f2a@ip-10-0-1-23": SIX, "worker-9c1b@ip-10-0-2-7": SIX})


def test_encode_decode_round_trip() -> None:
    assert decode(encode(CLOCK)) == CLOCK
    assert decode(encode(ScaleMemory())) == ScaleMemory()


@pytest.mark.parametrize(
    "values",
    [
        {IDLE_TAG_PREFIX + "worker-1@h": "yesterday"},
        {IDLE_TAG_PREFIX + "worker-1@h": "2026-01-05T06:00:00"},  # no time zone
        {IDLE_TAG_PREFIX: "2026-01-05T06:00:00+00:00"},  # no worker name
        {"team": "data"},  # somebody else's tag
        {},
    ],
)
def test_a_malformed_clock_restarts(values: dict[str, str]) -> None:
    # A clock that cannot be trusted reads as "no clock": that worker waits a full idle period.
    assert decode(values) == ScaleMemory()


def test_one_bad_clock_does_not_lose_the_others() -> None:
    values = {**encode(CLOCK), IDLE_TAG_PREFIX + "worker-x@h": "soon"}
    assert decode(values) == CLOCK


def test_unreadable_file_is_a_transient_error(tmp_path: Path) -> None:
    path = tmp_path / "scale-memory.json"
    path.write_text("{not json")
    with pytest.raises(TransientError, match="idle clock file"):
        JsonFileStore(path).load("worker-etl")
