"""The trace replay: the policy kills nothing, plain KEDA does, always-on costs the most."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from airflow_control_plane.cli import cli
from airflow_control_plane.errors import InvalidInputError
from airflow_control_plane.scaling.config import QueueScaling, parse_queue_map
from airflow_control_plane.scaling.simulate import (
    POLICIES,
    TRACES_DIR,
    WEEKDAY_QUEUES_JSON,
    SimulationSettings,
    Strategy,
    TraceTask,
    compare,
    load_trace,
    lower_bound_hours,
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


SHIPPED_TRACES = sorted(TRACES_DIR.glob("*.csv"))


def test_every_shape_is_shipped() -> None:
    names = {t.stem for t in SHIPPED_TRACES}
    assert {"weekday", "hourly_bursts", "single_spike", "quiet_lone_tasks", "long_and_short"} <= names
    assert "business_drizzle" in names


@pytest.mark.parametrize("trace", SHIPPED_TRACES, ids=[t.stem for t in SHIPPED_TRACES])
def test_shipped_traces_meet_the_bound_against_keda(trace: Path) -> None:
    # GIVEN a shipped trace and the project's default queue settings (idle period = start-up)
    queues = parse_queue_map(WEEKDAY_QUEUES_JSON)
    tasks = load_trace(trace, [q.queue for q in queues])
    # WHEN every strategy replays it
    comparison = compare(tasks, queues, SimulationSettings())
    # THEN each policy costs at most 1.15x plain KEDA's worker-hours, kills nothing, and its p95
    # wait is at most KEDA's + 15 s; every task completes; nothing beats the clairvoyant bound
    for strategy in POLICIES:
        ok, text = comparison.verdict(strategy)
        assert ok, text
        assert comparison.result(strategy).tasks_completed == len(tasks)
    for result in comparison.results:
        assert result.worker_hours >= comparison.lower_bound_hours * 0.999
    always_on = comparison.result(Strategy.ALWAYS_ON)
    assert always_on.worker_hours == pytest.approx(sum(q.max_workers for q in queues) * 24)


def test_lower_bound_is_ceil_of_active_tasks_over_concurrency() -> None:
    # GIVEN 3 tasks of 100 s at once on concurrency 2, then one of 50 s alone
    tasks = [TraceTask(0, 100, "etl")] * 3 + [TraceTask(200, 50, "etl")]
    # THEN the bound is 2 workers x 100 s + 1 worker x 50 s
    assert lower_bound_hours(tasks, ONE_QUEUE) == pytest.approx(250 / 3600)


def test_a_task_dispatched_during_a_drain_keeps_its_worker() -> None:
    # GIVEN two workers (concurrency 2, ready at t=45) idle from t=105, and a task arriving 2 s
    # after the scaler's evaluation at t=120 chose both for a drain
    settings = SimulationSettings(startup_delay=45, evaluate_every=60, tick=5, horizon=3600)
    tasks = [TraceTask(0, 60, "etl")] * 4 + [TraceTask(122, 600, "etl")]
    queue = (QueueScaling("etl", "worker-etl", concurrency=2, min_workers=0, max_workers=4),)
    # WHEN replayed under the policy (idle period = the 45 s start-up)
    result = simulate(tasks, queue, Strategy.POLICY, settings)
    # THEN the worker that got the task in the race window is kept (counted as raced), the
    # other stops, and nothing is killed; the task waited no start-up
    assert result.raced == 1
    assert result.tasks_killed == 0
    assert result.tasks_completed == 5
    assert result.max_wait <= settings.tick + 60 + 45  # the burst's cold start, not the late task's


def test_prefetch_holds_tasks_on_a_worker() -> None:
    # GIVEN one worker of concurrency 2 already up and prefetch x2: 4 tasks fit on it at once
    settings = SimulationSettings(
        startup_delay=45, evaluate_every=60, tick=5, horizon=3600, prefetch_multiplier=2
    )
    queue = (QueueScaling("etl", "w", concurrency=2, min_workers=1, max_workers=1),)
    result = simulate([TraceTask(10, 100, "etl")] * 4, queue, Strategy.POLICY, settings)
    # THEN two run, two wait reserved on that worker for a slot
    assert result.max_wait == pytest.approx(100, abs=5)


def test_prewarm_removes_the_cold_start_of_scheduled_runs() -> None:
    # GIVEN a scheduled run at 06:00 (known in advance) on an empty queue
    settings = SimulationSettings(startup_delay=45, evaluate_every=60, tick=5, horizon=8 * 3600)
    tasks = [TraceTask(6 * 3600 + 2, 300, "etl", scheduled=6 * 3600)]
    # WHEN replayed with and without pre-warm
    cold = simulate(tasks, ONE_QUEUE, Strategy.POLICY_WAKE, settings)
    warm = simulate(tasks, ONE_QUEUE, Strategy.POLICY_PREWARM, settings)
    # THEN without it the task waits the start-up; with it, no more than a tick
    assert cold.max_wait >= 45
    assert warm.max_wait <= settings.tick
    # AND it costs at most a start-up plus one evaluation interval of extra worker time
    assert warm.worker_hours - cold.worker_hours <= (45 + 60) / 3600


def test_scheduled_after_arrival_is_rejected(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("arrival,duration,queue,scheduled\n06:00,60,etl,06:05\n")
    with pytest.raises(InvalidInputError, match="after the task's arrival"):
        load_trace(trace, ["etl"])


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


def test_simulate_command_prints_every_strategy_and_the_bound(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("arrival,duration,queue\n06:00,600,etl\n06:00:30,120,etl\n")
    queues = '[{"queue": "etl", "service": "w", "concurrency": 1, "max": 2, "idle_seconds": 60}]'
    result = CliRunner().invoke(
        cli, ["simulate", str(trace), "--startup-delay", "30", "--queues", queues, "--check"]
    )
    assert result.exit_code == 0, result.output
    for name in ("policy", "policy+wake", "policy+prewarm", "keda", "always-on", "p95 wait", "killed"):
        assert name in result.output
    assert "lower bound" in result.output
    assert "changes/h" in result.output
    assert "x KEDA worker-hours" in result.output


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


def test_simulate_json_holds_the_printed_figures(tmp_path: Path) -> None:
    # GIVEN the trace and queue map of the printed report above
    trace = tmp_path / "t.csv"
    trace.write_text("arrival,duration,queue\n06:00,600,etl\n06:00:30,120,etl\n")
    queues = '[{"queue": "etl", "service": "w", "concurrency": 1, "max": 2, "idle_seconds": 60}]'
    args = ["simulate", str(trace), "--startup-delay", "30", "--queues", queues]
    # WHEN it is asked as JSON and as text
    as_json = CliRunner().invoke(cli, [*args, "--json"])
    as_text = CliRunner().invoke(cli, args)
    # THEN the JSON is one document per trace with every strategy, the bound and the verdicts
    assert as_json.exit_code == 0, as_json.output
    (document,) = json.loads(as_json.output)["traces"]
    assert document["trace"] == str(trace)
    assert document["tasks"] == 2
    rows = {r["strategy"]: r for r in document["results"]}
    assert set(rows) == {"policy", "policy+wake", "policy+prewarm", "keda", "always-on"}
    assert {v["strategy"] for v in document["verdicts"]} == {"policy", "policy+wake", "policy+prewarm"}
    assert all(v["ok"] for v in document["verdicts"])
    # AND its figures are the printed ones
    for name, row in rows.items():
        line = next(x for x in as_text.output.splitlines() if x.split() and x.split()[0] == name)
        assert line.split()[1] == f"{row['worker_hours']:.2f}", line
        assert f"{row['p95_wait_s']:.0f}s" in line.split()
    assert f"{document['lower_bound_worker_hours']:.2f}" in as_text.output
