"""The demand queries against a real Airflow 3 schema (``airflow db migrate``) in PostgreSQL,
and one full evaluation with the real database and a real Redis."""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner, Result

from airflow_control_plane.cli import cli
from airflow_control_plane.scaling.broker import RedisQueueDepth, kombu_queue_keys
from airflow_control_plane.scaling.config import QueueScaling
from airflow_control_plane.scaling.demand import TASK_COUNTS_SQL, PgDemandReader, TaskCounts
from airflow_control_plane.scaling.drain import InMemoryWorkerControl
from airflow_control_plane.scaling.ecs import InMemoryWorkerServices, ServiceCounts
from airflow_control_plane.scaling.events import RecordingPublisher
from airflow_control_plane.scaling.hibernation import FixedFlag
from airflow_control_plane.scaling.memory import InMemoryStore
from airflow_control_plane.scaling.policy import Action, ScaleMemory
from airflow_control_plane.scaling.seed import (
    ALL_STATES,
    SeedTask,
    seed_bulk,
    seed_bundle_and_dags,
    seed_run,
    seed_task_instances,
)
from airflow_control_plane.scaling.service import ScalingPorts, evaluate
from tests.conftest import PostgresDatabase, RedisDatabase

pytestmark = pytest.mark.integration

NOW = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
QUEUES = ("default", "etl", "heavy")


def seeded_tasks() -> list[SeedTask]:
    """Every state on every queue (plus NULL queue), in an old and the latest run of two DAGs."""
    tasks = []
    for dag_id in ("etl_daily", "hourly_report"):
        for run_id in ("old", "latest"):
            for queue in (*QUEUES, None):
                for index, state in enumerate((*ALL_STATES, None)):
                    if dag_id == "hourly_report" and queue != "default":
                        continue  # hourly_report only ever uses the default queue
                    task_id = f"{queue}_{state}_{index}"
                    tasks.append(SeedTask(dag_id, run_id, task_id, state, queue))
    # A few more live ones so the counts differ per queue.
    tasks += [SeedTask("etl_daily", "latest", f"extra_{i}", "queued", "etl") for i in range(5)]
    tasks += [SeedTask("etl_daily", "latest", f"extra_run_{i}", "running", "heavy") for i in range(2)]
    return tasks


@pytest.fixture(scope="module")
def airflow_db(migrated_database_factory: Callable[[str], PostgresDatabase]) -> PostgresDatabase:
    db = migrated_database_factory("scaling")  # the real `airflow db migrate` schema
    conn = db.connect()
    try:
        seed_bundle_and_dags(
            conn,
            ["etl_daily", "hourly_report", "paused_dag", "never_ran", "late_dag"],
            paused=["paused_dag"],
            next_due={
                "hourly_report": NOW + timedelta(minutes=3),
                "etl_daily": NOW + timedelta(minutes=30),
                "paused_dag": NOW + timedelta(minutes=2),
                "never_ran": NOW + timedelta(minutes=1),
                "late_dag": NOW - timedelta(minutes=30),
            },
        )
        for dag_id in ("etl_daily", "hourly_report"):
            seed_run(conn, dag_id, "old", NOW - timedelta(days=1))
            seed_run(conn, dag_id, "latest", NOW - timedelta(hours=1))
        seed_task_instances(conn, seeded_tasks())
        # 50,000 finished rows so the planner has a table worth an index.
        seed_bulk(conn, rows=50_000, queues=list(QUEUES), live_per_queue=0)
    finally:
        conn.close()
    return db


def test_task_counts_are_queued_and_running_per_queue(airflow_db: PostgresDatabase) -> None:
    # GIVEN task instances in every Airflow state on several queues (and a NULL queue)
    expected: Counter[tuple[str, str]] = Counter(
        (t.queue or "", t.state) for t in seeded_tasks() if t.state in ("queued", "running")
    )
    # WHEN the demand reader counts
    counts = PgDemandReader.from_dsn(airflow_db.dsn).task_counts()
    # THEN only queued and running are counted, per queue
    assert counts == {
        queue: TaskCounts(queued=expected[(queue, "queued")], running=expected[(queue, "running")])
        for queue in {q for q, _ in expected}
    }
    assert counts["etl"] == TaskCounts(queued=2 + 5, running=2)


