"""The one poll helper: answers, timeouts and the fake clock."""

from __future__ import annotations

import pytest

from airflow_control_plane.poll import PollTimedOut, poll_until
from tests.conftest import FakeClock


def test_returns_the_first_answer_and_sleeps_between_checks() -> None:
    # GIVEN a check that answers on its third call
    clock = FakeClock(100.0)
    answers = iter([None, False, "ready"])
    # WHEN polling
    value = poll_until(lambda: next(answers), timeout_s=10, interval_s=2, clock=clock, sleep=clock.sleep)
    # THEN the answer comes back after two sleeps of the interval
    assert value == "ready"
    assert clock.sleeps == [2, 2]


def test_times_out_naming_what_it_waited_for_and_the_last_value() -> None:
    clock = FakeClock(100.0)
    with pytest.raises(PollTimedOut) as caught:
        poll_until(
            lambda: None, timeout_s=5, interval_s=2, what="api-server healthy", clock=clock, sleep=clock.sleep
        )
    # THEN the last sleep is cut to the deadline, never past it
    assert clock.sleeps == [2, 2, 1]
    assert clock.now == 105.0
    assert "api-server healthy" in str(caught.value)
    assert "5 s" in str(caught.value)
    assert isinstance(caught.value, TimeoutError)


def test_checks_once_even_with_no_time() -> None:
    clock = FakeClock(100.0)
    assert poll_until(lambda: 0, timeout_s=0, clock=clock, sleep=clock.sleep) == 0
    with pytest.raises(PollTimedOut):
        poll_until(lambda: None, timeout_s=0, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == []


def test_rejects_a_nonsense_interval() -> None:
    with pytest.raises(ValueError, match="interval_s > 0"):
        poll_until(lambda: 1, timeout_s=1, interval_s=0)
