"""The image entrypoint run for real: airflow_image/entrypoint.py with the Airflow of .venv
against a fresh PostgreSQL database (and Redis for the Celery worker).

Without Docker (tests/containers runs the built image), this runs the same script the
image's ENTRYPOINT runs, with .venv/bin first on PATH in place of the image's venv. One
`db-migrate` per module (module-scoped fixture): a migration costs seconds.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import AirflowRuntime, PostgresDatabase, RedisDatabase
from tests.harness import free_port, wait_for

pytestmark = pytest.mark.integration

ENTRYPOINT = Path(__file__).resolve().parents[2] / "airflow_image" / "entrypoint.py"
FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
# Unique per run, so finding it in any output cannot be a coincidence.
PASSWORD = f"Img-Test-{secrets.token_hex(12)}"
CLI_TIMEOUT_S = 240  # one Airflow CLI start costs ~5 s alone; generous for a shared, busy CPU
HEALTHY_WITHIN_S = 240
STOP_WITHIN_S = 90


@dataclass(frozen=True)
class AirflowEnv:
    runtime: AirflowRuntime
    db: PostgresDatabase
    home: Path
    env: dict[str, str]

    def with_(self, **extra: str) -> dict[str, str]:
        return {**self.env, **extra}


def run_entrypoint(
    runtime: AirflowRuntime, args: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(runtime.python), str(ENTRYPOINT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


@pytest.fixture(scope="module")
def airflow_env(
    airflow_runtime: AirflowRuntime,
    pg_database_factory: object,
    tmp_path_factory: pytest.TempPathFactory,
) -> AirflowEnv:
    assert callable(pg_database_factory)
    db = pg_database_factory("image")
    assert isinstance(db, PostgresDatabase)
    home = tmp_path_factory.mktemp("airflow_home")
    (home / "dags").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        PATH=f"{airflow_runtime.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=db.sqlalchemy_url,
        AIRFLOW__CORE__AUTH_MANAGER=FAB,
        AIRFLOW__CORE__FERNET_KEY=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        AIRFLOW__API__SECRET_KEY=secrets.token_hex(16),
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__API__WORKERS="1",
        # Log servers on ports of our own: other test runs share this machine.
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
        AIRFLOW_IMAGE_ROLE_FILE=str(home / "role"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return AirflowEnv(airflow_runtime, db, home, env)


@pytest.fixture(scope="module")
def migrated(airflow_env: AirflowEnv) -> AirflowEnv:
    result = run_entrypoint(airflow_env.runtime, ["db-migrate"], airflow_env.env)
    assert result.returncode == 0, result.stderr[-4000:]
    return airflow_env


def list_users(af: AirflowEnv) -> list[dict[str, object]]:
    out = subprocess.run(
        [str(af.runtime.airflow), "users", "list", "-o", "json"],
        env=af.env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=True,
    )
    # Airflow's log lines share stdout with the JSON; the JSON is the line that parses as a list.
    for line in out.stdout.splitlines():
        if line.startswith("[{") or line == "[]":
            users = json.loads(line)
            assert isinstance(users, list)
            return users
    raise AssertionError(f"no JSON user list in:\n{out.stdout[-2000:]}")


def password_matches(af: AirflowEnv, username: str, password: str) -> bool:
    """Check the stored hash with werkzeug (FAB's hasher) in the runtime; the password goes on stdin."""
    rows = af.db.connect().run("SELECT password FROM ab_user WHERE username = :u", u=username)
    assert len(rows) == 1
    probe = (
        "import sys, werkzeug.security as w; "
        "h, p = sys.stdin.read().split('\\n', 1); print(w.check_password_hash(h, p))"
    )
    out = subprocess.run(
        [str(af.runtime.python), "-c", probe],
        input=f"{rows[0][0]}\n{password}",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip() == "True"


# --- one-off jobs --------------------------------------------------------------------------------


def test_db_migrate_creates_the_airflow_and_fab_schema(migrated: AirflowEnv) -> None:
    # GIVEN the module's `entrypoint.py db-migrate` exited 0 (fixture)
    # WHEN we look into the database
    conn = migrated.db.connect()
    try:
        revisions = conn.run("SELECT version_num FROM alembic_version")
        tables = {r[0] for r in conn.run("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    finally:
        conn.close()
    # THEN Airflow's schema is stamped and the FAB tables that create-user needs exist
    assert len(revisions) == 1
    assert {"dag", "task_instance", "job", "ab_user", "ab_role"} <= tables


SECOND_PASSWORD = PASSWORD + "-second-run"


@dataclass(frozen=True)
class CreateRuns:
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def created_twice(migrated: AirflowEnv) -> CreateRuns:
    """create-user run twice for "admin"; the second run (a re-run bring-up) carries another password."""
    env = migrated.with_(AIRFLOW_ADMIN_PASSWORD=PASSWORD, AIRFLOW_ADMIN_USERNAME="admin")
    first = run_entrypoint(migrated.runtime, ["create-user"], env)
    second = run_entrypoint(
        migrated.runtime, ["create-user"], {**env, "AIRFLOW_ADMIN_PASSWORD": SECOND_PASSWORD}
    )
    return CreateRuns(first, second)


def test_create_user_twice_creates_one_user_and_never_shows_the_password(
    migrated: AirflowEnv, created_twice: CreateRuns
) -> None:
    # GIVEN a migrated database and the admin password injected as an environment variable
    # WHEN create-user ran twice (fixture)
    first, second = created_twice.first, created_twice.second
    # THEN both succeeded, the second found the user already there
    assert first.returncode == 0, first.stderr[-4000:]
    assert second.returncode == 0, second.stderr[-4000:]
    assert 'User "admin" created' in first.stdout
    assert "already exists" in second.stdout
    # AND there is exactly one admin, and it kept the first password (no reset was asked for)
    admins = [u for u in list_users(migrated) if u["username"] == "admin"]
    assert len(admins) == 1
    assert admins[0]["roles"] == ["Admin"]
    assert password_matches(migrated, "admin", PASSWORD)
    # AND no password is in any output, nor in Airflow's audit log of the command lines
    for result in (first, second):
        assert PASSWORD not in result.stdout + result.stderr  # PASSWORD prefixes SECOND_PASSWORD
    conn = migrated.db.connect()
    try:
        audit = conn.run("SELECT extra FROM log WHERE event = 'cli_users_create'")
    finally:
        conn.close()
    assert len(audit) == 2
    assert all(PASSWORD not in (row[0] or "") for row in audit)


def test_create_user_resets_the_existing_password_when_asked(
    migrated: AirflowEnv, created_twice: CreateRuns
) -> None:
    # GIVEN the existing admin (fixture) and a rotated secret
    assert created_twice.first.returncode == 0, created_twice.first.stderr[-4000:]
    rotated = PASSWORD + "-rotated"
    env = migrated.with_(
        AIRFLOW_ADMIN_USERNAME="admin", AIRFLOW_ADMIN_PASSWORD=rotated, AIRFLOW_ADMIN_RESET_PASSWORD="true"
    )
    # WHEN create-user runs with AIRFLOW_ADMIN_RESET_PASSWORD=true
    reset = run_entrypoint(migrated.runtime, ["create-user"], env)
    # THEN the stored password is the rotated one, and it was not printed
    assert reset.returncode == 0, reset.stderr[-4000:]
    assert "password reset successfully" in reset.stdout
    assert password_matches(migrated, "admin", rotated)
    assert PASSWORD not in reset.stdout + reset.stderr
    assert len([u for u in list_users(migrated) if u["username"] == "admin"]) == 1


def test_db_migrate_against_an_unreachable_database_fails_clearly(airflow_env: AirflowEnv) -> None:
    # GIVEN a database URL pointing at a port nobody listens on
    bad = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/nowhere"
    # WHEN db-migrate runs
    result = run_entrypoint(
        airflow_env.runtime, ["db-migrate"], airflow_env.with_(AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=bad)
    )
    # THEN it fails non-zero, saying which step failed and why
    assert result.returncode != 0
    assert "entrypoint: db-migrate: failed: `airflow db migrate` exited with code" in result.stderr
    assert "Connection refused" in result.stderr or "could not connect" in result.stderr


def test_a_malformed_database_url_is_refused_before_anything_runs(airflow_env: AirflowEnv) -> None:
    # GIVEN a database setting that is not a URL (and carries a password)
    env = airflow_env.with_(AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgres:s3cr3t-value@db/airflow")
    # WHEN db-migrate runs THEN it exits 2 at once, naming the variable but not the value
    result = run_entrypoint(airflow_env.runtime, ["db-migrate"], env)
    assert result.returncode == 2
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN is not a database URL" in result.stderr
    assert "s3cr3t-value" not in result.stdout + result.stderr
    assert "running:" not in result.stderr


def test_a_long_running_role_does_not_start_on_an_unmigrated_database(
    airflow_env: AirflowEnv, pg_database_factory: object
) -> None:
    # GIVEN an empty database and a short migration wait
    assert callable(pg_database_factory)
    empty = pg_database_factory("image_empty")
    assert isinstance(empty, PostgresDatabase)
    env = airflow_env.with_(
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=empty.sqlalchemy_url,
        AIRFLOW_MIGRATION_WAIT_TIMEOUT="1",
        AIRFLOW_IMAGE_ROLE_FILE=str(airflow_env.home / "role-unmigrated"),
    )
    # WHEN a scheduler container starts
    result = run_entrypoint(airflow_env.runtime, ["scheduler"], env)
    # THEN it stops at the migration check and never becomes a scheduler
    assert result.returncode != 0
    assert "`airflow db check-migrations --migration-wait-timeout 1` exited with code" in result.stderr
    assert "exec:" not in result.stderr


# --- long-running roles -----------------------------------------------------------------------------


@dataclass
class Started:
    process: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self) -> str:
        return self.text()[-4000:]


@pytest.fixture
def start_role(migrated: AirflowEnv, tmp_path: Path) -> Iterator[object]:
    """Start `entrypoint.py <role>` in its own process group; stop the whole group afterwards."""
    started: list[Started] = []

    def start(args: list[str], env: dict[str, str]) -> Started:
        log = tmp_path / f"{args[0]}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [str(migrated.runtime.python), str(ENTRYPOINT), *args],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(Started(process, log))
        return started[-1]

    yield start

    for item in started:
        if item.process.poll() is None:
            os.killpg(item.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                item.process.wait(timeout=STOP_WITHIN_S)
        with contextlib.suppress(ProcessLookupError):  # anything left in the group
            os.killpg(item.process.pid, signal.SIGKILL)
        item.process.wait(timeout=30)


def wait_healthy(af: AirflowEnv, started: Started, args: list[str], env: dict[str, str]) -> None:
    def healthy() -> bool:
        assert started.process.poll() is None, f"the component exited early:\n{started.tail()}"
        result = run_entrypoint(af.runtime, ["healthcheck", *args], env)
        assert result.returncode in (0, 1), result.stderr  # Docker reserves 2
        return result.returncode == 0

    wait_for(healthy, HEALTHY_WITHIN_S, "the component to be healthy", interval_s=2.0, context=started.tail)


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def stop(started: Started) -> int:
    started.process.send_signal(signal.SIGTERM)
    return started.process.wait(timeout=STOP_WITHIN_S)


def test_scheduler_waits_for_migrations_becomes_the_scheduler_and_reports_healthy(
    migrated: AirflowEnv, start_role: object
) -> None:
    assert callable(start_role)
    env = migrated.with_(AIRFLOW_IMAGE_ROLE_FILE=str(migrated.home / "role-scheduler"))
    # GIVEN a migrated database WHEN a scheduler container starts
    started = start_role(["scheduler"], env)
    # THEN the image health check (no role: the recorded one) turns healthy
    wait_healthy(migrated, started, [], env)
    assert (migrated.home / "role-scheduler").read_text().strip() == "scheduler"
    # AND the entrypoint's process is now the scheduler itself (exec, not a child)
    assert "scheduler" in cmdline(started.process.pid)
    assert "entrypoint.py" not in cmdline(started.process.pid)
    assert "exec: airflow scheduler" in started.text()
    # AND SIGTERM to that process stops the scheduler
    stop(started)


def test_api_server_health_endpoint_is_checked_on_its_own_port(
    migrated: AirflowEnv, start_role: object
) -> None:
    assert callable(start_role)
    port = free_port()
    env = migrated.with_(
        AIRFLOW__API__PORT=str(port), AIRFLOW_IMAGE_ROLE_FILE=str(migrated.home / "role-api")
    )
    # GIVEN nothing listens on the port yet THEN the health check says unhealthy (1)
    assert run_entrypoint(migrated.runtime, ["healthcheck", "api-server"], env).returncode == 1
    # WHEN an api-server container starts on that port
    started = start_role(["api-server"], env)
    # THEN GET /api/v2/monitor/health answers 200 through `healthcheck api-server`
    wait_healthy(migrated, started, ["api-server"], env)
    assert "exec: airflow api-server" in started.text()
    stop(started)


def test_celery_worker_serves_its_queue_answers_pings_and_stops_warm(
    migrated: AirflowEnv, start_role: object, redis_database: RedisDatabase
) -> None:
    assert callable(start_role)
    queue = f"acp_image_{secrets.token_hex(4)}"
    # (a worker holds no database URL or signing key: the entrypoint refuses them)
    forbidden = (
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
    )
    env = {k: v for k, v in migrated.env.items() if k not in forbidden}
    env.update(
        AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
        AIRFLOW__CELERY__BROKER_URL=redis_database.url,
        AIRFLOW__CELERY__RESULT_BACKEND=redis_database.url,
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{free_port()}/execution/",
        AIRFLOW__CELERY__WORKER_CONCURRENCY="1",
        AIRFLOW_IMAGE_ROLE_FILE=str(migrated.home / "role-worker"),
        DUMB_INIT_SETSID="0",
    )
    # GIVEN a migrated database and a Redis broker WHEN a worker container starts on one queue
    started = start_role(["celery-worker", "--queues", queue], env)
    # THEN it answers `celery inspect ping` as celery@<this host>
    wait_healthy(migrated, started, ["celery-worker"], env)
    log = started.text()
    assert f"exec: airflow celery worker --queues {queue}" in log
    assert "warning: DUMB_INIT_SETSID" not in log
    # AND SIGTERM to the worker's main process is a warm shutdown: it exits cleanly
    assert stop(started) == 0
