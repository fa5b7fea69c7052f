"""The scaling policy: table-driven cases and properties over random inputs."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_control_plane.scaling.config import QueueScaling
from airflow_control_plane.scaling.policy import (
    Action,
    QueueDemand,
    ScaleMemory,
    WorkerCount,
    WorkerView,
    decide,
    keda_desired,
)

pytestmark = pytest.mark.unit

AT_0600 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
ETL = QueueScaling("etl", "worker-etl", concurrency=8, min_workers=0, max_workers=10, startup_seconds=60)


def demand(
    queued: int | None = 0, running: int | None = 0, broker: int | None = 0, prewarm: int = 0
) -> QueueDemand:
    return QueueDemand(queued=queued, running=running, broker_waiting=broker, prewarm=prewarm)


def workers(*busy: int, desired: int | None = None) -> WorkerCount:
    """Ready workers w0, w1, ... with these busy counts."""
    views = tuple(WorkerView(f"worker-{i}@h", b) for i, b in enumerate(busy))
    return WorkerCount(len(busy) if desired is None else desired, len(busy), views)


def idle(*ages: int) -> ScaleMemory:
    """Idle clocks of w0, w1, ...: idle for these many seconds at 06:00."""
    return ScaleMemory({f"worker-{i}@h": AT_0600 - timedelta(seconds=a) for i, a in enumerate(ages)})


CASES = [
    # (name, demand, workers, memory, expected action, expected target, expected drain)
    ("scale from zero on one queued task", demand(queued=1, broker=1), workers(), ScaleMemory(),
     Action.SCALE_UP, 1, ()),
    ("KEDA formula ceil(17/8)=3", demand(queued=9, running=8, broker=9), workers(8), ScaleMemory(),
     Action.SCALE_UP, 3, ()),
    ("clamped to max", demand(queued=500, broker=500), workers(0, 0), ScaleMemory(), Action.SCALE_UP, 10, ()),
    ("broker depth counts when the DB shows less", demand(queued=0, broker=20), workers(), ScaleMemory(),
     Action.SCALE_UP, 3, ()),
    ("queued and broker are not added", demand(queued=8, broker=8), workers(0), ScaleMemory(),
     Action.HOLD, 1, ()),
    ("already right", demand(running=16), workers(8, 8), ScaleMemory(), Action.HOLD, 2, ()),
    ("idle clocks start, no scale-down yet", demand(), workers(0, 0, 0), ScaleMemory(), Action.HOLD, 3, ()),
    ("idle period not over", demand(), workers(0, 0, 0), idle(59, 59, 59), Action.HOLD, 3, ()),
    ("idle period over: every worker drained", demand(), workers(0, 0, 0), idle(60, 60, 60),
     Action.SCALE_DOWN, 0, ("worker-0@h", "worker-1@h", "worker-2@h")),
    ("per worker: only the long-idle one goes", demand(running=1), workers(1, 0, 0), idle(0, 600, 10),
     Action.SCALE_DOWN, 2, ("worker-1@h",)),
    ("a busy worker is never drained, even with an old clock", demand(running=8), workers(8, 0),
     idle(900, 900), Action.SCALE_DOWN, 1, ("worker-1@h",)),
    ("longest idle first, no more than the excess", demand(running=8), workers(0, 0, 8), idle(100, 300, 0),
     Action.SCALE_DOWN, 1, ("worker-1@h", "worker-0@h")),
    ("running tasks keep their workers", demand(running=16), workers(8, 8, 0), idle(0, 0, 61),
     Action.SCALE_DOWN, 2, ("worker-2@h",)),
    ("a starting worker (desired > ready) is not drained", demand(), workers(0, desired=2), idle(61),
     Action.SCALE_DOWN, 1, ("worker-0@h",)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "queue_demand", "count", "memory", "action", "target", "drain"), CASES, ids=[c[0] for c in CASES]
)
def test_policy_table(
    name: str,
    queue_demand: QueueDemand,
    count: WorkerCount,
    memory: ScaleMemory,
    action: Action,
    target: int,
    drain: tuple[str, ...],
) -> None:
    # GIVEN the etl queue (concurrency 8, 0..10 workers, start-up 60 s = the idle period) at 06:00
    # WHEN the policy decides
    decision = decide(ETL, queue_demand, count, memory, AT_0600)
    # THEN it takes the expected action to the expected count, names the workers to drain, and says why
    assert (decision.action, decision.target, decision.drain) == (action, target, drain), decision.reason
    assert decision.reason


def test_idle_period_defaults_to_the_start_up_time() -> None:
    assert ETL.idle_period == 60
    assert QueueScaling("q", "s", 1, 0, 1, idle_seconds=5, startup_seconds=60).idle_period == 5


def test_next_evaluation_counts_toward_the_idle_period() -> None:
    # GIVEN a worker idle for 20 s of a 60 s idle period, and the next evaluation in 60 s
    # WHEN the policy decides
    decision = decide(ETL, demand(), workers(0), idle(20), AT_0600, interval_s=60)
    # THEN it drains it now: keeping it to the next chance would pay more idle time than a restart
    assert decision.drain == ("worker-0@h",)
    # AND with the next evaluation in 5 s it keeps it
    assert decide(ETL, demand(), workers(0), idle(20), AT_0600, interval_s=5).action is Action.HOLD


def test_min_is_respected_even_when_idle() -> None:
    # GIVEN a queue that keeps one warm worker
    scaling = QueueScaling(
        "default", "worker-default", concurrency=16, min_workers=1, max_workers=4, idle_seconds=60
    )
    # WHEN three workers have been idle for an hour
    decision = decide(scaling, demand(), workers(0, 0, 0), idle(3600, 3600, 3600), AT_0600)
    # THEN it scales down to min, not to zero
    assert (decision.action, decision.target, len(decision.drain)) == (Action.SCALE_DOWN, 1, 2)


def test_prewarm_keeps_idle_workers_for_a_due_run() -> None:
    # GIVEN an idle worker past its idle period and a DAG run due within the lead time
    decision = decide(ETL, demand(prewarm=1), workers(0), idle(600), AT_0600)
    # THEN it is kept for that run
    assert decision.action is Action.HOLD


def test_hibernated_environment_never_starts_workers() -> None:
    decision = decide(ETL, demand(queued=50, broker=50), workers(), ScaleMemory(), AT_0600, hibernated=True)
    assert (decision.action, decision.target) == (Action.HOLD, 0)
    assert "hibernated" in decision.reason


def test_unreadable_worker_service_holds() -> None:
    decision = decide(ETL, demand(queued=50, broker=50), None, ScaleMemory(), AT_0600)
    assert decision.action is Action.HOLD
    assert not decision.changes_count


def test_unreadable_worker_busy_counts_never_scale_down() -> None:
    # GIVEN three idle workers whose busy counts could not be read (Celery inspect failed)
    blind = WorkerCount(3, 3, None)
    # WHEN the policy decides with clocks long run out
    decision = decide(ETL, demand(), blind, idle(600, 600, 600), AT_0600)
    # THEN it holds, says why, and keeps the clocks as they were
    assert decision.action is Action.HOLD
    assert "per-worker busy counts unreadable" in decision.reason
    assert decision.memory == idle(600, 600, 600)


def test_clock_resets_when_a_worker_takes_a_task() -> None:
    # GIVEN two idle workers at 06:00
    first = decide(ETL, demand(), workers(0, 0), ScaleMemory(), AT_0600)
    assert dict(first.memory.idle_since) == {"worker-0@h": AT_0600, "worker-1@h": AT_0600}
    # WHEN worker 0 runs a task 50 s later
    later = AT_0600 + timedelta(seconds=50)
    second = decide(ETL, demand(running=1), workers(1, 0), first.memory, later)
    # THEN its clock is gone, worker 1's keeps running
    assert dict(second.memory.idle_since) == {"worker-1@h": AT_0600}
    # AND at 06:01 only worker 1 is drained
    third = decide(ETL, demand(), workers(0, 0), second.memory, AT_0600 + timedelta(seconds=61))
    assert third.drain == ("worker-1@h",)


def test_keda_formula_matches_the_helm_chart() -> None:
    assert keda_desired(0, ETL) == 0
    assert keda_desired(1, ETL) == 1
    assert keda_desired(8, ETL) == 1
    assert keda_desired(9, ETL) == 2
    assert keda_desired(10_000, ETL) == 10


counts = st.one_of(st.none(), st.integers(min_value=0, max_value=400))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[QueueScaling, QueueDemand, WorkerCount, ScaleMemory]:
    low = draw(st.integers(0, 5))
    scaling = QueueScaling(
        "q",
        "svc",
        concurrency=draw(st.integers(1, 32)),
        min_workers=low,
        max_workers=draw(st.integers(low, 20)),
        idle_seconds=draw(st.one_of(st.none(), st.integers(0, 3600))),
        startup_seconds=draw(st.integers(0, 300)),
    )
    running = draw(counts)
    desired = draw(st.integers(scaling.min_workers, scaling.max_workers))
    ready = draw(st.integers(0, desired))
    busy = draw(st.lists(st.integers(0, 40), min_size=ready, max_size=ready))
    views = tuple(WorkerView(f"worker-{i}@h", b) for i, b in enumerate(busy))
    count = WorkerCount(desired, ready, draw(st.one_of(st.none(), st.just(views))))
    queue_demand = QueueDemand(draw(counts), running, draw(counts), draw(st.integers(0, 50)))
    ages = draw(st.lists(st.integers(0, 7200), min_size=ready, max_size=ready))
    memory = ScaleMemory({f"worker-{i}@h": AT_0600 - timedelta(seconds=a) for i, a in enumerate(ages)})
    return scaling, queue_demand, count, memory


@settings(max_examples=400, deadline=None)
@given(scenarios(), st.booleans(), st.sampled_from([0.0, 5.0, 60.0]))
def test_policy_properties(
    scenario: tuple[QueueScaling, QueueDemand, WorkerCount, ScaleMemory], hib: bool, interval: float
) -> None:
    scaling, queue_demand, count, memory = scenario
    decision = decide(scaling, queue_demand, count, memory, AT_0600, hibernated=hib, interval_s=interval)
    # never above max (a count below min is only ever raised)
    assert decision.target <= max(scaling.max_workers, count.desired)
    if decision.action is Action.SCALE_DOWN:
        assert count.workers is not None
        idle_names = {w.name for w in count.workers if w.busy == 0}
        # only idle, ready workers are drained, each once, and the target drops by exactly that many
        assert set(decision.drain) <= idle_names
        assert len(set(decision.drain)) == len(decision.drain) > 0
        assert decision.target == count.desired - len(decision.drain)
        # never below min nor what running tasks need
        assert queue_demand.running is not None
        assert decision.target >= scaling.min_workers
        assert decision.target >= math.ceil(queue_demand.running / scaling.concurrency)
        # no scale-down while anything is queued, and only on a complete signal
        assert queue_demand.queued == 0
        assert queue_demand.broker_waiting == 0
        if decision.target == 0:
            assert queue_demand.running == 0
    else:
        assert decision.drain == ()
    if hib:
        assert decision.action is Action.HOLD
    if decision.action is Action.SCALE_UP:
        assert decision.target > count.desired
    assert decision.reason
