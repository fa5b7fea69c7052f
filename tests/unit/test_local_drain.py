"""`afctl down`'s drain step: the drain check's decision in a poll loop, on a fake clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from airflow_control_plane.bringup.drain import ActiveTaskInstances
from airflow_control_plane.errors import ControlPlaneError
from airflow_control_plane.local.hibernate import DownContext, Hibernate
from airflow_control_plane.local.runtime_state import RuntimeState
from airflow_control_plane.local.settings import LocalSettings
from airflow_control_plane.poll import poll_done
from tests.conftest import FakeClock

pytestmark = pytest.mark.unit


def _counter(counts: Iterator[ActiveTaskInstances | None]) -> Callable[[RuntimeState], Callable[[], object]]:
    return lambda state: lambda: next(counts)


def _down(
    tmp_path: Path, clock: FakeClock, counts: list[ActiveTaskInstances | None], **kw: object
) -> Hibernate:
    settings = LocalSettings.from_env({"AFCTL_STATE_DIR": str(tmp_path)})
    return Hibernate(
        settings,
        lambda _line: None,
        clock=clock,
        sleep=clock.sleep,
        task_counter=_counter(iter(counts)),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


RUNNING = DownContext(RuntimeState(database_url="postgresql://u@h/db"), running=True)


def test_drain_waits_until_no_task_is_active(tmp_path: Path) -> None:
    # GIVEN two polls with work, then none
    clock = FakeClock()
    busy = ActiveTaskInstances(1, 1)
    down = _down(tmp_path, clock, [busy, busy, ActiveTaskInstances(0, 0)], drain_timeout_s=60)
    # WHEN the drain step runs THEN it proceeds at the third poll, 2 s apart
    _, detail = down.drain_tasks(RUNNING)
    assert "drained" in detail
    assert clock.now == 4.0


def test_drain_stops_nothing_when_work_outlasts_the_window(tmp_path: Path) -> None:
    # GIVEN work that never ends and a 10 s window (6 polls)
    clock = FakeClock()
    down = _down(tmp_path, clock, [ActiveTaskInstances(2, 0)] * 6, drain_timeout_s=10)
    # WHEN the drain step runs THEN it refuses, naming the count and --force
    with pytest.raises(ControlPlaneError, match=r"2 task instance\(s\).*--force"):
        down.drain_tasks(RUNNING)
    assert clock.now == 10.0


def test_force_counts_once_and_goes_on(tmp_path: Path) -> None:
    # GIVEN an unreachable database and --force
    clock = FakeClock()
    down = _down(tmp_path, clock, [None], force=True)
    # WHEN the drain step runs THEN it proceeds at once, saying it was forced
    _, detail = down.drain_tasks(RUNNING)
    assert "force" in detail
    assert clock.now == 0.0


def test_poll_done_says_whether_the_check_answered_in_time() -> None:
    clock = FakeClock()
    assert poll_done(lambda: clock.now >= 3, timeout_s=5, interval_s=1, clock=clock, sleep=clock.sleep)
    assert not poll_done(lambda: False, timeout_s=2, interval_s=1, clock=clock, sleep=clock.sleep)
