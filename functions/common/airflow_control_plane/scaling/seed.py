"""Seed a real Airflow metadata schema with DAGs, runs and task instances (bench and tests).

The schema itself comes from ``airflow db migrate`` (see :func:`migrate_schema`); the rows are
plain SQL over the columns Airflow 3.3 requires, so the demand queries run against exactly
what a production database holds. Only for test and benchmark databases.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow_control_plane.errors import ControlPlaneError

# Task instance states Airflow 3 uses; the demand query must count only queued and running.
ALL_STATES: tuple[str, ...] = (
    "success",
    "failed",
    "skipped",
    "upstream_failed",
    "up_for_retry",
    "up_for_reschedule",
    "removed",
    "scheduled",
    "deferred",
    "restarting",
    "queued",
    "running",
)


def migrate_schema(airflow: Path, sqlalchemy_url: str, airflow_home: Path, *, timeout: float = 300) -> None:
    """Create the real Airflow schema with ``airflow db migrate``."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlalchemy_url,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    result = subprocess.run(
        [str(airflow), "db", "migrate"], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise ControlPlaneError(f"airflow db migrate failed ({result.returncode}): {result.stderr[-2000:]}")


def seed_bundle_and_dags(
    conn: Any,
    dag_ids: Sequence[str],
    *,
    paused: Sequence[str] = (),
    next_due: Mapping[str, datetime] | None = None,
) -> None:
    """DAG rows (and their bundle); ``next_due`` sets ``next_dagrun_create_after``."""
    conn.run("INSERT INTO dag_bundle (name, active) VALUES ('seed', true) ON CONFLICT DO NOTHING")
    due = next_due or {}
    for dag_id in dag_ids:
        conn.run(
            "INSERT INTO dag (dag_id, is_paused, is_stale, bundle_name, timetable_type,"
            " partition_mapper_info, max_active_tasks, max_consecutive_failed_dag_runs,"
            " has_task_concurrency_limits, next_dagrun_create_after)"
            " VALUES (:dag_id, :paused, false, 'seed', 'cron', '{}', 16, 0, false, :due)",
            dag_id=dag_id,
            paused=dag_id in paused,
            due=due.get(dag_id),
        )


def seed_run(conn: Any, dag_id: str, run_id: str, run_after: datetime) -> None:
    conn.run(
        "INSERT INTO dag_run (dag_id, run_id, run_type, run_after, logical_date, state)"
        " VALUES (:dag_id, :run_id, 'scheduled', :run_after, :run_after, 'running')",
        dag_id=dag_id,
        run_id=run_id,
        run_after=run_after,
    )


@dataclass(frozen=True)
class SeedTask:
    dag_id: str
    run_id: str
    task_id: str
    state: str | None
    queue: str | None


def seed_task_instances(conn: Any, tasks: Sequence[SeedTask]) -> None:
    for task in tasks:
        conn.run(
            "INSERT INTO task_instance (id, dag_id, run_id, task_id, map_index, state, queue, try_number,"
            " pool, pool_slots) VALUES (gen_random_uuid(), :dag_id, :run_id, :task_id, -1, :state, :queue,"
            " 1, 'default_pool', 1)",
            dag_id=task.dag_id,
            run_id=task.run_id,
            task_id=task.task_id,
            state=task.state,
            queue=task.queue,
        )


def seed_bulk(conn: Any, *, rows: int, queues: Sequence[str], live_per_queue: int = 100) -> None:
    """``rows`` task instances over 50 DAGs x N runs x 50 tasks, mostly finished, with
    ``live_per_queue`` queued and as many running per queue (set-based SQL: ~1 M rows in tens of
    seconds)."""
    dags = 50
    tasks_per_run = 50
    runs = max(1, rows // (dags * tasks_per_run))
    seed_bundle_and_dags(conn, [f"bench_{d}" for d in range(dags)])
    conn.run(
        "INSERT INTO dag_run (dag_id, run_id, run_type, run_after, logical_date, state)"
        " SELECT 'bench_' || d, 'run_' || r, 'scheduled', ts, ts, 'success'"
        " FROM generate_series(0, :dags - 1) AS d, generate_series(0, :runs - 1) AS r,"
        " LATERAL (SELECT timestamptz '2025-01-01' + r * interval '1 hour') AS t(ts)",
        dags=dags,
        runs=runs,
    )
    finished = (
        ["success"] * 90 + ["failed"] * 3 + ["skipped"] * 4 + ["upstream_failed", "removed", "up_for_retry"]
    )
    conn.run(
        "INSERT INTO task_instance (id, dag_id, run_id, task_id, map_index, state, queue, try_number, pool,"
        " pool_slots)"
        " SELECT gen_random_uuid(), 'bench_' || d, 'run_' || r, 'task_' || t, -1,"
        " (CAST(:finished AS varchar[]))[1 + (d * 7 + r * 13 + t) % 100],"
        " (CAST(:queues AS varchar[]))[1 + (d + t) % :nq], 1, 'default_pool', 1"
        " FROM generate_series(0, :dags - 1) AS d, generate_series(0, :runs - 1) AS r,"
        " generate_series(0, :tpr - 1) AS t",
        finished=finished,
        queues=list(queues),
        nq=len(queues),
        dags=dags,
        runs=runs,
        tpr=tasks_per_run,
    )
    # The live rows: the latest runs' tasks become queued or running, per queue.
    for queue in queues if live_per_queue > 0 else ():
        for state in ("queued", "running"):
            conn.run(
                "UPDATE task_instance SET state = :state WHERE id IN ("
                " SELECT id FROM task_instance WHERE queue = :queue AND state = 'success'"
                " ORDER BY run_id DESC LIMIT :n)",
                state=state,
                queue=queue,
                n=live_per_queue,
            )
    conn.run("ANALYZE task_instance")
    conn.run("ANALYZE dag_run")
    conn.run("ANALYZE dag")