def test_tasks_of_another_executor_never_count_as_worker_demand(airflow_db: PostgresDatabase) -> None:
    # GIVEN task instances on the etl queue that run in their own Fargate task (AwsEcsExecutor),
    # and one that names Celery explicitly
    before = PgDemandReader.from_dsn(airflow_db.dsn).task_counts()
    conn = airflow_db.connect()
    try:
        for index, (executor, state) in enumerate(
            [("AwsEcsExecutor", "queued"), ("AwsEcsExecutor", "running"), ("CeleryExecutor", "queued")]
        ):
            conn.run(
                "INSERT INTO task_instance (id, dag_id, run_id, task_id, map_index, state, queue, try_number,"
                " pool, pool_slots, executor) VALUES (gen_random_uuid(), 'etl_daily', 'latest', :task, -1,"
                " :state, 'etl', 1, 'default_pool', 1, :executor)",
                task=f"executor_{index}",
                state=state,
                executor=executor,
            )
        # WHEN the autoscaler's reader counts
        after = PgDemandReader.from_dsn(airflow_db.dsn).task_counts()
    finally:
        conn.run("DELETE FROM task_instance WHERE task_id LIKE 'executor_%'")
        conn.close()
    # THEN only the Celery one is worker demand (a worker would never get the others)
    assert after["etl"] == TaskCounts(queued=before["etl"].queued + 1, running=before["etl"].running)


def test_task_count_query_uses_the_state_index(airflow_db: PostgresDatabase) -> None:
    # GIVEN a task_instance table of some 50,000 rows, analyzed
    conn = airflow_db.connect()
    try:
        plan = "\n".join(row[0] for row in conn.run("EXPLAIN " + TASK_COUNTS_SQL))
    finally:
        conn.close()
    # THEN the grouped count reads through Airflow's ti_state index, not the whole table
    assert "ti_state" in plan, plan
    assert "Seq Scan on task_instance" not in plan, plan


def test_due_dag_runs_with_their_queues(airflow_db: PostgresDatabase) -> None:
    # WHEN the reader looks 10 minutes ahead
    due = PgDemandReader.from_dsn(airflow_db.dsn).due_dag_runs(NOW, timedelta(minutes=10))
    by_dag = {run.dag_id: run for run in due}
    # THEN it finds the unpaused DAGs due soon, with the queues of their latest run
    assert set(by_dag) == {"hourly_report", "never_ran"}
    assert by_dag["hourly_report"].queues == frozenset({"default"})
    assert by_dag["never_ran"].queues == frozenset()


def test_full_evaluation_with_real_database_and_redis(
    airflow_db: PostgresDatabase, redis_database: RedisDatabase
) -> None:
    # GIVEN the seeded database, 4 messages waiting in the real broker for "heavy",
    # and worker services at zero, except "default" with 3 workers idle for an hour
    client = redis_database.client()
    client.flushdb()
    client.lpush(kombu_queue_keys("heavy")[0], *[f"m{i}" for i in range(4)])
    queues = (
        QueueScaling("default", "w-default", 16, 0, 4, idle_seconds=600, prewarm_seconds=300),
        QueueScaling("etl", "w-etl", 8, 0, 10, idle_seconds=600),
        QueueScaling("heavy", "w-heavy", 2, 0, 4, idle_seconds=600),
    )
    services = InMemoryWorkerServices(
        {"w-default": ServiceCounts(3, 3), "w-etl": ServiceCounts(0, 0), "w-heavy": ServiceCounts(0, 0)}
    )
    memory = InMemoryStore()
    idle = [f"worker-d{i}@h" for i in range(3)]
    memory.values["w-default"] = ScaleMemory(dict.fromkeys(idle, NOW - timedelta(hours=1)))
    ports = ScalingPorts(
        demand=PgDemandReader.from_dsn(airflow_db.dsn),
        broker=RedisQueueDepth.from_url(redis_database.url),
        services=services,
        memory=memory,
        hibernation=FixedFlag(False),
        publisher=RecordingPublisher(),
        control=InMemoryWorkerControl(dict.fromkeys(idle, 0), dict.fromkeys(idle, "default")),
    )
    # WHEN the autoscaler evaluates at 06:00
    run = evaluate(queues, ports, NOW)
    decisions = {o.decision.queue: o.decision for o in run.outcomes}
    # THEN etl (7 queued + 2 running at concurrency 8) gets 2 workers, heavy (4 running +
    # max(2 queued, 4 waiting) = 8 at concurrency 2) gets 4,
    # and default holds 3: 2 queued there, so no scale-down while anything is queued
    assert run.errors == ()
    assert (decisions["etl"].action, decisions["etl"].target) == (Action.SCALE_UP, 2)
    assert (decisions["heavy"].action, decisions["heavy"].target) == (Action.SCALE_UP, 4)
    assert (decisions["default"].action, decisions["default"].target) == (Action.HOLD, 3)
    assert sorted(services.calls) == [("w-etl", 2), ("w-heavy", 4)]


