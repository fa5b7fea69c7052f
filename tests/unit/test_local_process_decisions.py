"""The supervisor's pure decisions: restart backoff and the reconcile plan."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_control_plane.local.process_table import ProcessView, plan_reconcile
from airflow_control_plane.local.restart_policy import (
    RestartPolicy,
    SlotHistory,
    backoff_delay,
    decide_restart,
    record_exit,
)

pytestmark = pytest.mark.unit

POLICY = RestartPolicy(base_delay_s=1.0, max_delay_s=30.0, stable_after_s=60.0)


def test_a_crash_loop_backs_off_exponentially_up_to_the_cap() -> None:
    delays = [backoff_delay(n, POLICY) for n in range(1, 9)]
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_a_process_that_ran_long_enough_resets_the_failure_count() -> None:
    # GIVEN a slot with 5 failures in a row
    history = SlotHistory(consecutive_failures=5, last_exit_at=100.0, last_exit_code=1)
    # WHEN the next process ran 10 minutes before it died
    after_stable = record_exit(history, started_at=200.0, exited_at=800.0, exit_code=-9, policy=POLICY)
    # THEN it counts as a first failure (restart at once); a quick death counts as one more
    assert after_stable.consecutive_failures == 1
    assert decide_restart(after_stable, 800.0, POLICY).start_now
    after_quick = record_exit(history, started_at=200.0, exited_at=202.0, exit_code=1, policy=POLICY)
    assert after_quick.consecutive_failures == 6


def test_restart_waits_for_the_backoff_and_says_why() -> None:
    history = SlotHistory(consecutive_failures=3, last_exit_at=100.0, last_exit_code=2)
    waiting = decide_restart(history, 101.0, POLICY)
    assert not waiting.start_now
    assert "code 2" in waiting.reason
    assert "waiting" in waiting.reason
    assert decide_restart(history, 102.0, POLICY).start_now


@given(st.integers(min_value=1, max_value=200))
def test_backoff_never_decreases_and_never_exceeds_the_cap(failures: int) -> None:
    assert backoff_delay(failures, POLICY) <= backoff_delay(failures + 1, POLICY) <= POLICY.max_delay_s


def _p(service: str, index: int, pid: int, stopping: bool = False) -> ProcessView:
    return ProcessView(service, index, pid, started_at=0.0, stopping=stopping)


def test_missing_processes_start_at_the_lowest_free_index() -> None:
    # GIVEN desired 3 workers, with index 1 running
    plan = plan_reconcile({"worker": 3}, [_p("worker", 1, 11)], {}, now=10.0, policy=POLICY)
    # THEN indexes 0 and 2 start, nothing stops
    assert [(s.service, s.index) for s in plan.starts] == [("worker", 0), ("worker", 2)]
    assert plan.stops == ()


def test_extra_processes_stop_highest_index_first() -> None:
    running = [_p("worker", i, 100 + i) for i in range(3)]
    plan = plan_reconcile({"worker": 1}, running, {}, now=10.0, policy=POLICY)
    assert [s.pid for s in plan.stops] == [102, 101]
    assert "desired 1, running 3" in plan.stops[0].reason


def test_a_service_without_a_desired_count_is_stopped_and_matching_counts_do_nothing() -> None:
    plan = plan_reconcile({"scheduler": 1}, [_p("scheduler", 0, 5), _p("old", 0, 6)], {}, 1.0, POLICY)
    assert [(s.service, s.pid) for s in plan.stops] == [("old", 6)]
    assert plan.starts == ()


def test_a_stopping_process_keeps_its_index_busy_and_does_not_count_as_running() -> None:
    # GIVEN scheduler[0] crashed and is being cleaned up
    plan = plan_reconcile({"scheduler": 1}, [_p("scheduler", 0, 5, stopping=True)], {}, 1.0, POLICY)
    # THEN a replacement starts at another index, so two processes never share one
    assert [(s.service, s.index) for s in plan.starts] == [("scheduler", 1)]


def test_backoff_holds_a_start_and_reports_it() -> None:
    histories = {("scheduler", 0): SlotHistory(4, last_exit_at=9.0, last_exit_code=1)}
    plan = plan_reconcile({"scheduler": 1}, [], histories, now=10.0, policy=POLICY)
    assert plan.starts == ()
    assert plan.waiting
    assert plan.waiting[0].startswith("scheduler[0]")
    assert plan.is_empty


@given(
    desired=st.integers(min_value=0, max_value=6),
    running=st.sets(st.integers(min_value=0, max_value=8), max_size=8),
)
def test_applying_the_plan_always_reaches_the_desired_count(desired: int, running: set[int]) -> None:
    processes = [_p("worker", i, 1000 + i) for i in sorted(running)]
    plan = plan_reconcile({"worker": desired}, processes, {}, now=0.0, policy=POLICY)
    after = len(processes) - len(plan.stops) + len(plan.starts)
    assert after == desired
    started = {s.index for s in plan.starts}
    assert not started & running  # never two processes on one index
