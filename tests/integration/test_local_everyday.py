"""The everyday commands against a real state folder, PostgreSQL, Redis and the runtime's
`afctl` process: `logs`, `run`, `reset`, `parse`. No Airflow service is started (the
environment's first bring-up step prepares the state); `restart` is tested in
test_local_runtime.py against running services.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pg8000.native
import pytest

from airflow_control_plane.local import lease
from airflow_control_plane.local.bringup import BringUp
from airflow_control_plane.local.settings import LocalSettings
from tests.conftest import PG_HOST, PG_PORT, PG_USER, AirflowRuntime, PostgresDatabase, RedisDatabase
from tests.harness import folder_env, run_afctl, validate_input

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_lease_left")]


def _afctl(
    runtime: AirflowRuntime, env: dict[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return run_afctl(runtime.afctl, env, *args, timeout=180, stdin=stdin)


def _database_exists(name: str) -> bool:
    conn = pg8000.native.Connection(user=PG_USER, host=PG_HOST, port=PG_PORT, database="postgres")
    try:
        return bool(conn.run("SELECT 1 FROM pg_database WHERE datname = :n", n=name))
    finally:
        conn.close()


@pytest.fixture
def prepared(
    tmp_path: Path,
    pg_database_factory: Callable[[str], PostgresDatabase],
    redis_database: RedisDatabase,
) -> tuple[dict[str, str], PostgresDatabase]:
    database = pg_database_factory("every")
    env = folder_env(tmp_path / "state", AFCTL_DATABASE_URL=database.dsn, AFCTL_REDIS_URL=redis_database.url)
    validate_input(env)
    return env, database


def test_logs_prints_one_services_files_prefixed_and_names_the_known_ones(
    airflow_runtime: AirflowRuntime, prepared: tuple[dict[str, str], PostgresDatabase]
) -> None:
    env, _db = prepared
    logs = Path(env["AFCTL_STATE_DIR"]) / "logs"
    (logs / "scheduler-0.log").write_text("one\ntwo\nthree\n")
    (logs / "worker-0.log").write_text("w\n")
    # WHEN one service's last two lines are asked
    out = _afctl(airflow_runtime, env, "logs", "scheduler", "-n", "2")
    # THEN only its lines come, prefixed by the process's file
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["scheduler-0 | two", "scheduler-0 | three"]
    # AND an unknown service is refused, naming the known ones
    bad = _afctl(airflow_runtime, env, "logs", "schedulr")
    assert bad.returncode == 2
    assert "scheduler" in bad.stderr
    assert "worker" in bad.stderr


def test_run_gives_the_airflow_cli_this_environments_configuration(
    airflow_runtime: AirflowRuntime, prepared: tuple[dict[str, str], PostgresDatabase]
) -> None:
    env, database = prepared
    # WHEN the Airflow CLI asks for its metadata connection through `afctl run`
    out = _afctl(
        airflow_runtime, env, "run", "--", "airflow", "config", "get-value", "database", "sql_alchemy_conn"
    )
    # THEN it is this environment's database, and the exit code is the command's
    assert out.returncode == 0, out.stdout + out.stderr
    assert database.name in out.stdout
    failing = _afctl(airflow_runtime, env, "run", "--", "sh", "-c", "exit 7")
    assert failing.returncode == 7


def test_reset_asks_then_drops_what_is_leased_and_the_state_folder(
    airflow_runtime: AirflowRuntime, prepared: tuple[dict[str, str], PostgresDatabase], tmp_path: Path
) -> None:
    env, database = prepared
    state = Path(env["AFCTL_STATE_DIR"])
    # GIVEN a second state folder that joined the same database on purpose
    joiner = folder_env(tmp_path / "joiner", AFCTL_DATABASE_URL=env["AFCTL_DATABASE_URL"],
                  AFCTL_REDIS_URL=env["AFCTL_REDIS_URL"], AFCTL_JOIN="1")  # fmt: skip
    validate_input(joiner)
    # WHEN the joiner resets: THEN the owner's database is kept and named
    out = _afctl(airflow_runtime, joiner, "reset", "--yes")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"keep: database {database.name}: leased to the environment in {state.resolve()}" in out.stdout
    assert _database_exists(database.name)
    assert not (tmp_path / "joiner").exists()
    # WHEN the owner answers "no" to the confirmation: THEN nothing changes
    declined = _afctl(airflow_runtime, env, "reset", stdin="n\n")
    assert declined.returncode == 1
    assert _database_exists(database.name)
    assert state.exists()
    # WHEN the owner confirms: THEN its database, Redis lease and state folder are gone
    done = _afctl(airflow_runtime, env, "reset", stdin="y\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not _database_exists(database.name)
    assert not state.exists()
    assert lease.read_redis_lease(lease.RedisTarget.parse(env["AFCTL_REDIS_URL"])) is None


def test_parse_reports_a_broken_dag_with_file_and_line(
    airflow_runtime: AirflowRuntime, tmp_path: Path
) -> None:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "broken.py").write_text("import module_that_does_not_exist_here\n")
    out = _afctl(airflow_runtime, folder_env(tmp_path / "s"), "parse", str(folder))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "broken.py:1" in out.stdout


def test_up_applies_connections_variables_and_pools_from_the_settings_folder(
    airflow_runtime: AirflowRuntime,
    tmp_path: Path,
    migrated_database_factory: Callable[[str], PostgresDatabase],
    redis_database: RedisDatabase,
) -> None:
    # GIVEN a settings folder in Airflow's own import formats
    folder = tmp_path / "airflow_settings"
    folder.mkdir()
    (folder / "connections.json").write_text(
        json.dumps({"my_pg": {"conn_type": "postgres", "host": "db.example.org", "port": 5432}})
    )
    (folder / "variables.json").write_text(json.dumps({"greeting": "hello"}))
    (folder / "pools.json").write_text(
        json.dumps({"etl": {"slots": 3, "description": "etl", "include_deferred": False}})
    )
    database = migrated_database_factory("settings")
    env = folder_env(
        tmp_path / "state",
        AFCTL_DATABASE_URL=database.dsn,
        AFCTL_REDIS_URL=redis_database.url,
        AFCTL_SETTINGS_DIR=str(folder),
        AFCTL_JOIN="1",  # the cloned schema was made by the test, not by this state folder
        AFCTL_AIRFLOW_BIN=str(airflow_runtime.airflow),
    )
    # WHEN the bring-up's one-off steps run (no service is started)
    bringup = BringUp(LocalSettings.from_env(env), lambda _line: None, base_env=env)
    context, _ = bringup.validate_input()
    try:
        context, _ = bringup.migrate_database(context)
        context, note = bringup.create_admin_user(context)
    finally:
        context.jobs.close()
    # THEN the three files were applied and the step says so
    assert "applied connections.json, variables.json, pools.json" in note
    conn = database.connect()
    try:
        assert conn.run("SELECT host FROM connection WHERE conn_id = 'my_pg'") == [["db.example.org"]]
        assert conn.run("SELECT count(*) FROM variable WHERE key = 'greeting'") == [[1]]
        assert conn.run("SELECT slots FROM slot_pool WHERE pool = 'etl'") == [[3]]
    finally:
        conn.close()