def test_database_down_is_reported_and_never_scales_down(redis_database: RedisDatabase) -> None:
    # GIVEN a metadata database that cannot be reached and an idle default queue with 3 workers
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    services = InMemoryWorkerServices({"w-default": ServiceCounts(3, 3)})
    memory = InMemoryStore()
    idle = [f"worker-d{i}@h" for i in range(3)]
    memory.values["w-default"] = ScaleMemory(dict.fromkeys(idle, NOW - timedelta(hours=1)))
    redis_database.client().flushdb()
    ports = ScalingPorts(
        demand=PgDemandReader.from_dsn(f"postgresql://postgres@127.0.0.1:{port}/airflow"),
        broker=RedisQueueDepth.from_url(redis_database.url),
        services=services,
        memory=memory,
        hibernation=FixedFlag(False),
        publisher=RecordingPublisher(),
        control=InMemoryWorkerControl(dict.fromkeys(idle, 0)),
    )
    # WHEN the autoscaler evaluates
    run = evaluate((QueueScaling("default", "w-default", 16, 0, 4, idle_seconds=600),), ports, NOW)
    # THEN it holds and reports the database error
    assert run.outcomes[0].decision.action is Action.HOLD
    assert services.calls == []
    assert any("metadata database" in e for e in run.errors)


def _afctl_scale(db: PostgresDatabase, redis_db: RedisDatabase, *extra: str) -> Result:
    """`afctl scale` on the seeded database and an empty broker, etl at 0 workers."""
    redis_db.client().flushdb()
    queues = '[{"queue": "etl", "service": "w-etl", "concurrency": 8, "max": 10}]'
    return CliRunner().invoke(
        cli,
        ["scale", *extra, "--db-url", db.dsn, "--broker-url", redis_db.url,
         "--queues", queues, "--current", "etl=0", "--at", "2026-01-05T06:00:00+00:00"],
    )  # fmt: skip


def test_afctl_scale_dry_run_prints_decisions_with_reasons(
    airflow_db: PostgresDatabase, redis_database: RedisDatabase
) -> None:
    # GIVEN the seeded database and an empty broker
    # WHEN an operator dry-runs the policy with etl at 0 workers
    result = _afctl_scale(airflow_db, redis_database, "--dry-run")
    # THEN it prints the decision and why, and says nothing was changed
    assert result.exit_code == 0, result.output
    assert "etl (w-etl): scale_up 0 -> 2" in result.output
    assert "why: demand 9" in result.output
    assert "dry run: nothing was changed" in result.output


def test_afctl_scale_json_gives_the_lambdas_result_shape(
    airflow_db: PostgresDatabase, redis_database: RedisDatabase
) -> None:
    # GIVEN the same seeded database, broker and queue map as the printed dry run
    # WHEN it is asked as JSON
    result = _afctl_scale(airflow_db, redis_database, "--json")
    # THEN it is one JSON document in the autoscaler Lambda's result shape, the same decision
    assert result.exit_code == 0, result.output
    run = json.loads(result.output)
    assert set(run) == {"dryRun", "hibernated", "decisions", "errors"}
    assert run["dryRun"] is True
    assert run["errors"] == []
    (decision,) = run["decisions"]
    assert {k: decision[k] for k in ("queue", "service", "action", "from", "to", "applied")} == {
        "queue": "etl",
        "service": "w-etl",
        "action": "scale_up",
        "from": 0,
        "to": 2,
        "applied": False,
    }
    assert decision["reason"].startswith("demand 9")
