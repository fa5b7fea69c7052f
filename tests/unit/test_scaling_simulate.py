"""The trace replay: the policy kills nothing, plain KEDA does, always-on costs the most."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from airflow_control_plane.cli import cli
from airflow_control_plane.errors import InvalidInputError
from airflow_control_plane.scaling.config import QueueScaling, parse_queue_map
from airflow_control_plane.scaling.simulate import (
    WEEKDAY_QUEUES_JSON,
    WEEKDAY_TRACE,
    SimulationSettings,
    Strategy,
    TraceTask,
    compare,
    load_trace,
    simulate,
)

pytestmark = pytest.mark.unit

ONE_QUEUE = (
    QueueScaling("etl", "worker-etl", concurrency=2, min_workers=0, max_workers=4, idle_seconds=300),
)


def burst_then_long_task() -> list[TraceTask]:
    # Four short tasks fill two workers; one long task keeps running after the burst,
    # so a load-blind scale-in can hit the busy worker.
    tasks = [TraceTask(0, 60, "etl") for _ in range(4)]
    tasks.append(TraceTask(0, 3 * 3600, "etl"))
    return tasks


def test_policy_never_kills_and_keda_does_on_the_same_trace() -> None:
    # GIVEN a burst followed by one long task, and a 45 s worker start-up
    settings = SimulationSettings(startup_delay=45, evaluate_every=60, tick=5, horizon=4 * 3600)
    tasks = burst_then_long_task()
    # WHEN it is replayed under each strategy over several zone-balance seeds
    killed_policy = [
        simulate(tasks, ONE_QUEUE, Strategy.POLICY, SimulationSettings(**{**settings.__dict__, "seed": s}))
        for s in range(5)
    ]
    killed_keda = [
        simulate(tasks, ONE_QUEUE, Strategy.KEDA, SimulationSettings(**{**settings.__dict__, "seed": s}))
        for s in range(5)
    ]
    # THEN the policy never kills a running task; plain KEDA kills the long one in some runs
    assert all(r.tasks_killed == 0 for r in killed_policy)
    assert any(r.tasks_killed > 0 for r in killed_keda)
    # AND every task completes under both (killed tasks are retried)
    assert all(r.tasks_completed == 5 for r in killed_policy)


def test_waits_include_the_worker_start_up_from_zero() -> None:
    # GIVEN one task arriving at an empty queue, and 45 s start-up with a scaler every 60 s
    settings = SimulationSettings(startup_delay=45, evaluate_every=60, tick=5, horizon=3600)
    result = simulate([TraceTask(10, 30, "etl")], ONE_QUEUE, Strategy.POLICY, settings)
    # THEN it waits for the next evaluation (t=60) plus the start-up: 95 s
    assert result.max_wait == pytest.approx(95, abs=5)


def test_shipped_trace_figures() -> None:
    # GIVEN the shipped weekday trace and its queue map
    queues = parse_queue_map(WEEKDAY_QUEUES_JSON)
    tasks = load_trace(WEEKDAY_TRACE, [q.queue for q in queues])
    # WHEN the three strategies replay it
    results = {r.strategy: r for r in compare(tasks, queues, SimulationSettings())}
    # THEN the policy kills nothing, costs far less than always-on, and completes every task
    assert results[Strategy.POLICY].tasks_killed == 0
    assert results[Strategy.POLICY_WAKE].tasks_killed == 0
    assert results[Strategy.POLICY].worker_hours < 0.25 * results[Strategy.ALWAYS_ON].worker_hours
    assert results[Strategy.POLICY].tasks_completed == len(tasks)
    assert results[Strategy.ALWAYS_ON].worker_hours == pytest.approx(sum(q.max_workers for q in queues) * 24)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("arrival,duration\n0,10\n", "missing ['queue']"),
        ("arrival,duration,queue\nsoon,10,etl\n", "line 2: arrival 'soon'"),
        ("arrival,duration,queue\n0,-1,etl\n", "line 2: need arrival >= 0, duration > 0"),
        ("arrival,duration,queue\n0,10,nope\n", "queue 'nope' is not in the queue map"),
        ("arrival,duration,queue\n", "holds no tasks"),
    ],
)
def test_bad_traces_are_rejected_with_the_line(tmp_path: Path, content: str, message: str) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(content)
    with pytest.raises(InvalidInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_trace(trace, ["etl"])


def test_simulate_command_prints_all_three_strategies(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("arrival,duration,queue\n06:00,600,etl\n06:00:30,120,etl\n")
    queues = '[{"queue": "etl", "service": "w", "concurrency": 1, "max": 2, "idle_seconds": 60}]'
    result = CliRunner().invoke(cli, ["simulate", str(trace), "--startup-delay", "30", "--queues", queues])
    assert result.exit_code == 0, result.output
    for name in ("policy", "policy+wake", "keda", "always-on", "p95 wait", "killed"):
        assert name in result.output


def test_wake_up_removes_the_wait_for_the_next_scheduled_run() -> None:
    # GIVEN one task arriving at an empty queue 10 s after a scheduled evaluation
    settings = SimulationSettings(startup_delay=45, evaluate_every=60, tick=5, horizon=3600)
    tasks = [TraceTask(10, 30, "etl")]
    # WHEN it is replayed with and without the scheduler's wake-up
    scheduled = simulate(tasks, ONE_QUEUE, Strategy.POLICY, settings)
    woken = simulate(tasks, ONE_QUEUE, Strategy.POLICY_WAKE, settings)
    # THEN with the wake-up it waits only for the worker start-up (45 s), not for the next tick too
    assert woken.max_wait == pytest.approx(45, abs=5)
    assert scheduled.max_wait - woken.max_wait == pytest.approx(50, abs=5)
    assert woken.tasks_killed == 0
