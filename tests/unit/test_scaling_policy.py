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
    decide,
    keda_desired,
)

pytestmark = pytest.mark.unit

AT_0600 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
ETL = QueueScaling("etl", "worker-etl", concurrency=8, min_workers=0, max_workers=10, idle_seconds=600)


def demand(
    queued: int | None = 0, running: int | None = 0, broker: int | None = 0, prewarm: int = 0
) -> QueueDemand:
    return QueueDemand(queued=queued, running=running, broker_waiting=broker, prewarm=prewarm)


def idle_since(seconds_ago: int, peak: int = 0) -> ScaleMemory:
    return ScaleMemory(AT_0600 - timedelta(seconds=seconds_ago), peak)


CASES = [
    # (name, demand, workers (desired, running, protected), memory, expected action, expected target)
    (
        "scale from zero on one queued task",
        demand(queued=1, broker=1),
        (0, 0, 0),
        ScaleMemory(),
        Action.SCALE_UP,
        1,
    ),
    (
        "KEDA formula ceil(17/8)=3",
        demand(queued=9, running=8, broker=9),
        (1, 1, 1),
        ScaleMemory(),
        Action.SCALE_UP,
        3,
    ),
    (
        "clamped to max",
        demand(queued=500, running=0, broker=500),
        (2, 2, 0),
        ScaleMemory(),
        Action.SCALE_UP,
        10,
    ),
    (
        "broker depth counts when the DB shows less",
        demand(queued=0, broker=20),
        (0, 0, 0),
        ScaleMemory(),
        Action.SCALE_UP,
        3,
    ),
    ("queued and broker are not added", demand(queued=8, broker=8), (1, 1, 0), ScaleMemory(), Action.HOLD, 1),
    ("already right", demand(running=16), (2, 2, 2), ScaleMemory(), Action.HOLD, 2),
    ("idle clock starts, no scale-down yet", demand(), (3, 3, 0), ScaleMemory(), Action.HOLD, 3),
    ("idle clock not run out", demand(), (3, 3, 0), idle_since(599), Action.HOLD, 3),
    ("idle period over: to zero", demand(), (3, 3, 0), idle_since(600), Action.SCALE_DOWN, 0),
    (
        "scale-down keeps the peak of the idle period",
        demand(running=8),
        (5, 5, 1),
        idle_since(900, peak=2),
        Action.SCALE_DOWN,
        2,
    ),
    (
        "never below busy protected workers",
        demand(running=3),
        (5, 5, 3),
        idle_since(900),
        Action.SCALE_DOWN,
        3,
    ),
    ("all busy: hold", demand(running=5), (5, 5, 5), idle_since(900), Action.HOLD, 5),
    (
        "no scale-down while anything is queued",
        demand(queued=1, running=0, broker=1),
        (5, 5, 0),
        idle_since(900),
        Action.HOLD,
        5,
    ),
    (
        "database down: no scale-down",
        demand(queued=None, running=None),
        (3, 3, 0),
        idle_since(900),
        Action.HOLD,
        3,
    ),
    (
        "database down: broker still scales up",
        demand(queued=None, running=None, broker=30),
        (1, 1, 0),
        ScaleMemory(),
        Action.SCALE_UP,
        4,
    ),
    ("broker down: no scale-down", demand(broker=None), (3, 3, 0), idle_since(900), Action.HOLD, 3),
    (
        "broker down: database still scales up",
        demand(queued=20, broker=None),
        (0, 0, 0),
        ScaleMemory(),
        Action.SCALE_UP,
        3,
    ),
    ("protection unreadable: no scale-down", demand(), (3, 3, None), idle_since(900), Action.HOLD, 3),
    ("both sources down: hold", demand(None, None, None), (3, 3, 0), idle_since(900), Action.HOLD, 3),
    (
        "pre-warm one worker for a due DAG run",
        demand(prewarm=1),
        (0, 0, 0),
        ScaleMemory(),
        Action.SCALE_UP,
        1,
    ),
    (
        "pre-warm keeps the worker from scaling to zero",
        demand(prewarm=1),
        (1, 1, 0),
        idle_since(900),
        Action.HOLD,
        1,
    ),
]


