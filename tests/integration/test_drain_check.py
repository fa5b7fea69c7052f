"""The drain step against a real Airflow schema in a real PostgreSQL.

A fixture runs the runtime's own ``airflow db migrate`` on a fresh database, so the query
meets the exact task_instance table Airflow 3.3 creates. Task instances are inserted with
foreign-key triggers off for the inserting session (no DAG runs needed to count states).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import boto3
import pg8000.native
import pytest
from moto import mock_aws

from airflow_control_plane.bringup.drain import ActiveTaskInstances, PostgresTaskInstanceCounter, decide_drain
from airflow_control_plane.errors import TransientError
from tests.conftest import PostgresDatabase, function_app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def airflow_db(migrated_database_factory: Callable[[str], PostgresDatabase]) -> PostgresDatabase:
    """A fresh database holding the schema of the real ``airflow db migrate``."""
    return migrated_database_factory("drain")


@pytest.fixture
def task_instances(airflow_db: PostgresDatabase) -> Iterator[Any]:
    """Insert task instances in given states; delete them afterwards."""
    connection = airflow_db.connect()
    connection.run("SET session_replication_role = replica")  # FK triggers off for this session only

    def insert(*states: str | None) -> None:
        for state in states:
            connection.run(
                "INSERT INTO task_instance"
                " (id, task_id, dag_id, run_id, try_number, pool, pool_slots, state) "
                "VALUES (CAST(:id AS uuid), :task, 'drain_dag', 'manual__1', 1, 'default_pool', 1, :state)",
                id=str(uuid.uuid4()),
                task=f"t_{uuid.uuid4().hex[:8]}",
                state=state,
            )

    yield insert
    connection.run("DELETE FROM task_instance WHERE dag_id = 'drain_dag'")
    connection.close()


def test_counts_running_and_queued_only(airflow_db: PostgresDatabase, task_instances: Any) -> None:
    # GIVEN task instances in many states, two running and three queued
    task_instances("running", "running", "queued", "queued", "queued", "success", "failed", "scheduled", None)
    counter = PostgresTaskInstanceCounter(airflow_db.connect)
    # WHEN counted THEN only running and queued count
    assert counter.count_active() == ActiveTaskInstances(running=2, queued=3)


def test_tasks_of_the_ecs_executor_keep_hibernate_waiting(
    airflow_db: PostgresDatabase, task_instances: Any
) -> None:
    # GIVEN one task instance running in its own Fargate task (AwsEcsExecutor) and one queued for it
    task_instances("running", "queued")
    connection = airflow_db.connect()
    try:
        connection.run("UPDATE task_instance SET executor = 'AwsEcsExecutor' WHERE dag_id = 'drain_dag'")
    finally:
        connection.close()
    # WHEN the drain step counts THEN they count like Celery's: hibernate waits for them
    counts = PostgresTaskInstanceCounter(airflow_db.connect).count_active()
    assert counts == ActiveTaskInstances(running=1, queued=1)
    assert decide_drain(counts, attempt=1, max_polls=5, force=False).action.value == "wait"


def test_an_idle_database_is_drained(airflow_db: PostgresDatabase, task_instances: Any) -> None:
    # GIVEN only finished task instances
    task_instances("success", "upstream_failed", "skipped")
    counts = PostgresTaskInstanceCounter(airflow_db.connect).count_active()
    # WHEN decided THEN hibernate proceeds
    assert counts == ActiveTaskInstances(0, 0)
    assert decide_drain(counts, attempt=1, max_polls=5, force=False).action.value == "proceed"


def test_an_unreachable_database_is_a_transient_error(airflow_db: PostgresDatabase) -> None:
    # GIVEN a database name that does not exist
    def connect() -> pg8000.native.Connection:
        return pg8000.native.Connection(
            user=airflow_db.user, host=airflow_db.host, port=airflow_db.port, database="acp_missing_db"
        )

    # WHEN counted THEN a TransientError (retried by the state machine), not a crash
    with pytest.raises(TransientError, match="cannot connect"):
        PostgresTaskInstanceCounter(connect).count_active()


def _drain_app() -> ModuleType:
    return function_app("drain_check", "lambda_app_drain_check", reuse=True)


def test_handler_end_to_end_with_secret_and_real_database(
    airflow_db: PostgresDatabase, task_instances: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN one queued task instance, and the database credentials in Secrets Manager (moto)
    task_instances("queued")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    with mock_aws():
        secret = boto3.client("secretsmanager").create_secret(
            Name="airflow/metadata-db",
            SecretString=json.dumps({"username": airflow_db.user, "password": "unused"}),
        )["ARN"]
        monkeypatch.setenv("DB_HOST", airflow_db.host)
        monkeypatch.setenv("DB_PORT", str(airflow_db.port))
        monkeypatch.setenv("DB_NAME", airflow_db.name)
        monkeypatch.setenv("DB_SECRET_ARN", secret)
        monkeypatch.setenv("DB_SSLMODE", "disable")  # the local server has ssl=off; AWS uses require

        class Context:
            function_name = "drain-check"
            memory_limit_in_mb = 256
            invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:drain-check"
            aws_request_id = "1"

        # WHEN the last of 2 polls is handled, not forced
        result = _drain_app().lambda_handler({"attempt": 2, "maxPolls": 2, "force": False}, Context())

    # THEN it refuses to stop the workers, saying why
    assert (result["action"], result["queued"], result["running"]) == ("timed_out", 1, 0)
    assert "set force" in result["reason"]
