"""`afctl bench-scaling` end to end on a small table (the full 1,000,000-row run is a command,
not a test: `afctl bench-scaling`)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from airflow_control_plane.cli import cli
from tests.conftest import PG_HOST, PG_PORT, PG_USER, AirflowRuntime, RedisDatabase

pytestmark = pytest.mark.integration


def test_bench_scaling_small(airflow_runtime: AirflowRuntime, redis_database: RedisDatabase) -> None:
    # GIVEN a real Airflow runtime, PostgreSQL and Redis
    args = [
        "bench-scaling",
        "--rows", "5000",
        "--repeats", "3",
        "--airflow", str(airflow_runtime.airflow),
        "--pg-url", f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres",
        "--broker-url", redis_database.url,
    ]  # fmt: skip
    # WHEN the benchmark runs on 5,000 rows
    result = CliRunner().invoke(cli, args)
    # THEN it migrates, seeds, measures and prints the simulation table, and cleans up its database
    assert result.exit_code == 0, result.output
    assert "seeded 5000 task instances" in result.output
    assert "ms per queue" in result.output
    assert "policy+wake" in result.output