@pytest.mark.parametrize(
    ("name", "queue_demand", "workers", "memory", "action", "target"), CASES, ids=[c[0] for c in CASES]
)
def test_policy_table(
    name: str,
    queue_demand: QueueDemand,
    workers: tuple[int, int, int | None],
    memory: ScaleMemory,
    action: Action,
    target: int,
) -> None:
    # GIVEN the etl queue (concurrency 8, 0..10 workers, idle period 600 s) at 06:00
    # WHEN the policy decides
    decision = decide(ETL, queue_demand, WorkerCount(*workers), memory, AT_0600)
    # THEN it takes the expected action to the expected count, and says why
    assert (decision.action, decision.target) == (action, target), decision.reason
    assert decision.reason


def test_min_is_respected_even_when_idle() -> None:
    # GIVEN a queue that keeps one warm worker
    scaling = QueueScaling(
        "default", "worker-default", concurrency=16, min_workers=1, max_workers=4, idle_seconds=60
    )
    # WHEN everything has been idle for an hour with 3 workers
    decision = decide(scaling, demand(), WorkerCount(3, 3, 0), idle_since(3600), AT_0600)
    # THEN it scales down to min, not to zero
    assert (decision.action, decision.target) == (Action.SCALE_DOWN, 1)


def test_hibernated_environment_never_starts_workers() -> None:
    # GIVEN a hibernated environment with work waiting
    # WHEN the policy decides
    decision = decide(
        ETL, demand(queued=50, broker=50), WorkerCount(0, 0, 0), ScaleMemory(), AT_0600, hibernated=True
    )
    # THEN it holds at zero and says why
    assert (decision.action, decision.target) == (Action.HOLD, 0)
    assert "hibernated" in decision.reason


def test_unreadable_worker_service_holds() -> None:
    decision = decide(ETL, demand(queued=50, broker=50), None, ScaleMemory(), AT_0600)
    assert decision.action is Action.HOLD
    assert not decision.changes_count


def test_idle_clock_runs_across_evaluations_and_resets_on_backlog() -> None:
    # GIVEN three workers and an empty queue at 06:00
    first = decide(ETL, demand(), WorkerCount(3, 3, 0), ScaleMemory(), AT_0600)
    # THEN the clock starts at 06:00
    assert first.memory.idle_since == AT_0600
    # WHEN a task is queued five minutes later
    later = AT_0600 + timedelta(minutes=5)
    second = decide(ETL, demand(queued=1, broker=1), WorkerCount(3, 3, 0), first.memory, later)
    # THEN the clock is reset, so the scale-down waits a full idle period again
    assert second.memory == ScaleMemory()
    third = decide(ETL, demand(), WorkerCount(3, 3, 0), second.memory, later + timedelta(minutes=6))
    assert third.action is Action.HOLD


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
        idle_seconds=draw(st.integers(0, 3600)),
    )
    running = draw(counts)
    workers_desired = draw(st.integers(scaling.min_workers, scaling.max_workers))
    protected = draw(st.one_of(st.none(), st.integers(0, workers_desired)))
    queue_demand = QueueDemand(draw(counts), running, draw(counts), draw(st.integers(0, 50)))
    memory = draw(
        st.one_of(
            st.just(ScaleMemory()),
            st.builds(
                ScaleMemory,
                st.integers(0, 7200).map(lambda s: AT_0600 - timedelta(seconds=s)),
                st.integers(0, 20),
            ),
        )
    )
    return scaling, queue_demand, WorkerCount(workers_desired, workers_desired, protected), memory


@settings(max_examples=400, deadline=None)
@given(scenarios(), st.booleans())
def test_policy_properties(
    scenario: tuple[QueueScaling, QueueDemand, WorkerCount, ScaleMemory], hib: bool
) -> None:
    scaling, queue_demand, workers, memory = scenario
    decision = decide(scaling, queue_demand, workers, memory, AT_0600, hibernated=hib)
    # never outside [min, max]
    assert scaling.min_workers <= decision.target <= scaling.max_workers
    if decision.action is Action.SCALE_DOWN:
        assert decision.target < workers.desired
        # never below what running tasks need, nor below the busy (protected) workers
        assert queue_demand.running is not None
        assert workers.protected is not None
        assert decision.target >= math.ceil(queue_demand.running / scaling.concurrency)
        assert decision.target >= workers.protected
        # no scale-down while anything is queued, and only on a complete signal
        assert queue_demand.queued == 0
        assert queue_demand.broker_waiting == 0
        # zero only when nothing is queued or running
        if decision.target == 0:
            assert queue_demand.running == 0
    if hib:
        assert decision.action is Action.HOLD
    if decision.action is Action.SCALE_UP:
        assert decision.target > workers.desired
    assert decision.reason
