"""Demand from the Airflow metadata database: task instances per queue, and DAG runs due soon.

One grouped query over ``task_instance`` filtered on ``state IN ('queued', 'running')``: it
is served by the ``ti_state`` index (``btree(state)``) that ``airflow db migrate`` creates
(checked against Airflow 3.3.2: ti_state, ti_pool (pool, state, priority_weight), ti_dag_state
(dag_id, state), ...; there is no index on ``queue``), so its cost follows the few live rows,
not the size of the table. The pre-warm query uses ``idx_next_dagrun_create_after`` on ``dag``
and ``ti_dag_run`` (dag_id, run_id) for the queues of each due DAG's latest run.

The session is read-only with a statement timeout, so a slow database fails the read (and the
scaler holds) instead of hanging the Lambda. Use a read-only database role in production.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from airflow_control_plane.errors import TransientError
from airflow_control_plane.metadata_db import connection_kwargs, connector
from airflow_control_plane.scaling.config import QueueScaling

STATEMENT_TIMEOUT_MS = 5000
# A DAG run whose creation time passed more than this long ago is not "about to start": the
# scheduler is late or stopped, and pre-warming for it would keep a worker up forever.
DUE_GRACE = timedelta(minutes=5)

# Only what Celery workers run: a task instance that names another executor (Airflow's
# multiple executors, e.g. executor="AwsEcsExecutor" runs in its own Fargate task) keeps its
# queue but never reaches a worker, so it must not start one. NULL means the default executor,
# which is Celery (first in AIRFLOW__CORE__EXECUTOR). Hibernate's drain counts every executor.
CELERY_ONLY = "(executor IS NULL OR executor = '' OR executor LIKE '%CeleryExecutor')"

TASK_COUNTS_SQL = f"""
SELECT COALESCE(queue, ''), state, count(*)
FROM task_instance
WHERE state IN ('queued', 'running') AND {CELERY_ONLY}
GROUP BY 1, 2
"""  # noqa: S608 - a constant, no input

DUE_DAGS_SQL = """
SELECT dag_id, next_dagrun_create_after
FROM dag
WHERE next_dagrun_create_after BETWEEN :since AND :until
  AND NOT is_paused AND NOT is_stale
ORDER BY next_dagrun_create_after
LIMIT 500
"""

LAST_RUN_QUEUES_SQL = """
SELECT DISTINCT last.dag_id, COALESCE(ti.queue, '')
FROM (
    SELECT DISTINCT ON (dag_id) dag_id, run_id
    FROM dag_run
    WHERE dag_id = ANY(CAST(:dag_ids AS varchar[]))
    ORDER BY dag_id, run_after DESC
) AS last
JOIN task_instance AS ti ON ti.dag_id = last.dag_id AND ti.run_id = last.run_id
WHERE ti.executor IS NULL OR ti.executor = '' OR ti.executor LIKE '%CeleryExecutor'
"""


@dataclass(frozen=True)
class TaskCounts:
    queued: int = 0
    running: int = 0


@dataclass(frozen=True)
class DueDagRun:
    """A DAG whose next run the scheduler will create at ``due_at``, and the queues its
    latest run used (empty if it never ran)."""

    dag_id: str
    due_at: datetime
    queues: frozenset[str]


class DemandReader(Protocol):
    """Port: the metadata database as the autoscaler sees it."""

    def task_counts(self) -> Mapping[str, TaskCounts]:
        """Queued and running task instances per queue (queues with none are absent)."""
        ...

    def due_dag_runs(self, now: datetime, horizon: timedelta) -> list[DueDagRun]:
        """DAG runs due between ``now - DUE_GRACE`` and ``now + horizon``."""
        ...


def prewarm_demand(
    due: Iterable[DueDagRun], scaling: QueueScaling, now: datetime, *, default_queue: str = "default"
) -> int:
    """How many due DAG runs will want this queue within its pre-warm lead time (pure)."""
    if scaling.prewarm_seconds <= 0:
        return 0
    until = now + timedelta(seconds=scaling.prewarm_seconds)
    count = 0
    for run in due:
        queues = run.queues or frozenset({default_queue})
        if run.due_at <= until and scaling.queue in queues:
            count += 1
    return count


class PgDemandReader:
    """The pg8000 implementation (pure Python, so it fits the Lambda layer)."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect

    @classmethod
    def from_dsn(cls, dsn: str) -> PgDemandReader:
        connection_kwargs(dsn)  # a malformed DSN is a ConfigError now, not at the first read
        return cls(connector(lambda: dsn))

    def _query(self, sql: str, **params: Any) -> list[list[Any]]:
        try:
            conn = self._connect()
        except Exception as exc:
            raise TransientError(f"metadata database unreachable: {exc}") from exc
        try:
            conn.run(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
            conn.run("SET default_transaction_read_only = on")
            rows = conn.run(sql, **params)
            return [list(row) for row in rows or []]
        except Exception as exc:
            raise TransientError(f"metadata database query failed: {exc}") from exc
        finally:
            # Closing a broken connection may fail; the read has already succeeded or failed.
            with contextlib.suppress(Exception):
                conn.close()

    def task_counts(self) -> dict[str, TaskCounts]:
        counts: dict[str, TaskCounts] = {}
        for queue, state, count in self._query(TASK_COUNTS_SQL):
            current = counts.get(queue, TaskCounts())
            if state == "queued":
                current = TaskCounts(queued=current.queued + int(count), running=current.running)
            else:
                current = TaskCounts(queued=current.queued, running=current.running + int(count))
            counts[queue] = current
        return counts

    def due_dag_runs(self, now: datetime, horizon: timedelta) -> list[DueDagRun]:
        due_rows = self._query(DUE_DAGS_SQL, since=now - DUE_GRACE, until=now + horizon)
        if not due_rows:
            return []
        dag_ids = [row[0] for row in due_rows]
        queues: dict[str, set[str]] = {dag_id: set() for dag_id in dag_ids}
        for dag_id, queue in self._query(LAST_RUN_QUEUES_SQL, dag_ids=dag_ids):
            queues[dag_id].add(queue)
        return [DueDagRun(dag_id, due_at, frozenset(queues[dag_id])) for dag_id, due_at in due_rows]
