"""The local worker autoscaler end to end: real `afctl up`, PostgreSQL, Redis, Airflow, Celery.

One environment for the module (autoscaling on, workers 0..3, concurrency 4, idle period 20 s,
evaluation every 3 s). The fixture always runs `afctl down --force` and then kills anything
still carrying the state folder's marker. Waits are bounded and generous (CPU is shared).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import pytest

from airflow_control_plane.local import proc
from airflow_control_plane.local.autoscaler import hibernation_flag, read_decisions
from airflow_control_plane.local.ecs import LocalEcs
from tests.harness import DOWN_TIMEOUT_S, LocalEnv, wait_for

pytestmark = pytest.mark.integration

IDLE_S = 20


def _worker(env: LocalEnv) -> tuple[int, int, tuple[int, ...]]:
    """(desired, running, pids) of the worker service."""
    state = env.service("worker")
    return state.desired, state.running, state.pids


def _run_state(env: LocalEnv, dag_id: str, run_id: str) -> str:
    rows = env.query("SELECT state FROM dag_run WHERE dag_id = :d AND run_id = :r", d=dag_id, r=run_id)
    return str(rows[0][0]) if rows else "missing"


@pytest.fixture(scope="module")
def autoscaled(local_environments: Callable[..., AbstractContextManager[LocalEnv]]) -> Iterator[LocalEnv]:
    with local_environments(
        "autoscale",
        AFCTL_AUTOSCALE="true",
        AFCTL_AUTOSCALE_INTERVAL="3",
        AFCTL_AUTOSCALE_IDLE_SECONDS=str(IDLE_S),
        AFCTL_WORKERS_MAX="3",
        AFCTL_WORKER_CONCURRENCY="4",
    ) as local:
        out = local.run("up")
        assert out.returncode == 0, f"afctl up failed:\n{out.stdout}\n{out.stderr}"
        yield local


def test_fanout_scales_workers_from_zero_to_several_and_back_to_zero(autoscaled: LocalEnv) -> None:
    # GIVEN a fresh environment with autoscaling on: no task, so no worker
    env = autoscaled
    wait_for(lambda: _worker(env)[:2] == (0, 0), 120, "the worker count to be 0 after up")
    api = env.api()
    # WHEN the fanout DAG runs 12 mapped tasks of 8 s (concurrency 4, at most 3 workers)
    run_id = api.trigger("fanout", {"task_count": 12, "sleep_seconds": 8})
    peak = 0

    def finished() -> bool:
        nonlocal peak
        peak = max(peak, _worker(env)[1])
        return _run_state(env, "fanout", run_id) in ("success", "failed")

    wait_for(finished, 480, "the fanout run to finish")
    # THEN workers went from 0 to at least 2, and every task succeeded
    assert peak >= 2, f"peak worker count {peak}"
    states = env.query(
        "SELECT state, count(*) FROM task_instance WHERE dag_id = 'fanout' AND run_id = :r GROUP BY state",
        r=run_id,
    )
    assert dict((s, int(n)) for s, n in states) == {"success": 14}, states  # plan + 12 work + reduce
    # AND the wake-up from zero workers (plan was queued while none ran) is measured
    queued, started = env.query(
        "SELECT queued_dttm, start_date FROM task_instance WHERE dag_id = 'fanout' AND run_id = :r "
        "AND task_id = 'plan'",
        r=run_id,
    )[0]
    assert isinstance(queued, datetime)
    assert isinstance(started, datetime)
    print(f"wake-up from zero workers: {(started - queued).total_seconds():.1f} s (queued -> started)")
    # AND after the idle period the workers return to 0
    wait_for(lambda: _worker(env)[:2] == (0, 0), IDLE_S + 240, "the workers to scale back to 0")
    actions = [(d["action"], d["current"], d["target"]) for d in read_decisions(env.paths)]
    assert any(a == "scale_up" and c == 0 for a, c, _ in actions), actions
    assert any(a == "scale_down" and t == 0 for a, _, t in actions), actions


def _owner(worker_pids: tuple[int, ...], task_pid: int) -> int | None:
    return next((w for w in worker_pids if task_pid in proc.descendants(w)), None)


def test_a_long_task_keeps_its_worker_through_scale_down_evaluations(autoscaled: LocalEnv) -> None:
    # GIVEN no worker, then a long task (90 s) and a burst of short ones: several workers start
    env = autoscaled
    wait_for(lambda: _worker(env)[:2] == (0, 0), IDLE_S + 240, "the worker count to be 0")
    api = env.api()
    long_run = api.trigger("long_running", {"duration_seconds": 90, "progress_seconds": 10})
    burst = api.trigger("fanout", {"task_count": 8, "sleep_seconds": 2})
    sql = "SELECT state, pid, try_number FROM task_instance WHERE dag_id = 'long_running' AND run_id = :r"

    def long_task() -> list[Any]:
        rows = env.query(sql, r=long_run)
        return rows[0] if rows else [None, None, None]

    wait_for(lambda: long_task()[0] == "running" and long_task()[1] is not None, 300, "the long task")
    owner = _owner(_worker(env)[2], int(long_task()[1]))
    assert owner is not None, "the long task runs under no local worker"
    since = datetime.now(UTC)
    peak = 0
    owner_alive: list[bool] = []

    # WHEN the burst finishes and the idle period passes while the long task still runs
    def done() -> bool:
        nonlocal peak
        _, running, pids = _worker(env)
        peak = max(peak, running)
        state = long_task()[0]
        if state == "running":
            owner_alive.append(owner in pids)
        return state in ("success", "failed") and _run_state(env, "fanout", burst) in ("success", "failed")

    wait_for(done, 480, "the long task and the burst to finish")
    # THEN the long task's worker was never stopped while it ran, and the task ran once
    assert owner_alive
    assert all(owner_alive), "the busy worker was stopped while its task ran"
    assert long_task()[0::2] == ["success", 1]
    assert peak >= 2, f"the burst never scaled beyond one worker (peak {peak})"
    # AND scale-down evaluations past the idle period happened while it ran (idle workers
    # stopped, or all kept because the busy one holds the highest slot), each keeping it
    during = [
        d
        for d in read_decisions(env.paths)
        if datetime.fromisoformat(d["at"]) >= since
        and (d["action"] == "scale_down" or "keeping" in d["reason"])
    ]
    assert during, "no scale-down evaluation passed the idle period while the long task ran"
    assert all(d["target"] >= 1 for d in during if d["running_workers"] and d["demand"] >= 1), during


def test_down_flags_hibernation_and_stops_the_autoscaler_before_the_scheduler(autoscaled: LocalEnv) -> None:
    # GIVEN the running environment with its autoscaler
    env = autoscaled
    ecs = LocalEcs(env.paths)
    assert next(s for s in ecs.describe() if s.name == "autoscaler").running == 1
    # WHEN it hibernates
    out = env.run("down", timeout=DOWN_TIMEOUT_S)
    assert out.returncode == 0, out.stdout + out.stderr
    # THEN the first step set the flag and stopped the autoscaler, and nothing is left
    first_step = next(line for line in out.stdout.splitlines() if "validate_input done" in line)
    assert "autoscaler stopped" in first_step, out.stdout
    assert hibernation_flag(env.paths).exists()
    assert not ecs.is_running()
