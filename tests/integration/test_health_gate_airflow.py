"""The health evaluation against a real Airflow api-server's /api/v2/monitor/health.

Only the api-server runs (on a migrated database): the metadatabase is healthy, the
scheduler is unhealthy and the triggerer and dag processor never ran. The gate must say
"not healthy" and name exactly those, proving the document shape assumed in health.py.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_control_plane.health import HttpHealthSource, NotHealthyYet, check_health, evaluate_health
from airflow_control_plane.poll import poll_until
from tests.conftest import AirflowRuntime, PostgresDatabase
from tests.harness import free_port

pytestmark = pytest.mark.integration

START_TIMEOUT_SECONDS = 120


def _airflow_env(db: PostgresDatabase, home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db.sqlalchemy_url,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
        "AIRFLOW__CORE__FERNET_KEY": "",
    }


def test_real_api_server_without_scheduler_is_not_healthy_naming_each_component(
    migrated_database_factory: Callable[[str], PostgresDatabase],
    airflow_runtime: AirflowRuntime,
    tmp_path: Path,
) -> None:
    # GIVEN a migrated database and a real api-server, nothing else running
    db = migrated_database_factory("health")
    env = _airflow_env(db, tmp_path)
    port = free_port()
    log = (tmp_path / "api-server.log").open("w")
    server = subprocess.Popen(
        [
            str(airflow_runtime.airflow),
            "api-server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    source = HttpHealthSource(f"http://127.0.0.1:{port}", timeout_seconds=5)
    try:
        # WHEN the gate polls until the api-server answers (bounded)
        def answer() -> object:
            assert server.poll() is None, (tmp_path / "api-server.log").read_text()[-3000:]
            try:
                return source.fetch()
            except NotHealthyYet:
                return None

        document = poll_until(answer, timeout_s=START_TIMEOUT_SECONDS, interval_s=1.0, what="the api-server")
        verdict = evaluate_health(document)
        # THEN not healthy: the database is fine; the scheduler is unhealthy; the others never ran
        assert verdict.healthy is False
        assert dict(verdict.components) == {
            "metadatabase": "healthy",
            "scheduler": "unhealthy",
            "dag_processor": "not started",
            "triggerer": "not started",
        }
        with pytest.raises(NotHealthyYet, match="scheduler is unhealthy"):
            check_health(source)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        log.close()
