"""Every sample event in events/ is valid JSON and is run by at least one test.

The sample events are what people use with `sam local invoke` and console runs, so one
that no test executes can rot unnoticed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import EVENTS_DIR, REPO_ROOT

pytestmark = pytest.mark.unit

EVENTS = sorted(EVENTS_DIR.glob("*.json"))
TEST_SOURCES = {
    path: path.read_text()
    for path in (REPO_ROOT / "tests").rglob("*.py")
    if path.name != "test_sample_events.py"
}


def test_there_are_sample_events() -> None:
    assert len(EVENTS) >= 10, EVENTS


@pytest.mark.parametrize("path", EVENTS, ids=[p.name for p in EVENTS])
def test_sample_event_is_json_and_used_by_a_test(path: Path) -> None:
    # GIVEN a sample event
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    # THEN some test loads it by name
    users = [str(p.relative_to(REPO_ROOT)) for p, text in TEST_SOURCES.items() if f'"{path.name}"' in text]
    assert users, f"events/{path.name} is not used by any test"
