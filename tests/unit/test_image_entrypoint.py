"""plan() of the image entrypoint (airflow_image/entrypoint.py): every role, and bad input.

The entrypoint is a stand-alone script in the image (stdlib only), so it is loaded from its
path. Running it for real against Airflow is tests/integration/test_image_roles_airflow.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import load_module

pytestmark = pytest.mark.unit

ENTRYPOINT = Path(__file__).resolve().parents[2] / "airflow_image" / "entrypoint.py"
PASSWORD = "Correct-Horse-Battery-Staple-42"
FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
DB_URL = "postgresql+psycopg2://airflow@db.internal:5432/airflow"


ep = load_module(ENTRYPOINT, "airflow_image_entrypoint")


def base_env(**extra: str) -> dict[str, str]:
    env = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": DB_URL,
        "AIRFLOW__CELERY__BROKER_URL": "redis://broker:6379/0",
        "DUMB_INIT_SETSID": "0",
        "HOSTNAME": "ip-10-0-1-7",
    }
    env.update(extra)
    return env


EXECUTION_API = "http://api-server.airflow-dev.airflow.internal:8080/execution/"


def worker_env(**extra: str) -> dict[str, str]:
    """What the template gives a worker: the broker, a Redis result backend, the execution API."""
    env = {
        "AIRFLOW__CELERY__BROKER_URL": "rediss://:token@broker:6379/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": "rediss://:token@broker:6379/1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": EXECUTION_API,
        "DUMB_INIT_SETSID": "0",
        "HOSTNAME": "ip-10-0-1-7",
    }
    env.update(extra)
    return env


def user_env(**extra: str) -> dict[str, str]:
    return base_env(AIRFLOW__CORE__AUTH_MANAGER=FAB, AIRFLOW_ADMIN_PASSWORD=PASSWORD, **extra)


# --- long-running roles ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "argv"),
    [
        ("api-server", ("airflow", "api-server")),
        ("scheduler", ("airflow", "scheduler")),
        ("dag-processor", ("airflow", "dag-processor")),
        ("triggerer", ("airflow", "triggerer")),
    ],
)
def test_long_running_roles_wait_for_migrations_then_exec_airflow(role: str, argv: tuple[str, ...]) -> None:
    # GIVEN a configured database and no migration settings
    # WHEN the container starts with a long-running role
    p = ep.plan(role, [], base_env())
    # THEN it first waits for the schema (default 300 s), then becomes the Airflow process
    assert p.wait_for_migrations is True
    assert p.steps == (ep.Command(("airflow", "db", "check-migrations", "--migration-wait-timeout", "300")),)
    assert p.exec_argv == argv
    assert p.role_file == "/tmp/airflow-container-role"
    assert role in p.reason
    assert "300 s" in p.reason
    assert "AIRFLOW_ADMIN_PASSWORD" in p.env_unset


def test_migration_wait_timeout_comes_from_the_environment() -> None:
    # GIVEN a custom timeout
    p = ep.plan("scheduler", [], base_env(AIRFLOW_MIGRATION_WAIT_TIMEOUT="45"))
    # THEN the check uses it
    assert p.steps[0].argv[-2:] == ("--migration-wait-timeout", "45")


def test_waiting_for_migrations_can_be_turned_off() -> None:
    # GIVEN AIRFLOW_WAIT_FOR_MIGRATIONS=false
    p = ep.plan("triggerer", [], base_env(AIRFLOW_WAIT_FOR_MIGRATIONS="false"))
    # THEN nothing runs before the exec, and the reason says why
    assert p.wait_for_migrations is False
    assert p.steps == ()
    assert p.exec_argv == ("airflow", "triggerer")
    assert "AIRFLOW_WAIT_FOR_MIGRATIONS" in p.reason


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AIRFLOW_MIGRATION_WAIT_TIMEOUT", "-1"),
        ("AIRFLOW_MIGRATION_WAIT_TIMEOUT", "five"),
        ("AIRFLOW_WAIT_FOR_MIGRATIONS", "maybe"),
    ],
)
def test_bad_migration_settings_are_rejected(name: str, value: str) -> None:
    # GIVEN a malformed setting WHEN planning THEN a clear error names the variable
    with pytest.raises(ep.PlanError, match=name):
        ep.plan("scheduler", [], base_env(**{name: value}))


@pytest.mark.parametrize(
    "args",
    [["--queues", "default,heavy"], ["-q", "default,heavy"], ["--queues=default,heavy"]],
)
def test_celery_worker_serves_the_queues_given_on_the_command_line(args: list[str]) -> None:
    # GIVEN queues on the command line (overriding the environment)
    p = ep.plan("celery-worker", args, worker_env(AIRFLOW_WORKER_QUEUES="other"))
    # THEN the worker is started on them
    assert p.exec_argv == ("airflow", "celery", "worker", "--queues", "default,heavy")


def test_celery_worker_queues_can_come_from_the_environment() -> None:
    p = ep.plan("celery-worker", [], worker_env(AIRFLOW_WORKER_QUEUES="heavy"))
    assert p.exec_argv == ("airflow", "celery", "worker", "--queues", "heavy")


@pytest.mark.parametrize(
    "args",
    [
        ["--queues"],
        ["--queues", "a b"],
        ["--queues", "a,,b"],
        ["--queues", "a", "--concurrency", "4"],
        ["x"],
        ["--queues", "default\n"],
        ["--queues", "default\nheavy"],
    ],
)
def test_celery_worker_rejects_bad_arguments(args: list[str]) -> None:
    # GIVEN malformed worker arguments (a trailing newline included) WHEN planning THEN a clear
    # error, nothing planned
    with pytest.raises(ep.PlanError, match="queues"):
        ep.plan("celery-worker", args, worker_env())


def test_on_ecs_the_worker_is_named_after_its_task_so_the_scaler_can_drain_it() -> None:
    # GIVEN the ECS task id (read by main() from the task metadata endpoint)
    env = worker_env(ECS_TASK_ID="3f2a9c1b5e6d4a7b8c9d0e1f2a3b4c5d")
    # WHEN planning the worker and its health check
    worker = ep.plan("celery-worker", ["--queues", "etl"], env)
    (step,) = ep.plan("healthcheck", ["celery-worker"], env).steps
    # THEN the worker's Celery hostname carries the task id, and the health check pings that node
    assert worker.exec_argv is not None
    assert worker.exec_argv[-2:] == ("--celery-hostname", "worker-3f2a9c1b5e6d4a7b8c9d0e1f2a3b4c5d@%h")
    assert step == ep.CeleryPing(
        "worker-3f2a9c1b5e6d4a7b8c9d0e1f2a3b4c5d@ip-10-0-1-7", timeout_s=ep.HEALTHCHECK_TIMEOUT_S
    )
    with pytest.raises(ep.PlanError, match="ECS task id"):
        ep.plan("celery-worker", [], worker_env(ECS_TASK_ID="a b"))


def test_ecs_task_id_comes_from_the_task_metadata_endpoint() -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Metadata(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = json.dumps({"TaskARN": "arn:aws:ecs:us-east-1:123456789012:task/airflow/abc123"}).encode()
            self.send_response(200 if self.path == "/v4/x/task" else 404)
            self.end_headers()
            self.wfile.write(body)

    server = HTTPServer(("127.0.0.1", 0), Metadata)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        uri = f"http://127.0.0.1:{server.server_port}/v4/x"
        assert ep.ecs_task_id({"ECS_CONTAINER_METADATA_URI_V4": uri}) == "abc123"
        assert ep.ecs_task_id({}) is None
        assert ep.ecs_task_id({"ECS_CONTAINER_METADATA_URI_V4": uri + "/nope"}) is None
    finally:
        server.shutdown()


def test_celery_worker_warns_when_dumb_init_would_signal_the_whole_group() -> None:
    # GIVEN DUMB_INIT_SETSID is not 0 (SIGTERM would hit the task processes)
    env = worker_env()
    del env["DUMB_INIT_SETSID"]
    # WHEN planning a worker THEN the plan carries a warning; with 0 it does not
    assert any("DUMB_INIT_SETSID" in w for w in ep.plan("celery-worker", [], env).warnings)
    assert ep.plan("celery-worker", [], worker_env()).warnings == ()


def test_celery_worker_starts_without_a_database_and_pins_sqlite_to_an_unopenable_path() -> None:
    # GIVEN exactly the worker's environment: broker, Redis result backend, execution API
    p = ep.plan("celery-worker", ["--queues", "default"], worker_env())
    # THEN it does not wait for migrations (it cannot read the schema) and becomes the worker
    assert p.steps == ()
    assert p.wait_for_migrations is False
    assert p.exec_argv == ("airflow", "celery", "worker", "--queues", "default")
    assert EXECUTION_API in p.reason
    # AND Airflow's SQLite default is replaced by a file that can never be created
    assert dict(p.env_set) == {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": ep.WORKER_NO_DATABASE_URL}
    assert ep.WORKER_NO_DATABASE_URL.startswith("sqlite:////dev/null/")


@pytest.mark.parametrize(
    "name",
    [
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_SECRET",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
    ],
)
def test_celery_worker_refuses_to_start_with_a_control_secret(name: str) -> None:
    # GIVEN a worker environment that also carries a secret DAG code must not read
    env = worker_env(**{name: "s3cr3t-value-xyz"})
    # WHEN planning THEN it is refused, naming the variable but never its value
    with pytest.raises(ep.PlanError, match="must not carry") as caught:
        ep.plan("celery-worker", [], env)
    assert name in str(caught.value)
    assert "s3cr3t-value-xyz" not in str(caught.value)


def test_celery_worker_refuses_a_database_result_backend() -> None:
    env = worker_env(AIRFLOW__CELERY__RESULT_BACKEND="db+postgresql://airflow:pw@db/airflow")
    with pytest.raises(ep.PlanError, match="database result backend") as caught:
        ep.plan("celery-worker", [], env)
    assert "pw@db" not in str(caught.value)


RESULTS_URL = "db+postgresql://celery_results:pw-res-1a2b@db.internal:5432/celery_results?sslmode=require"


@pytest.mark.parametrize("driver", ["", "+psycopg", "+psycopg2"])
def test_celery_worker_takes_the_results_only_database_with_any_postgresql_driver(driver: str) -> None:
    url = RESULTS_URL.replace("db+postgresql://", f"db+postgresql{driver}://")
    env = worker_env(AIRFLOW__CELERY__RESULT_BACKEND=url, AIRFLOW_CELERY_RESULTS_DATABASE="celery_results")
    assert "results-only database 'celery_results'" in ep.plan("celery-worker", [], env).reason


def test_celery_worker_takes_the_results_only_database_as_its_result_backend() -> None:
    # GIVEN the SQS broker option: the result backend is the results-only database, named by
    # the template's marker variable
    env = worker_env(
        AIRFLOW__CELERY__RESULT_BACKEND=RESULTS_URL, AIRFLOW_CELERY_RESULTS_DATABASE="celery_results"
    )
    # WHEN planning the worker
    p = ep.plan("celery-worker", [], env)
    # THEN it starts, still without the metadata database, and says where results go
    assert p.exec_argv == ("airflow", "celery", "worker")
    assert dict(p.env_set)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == ep.WORKER_NO_DATABASE_URL
    assert "results-only database 'celery_results'" in p.reason
    assert "pw-res-1a2b" not in p.reason


@pytest.mark.parametrize(
    ("backend", "marker", "why"),
    [
        # the metadata database's URL, even with the marker set
        (
            "db+postgresql://airflow:pw-res-1a2b@db.internal:5432/airflow",
            "celery_results",
            "logs in as 'airflow'",
        ),
        # the results role pointed at the metadata database
        ("db+postgresql://celery_results:pw-res-1a2b@db/airflow", "celery_results", "to 'airflow'"),
        # the master user pointed at the results database
        ("db+postgresql://airflow:pw-res-1a2b@db/celery_results", "celery_results", "logs in as 'airflow'"),
        # a results database, but no marker: nothing says what it is
        (RESULTS_URL, "", "names no results-only database"),
        # another engine
        ("db+mysql://celery_results:pw-res-1a2b@db/celery_results", "celery_results", "not PostgreSQL"),
        (
            "db+postgresql://celery_results:pw-res-1a2b@db/celery_results",
            "Celery Results",
            "not a database name",
        ),
    ],
)
def test_celery_worker_refuses_any_other_database_result_backend(backend: str, marker: str, why: str) -> None:
    env = worker_env(AIRFLOW__CELERY__RESULT_BACKEND=backend, AIRFLOW_CELERY_RESULTS_DATABASE=marker)
    with pytest.raises(ep.PlanError, match="database result backend") as caught:
        ep.plan("celery-worker", [], env)
    assert why in str(caught.value)
    assert "pw-res-1a2b" not in str(caught.value)


def test_the_results_database_does_not_excuse_the_metadata_database_url() -> None:
    # GIVEN a worker with the results-only backend AND the metadata database URL
    env = worker_env(
        AIRFLOW__CELERY__RESULT_BACKEND=RESULTS_URL,
        AIRFLOW_CELERY_RESULTS_DATABASE="celery_results",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=DB_URL,
    )
    # THEN it is still refused for the database URL
    with pytest.raises(ep.PlanError, match="AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        ep.plan("celery-worker", [], env)


def test_celery_worker_needs_the_execution_api_url() -> None:
    env = worker_env()
    del env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
    with pytest.raises(ep.PlanError, match="AIRFLOW__CORE__EXECUTION_API_SERVER_URL"):
        ep.plan("celery-worker", [], env)


@pytest.mark.parametrize("role", ["api-server", "scheduler", "dag-processor", "triggerer", "db-migrate"])
def test_roles_without_arguments_reject_arguments(role: str) -> None:
    with pytest.raises(ep.PlanError, match="takes no arguments"):
        ep.plan(role, ["--port", "9000"], base_env())


# --- one-off jobs ---------------------------------------------------------------------------------


def test_db_migrate_runs_airflow_db_migrate_once_and_does_not_wait() -> None:
    p = ep.plan("db-migrate", [], base_env())
    assert p.steps == (ep.Command(("airflow", "db", "migrate")),)
    assert p.exec_argv is None
    assert p.wait_for_migrations is False
    assert "idempotent" in p.reason


def test_create_user_feeds_the_password_on_stdin_never_in_argv() -> None:
    # GIVEN the FAB auth manager and an injected password, default user details
    p = ep.plan("create-user", [], user_env())
    # THEN one `users create` step answers the two prompts from AIRFLOW_ADMIN_PASSWORD
    (step,) = p.steps
    assert step.argv[:3] == ("airflow", "users", "create")
    assert step.stdin_secret_env == "AIRFLOW_ADMIN_PASSWORD"
    assert step.stdin_lines == 2
    assert "--password" not in step.argv
    assert "-p" not in step.argv
    args = dict(zip(step.argv[3::2], step.argv[4::2], strict=True))
    assert args == {
        "--username": "admin",
        "--email": "admin@example.com",
        "--firstname": "Airflow",
        "--lastname": "Admin",
        "--role": "Admin",
    }
    # AND the password appears nowhere in the plan (it may be logged or printed)
    assert PASSWORD not in repr(p)
    assert "AIRFLOW_ADMIN_PASSWORD" in p.env_unset


def test_create_user_details_come_from_the_environment_and_reset_is_optional() -> None:
    # GIVEN custom details and AIRFLOW_ADMIN_RESET_PASSWORD=true
    env = user_env(
        AIRFLOW_ADMIN_USERNAME="ops",
        AIRFLOW_ADMIN_EMAIL="ops@example.org",
        AIRFLOW_ADMIN_FIRSTNAME="Op",
        AIRFLOW_ADMIN_LASTNAME="Erator",
        AIRFLOW_ADMIN_ROLE="Op",
        AIRFLOW_ADMIN_RESET_PASSWORD="true",
    )
    create, reset = ep.plan("create-user", [], env).steps
    # THEN the user is created with them, and its password is then reset from the secret
    assert create.argv[3:5] == ("--username", "ops")
    assert "ops@example.org" in create.argv
    assert "Erator" in create.argv
    assert create.argv[-2:] == ("--role", "Op")
    assert reset.argv == ("airflow", "users", "reset-password", "--username", "ops")
    assert reset.stdin_secret_env == "AIRFLOW_ADMIN_PASSWORD"
    assert reset.stdin_lines == 2


def test_create_user_requires_the_fab_auth_manager() -> None:
    env = user_env()
    env["AIRFLOW__CORE__AUTH_MANAGER"] = "airflow.api_fastapi.auth.managers.simple.SimpleAuthManager"
    with pytest.raises(ep.PlanError, match="FAB auth manager"):
        ep.plan("create-user", [], env)


@pytest.mark.parametrize("password", [None, "", f"{PASSWORD}\n", f"two\r{PASSWORD}"])
def test_create_user_rejects_a_missing_or_unusable_password_without_showing_it(password: str | None) -> None:
    # GIVEN a missing, empty or multi-line password
    env = user_env()
    if password is None:
        del env["AIRFLOW_ADMIN_PASSWORD"]
    else:
        env["AIRFLOW_ADMIN_PASSWORD"] = password
    # WHEN planning THEN a clear error that does not contain the password
    with pytest.raises(ep.PlanError, match="AIRFLOW_ADMIN_PASSWORD") as caught:
        ep.plan("create-user", [], env)
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AIRFLOW_ADMIN_USERNAME", "bad name"),
        ("AIRFLOW_ADMIN_EMAIL", "not-an-email"),
        ("AIRFLOW_ADMIN_EMAIL", "a b@c"),
    ],
)
def test_create_user_rejects_bad_user_details(name: str, value: str) -> None:
    with pytest.raises(ep.PlanError, match=name):
        ep.plan("create-user", [], user_env(**{name: value}))


# --- the metadata database --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "role", ["api-server", "scheduler", "dag-processor", "triggerer", "db-migrate", "create-user"]
)
def test_every_database_role_refuses_to_start_without_a_database(role: str) -> None:
    # GIVEN no metadata database setting (Airflow would fall back to SQLite in the container)
    env = user_env()
    del env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    # THEN the plan is refused with the variables to set
    with pytest.raises(ep.PlanError, match="no metadata database configured"):
        ep.plan(role, [], env)


def test_the_database_url_may_come_from_a_command_or_secret_backend() -> None:
    env = base_env()
    del env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_SECRET"] = "airflow/connections/metadata"
    assert ep.plan("db-migrate", [], env).steps == (ep.Command(("airflow", "db", "migrate")),)


def test_a_malformed_database_url_is_rejected_without_showing_it() -> None:
    # GIVEN a database URL that is not a URL (and holds a password)
    env = base_env(AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="airflow:hunter2-secret@db:5432/airflow")
    # WHEN planning THEN the error names the variable but not its value
    with pytest.raises(ep.PlanError, match="not a database URL") as caught:
        ep.plan("db-migrate", [], env)
    assert "hunter2-secret" not in str(caught.value)


# --- health checks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "job_type"),
    [("scheduler", "SchedulerJob"), ("triggerer", "TriggererJob"), ("dag-processor", "DagProcessorJob")],
)
def test_healthcheck_of_a_job_component_queries_its_heartbeat_in_process(role: str, job_type: str) -> None:
    # GIVEN a PostgreSQL metadata database WHEN planning the check THEN it is one query in this
    # process (no `airflow jobs check`: seconds of CPU), with Airflow's default threshold
    (step,) = ep.plan("healthcheck", [role], base_env()).steps
    assert step == ep.JobHeartbeatCheck(job_type, 30, timeout_s=ep.HEALTHCHECK_TIMEOUT_S)


def test_healthcheck_threshold_follows_airflows_own_setting() -> None:
    env = base_env(AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD="90")
    (step,) = ep.plan("healthcheck", ["triggerer"], env).steps
    assert isinstance(step, ep.JobHeartbeatCheck)
    assert step.threshold_s == 90


def test_healthcheck_without_a_plain_postgres_url_asks_airflow_within_the_timeout() -> None:
    # GIVEN the database URL from a command (only Airflow resolves it)
    env = {k: v for k, v in base_env().items() if k != "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"}
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD"] = "cat /run/db-url"
    (step,) = ep.plan("healthcheck", ["scheduler"], env).steps
    assert isinstance(step, ep.Command)
    assert step.argv == ("airflow", "jobs", "check", "--job-type", "SchedulerJob", "--local")
    assert step.timeout_s == ep.HEALTHCHECK_TIMEOUT_S


def test_healthcheck_timeout_is_configurable_and_bounded() -> None:
    (step,) = ep.plan("healthcheck", ["scheduler"], base_env(AIRFLOW_HEALTHCHECK_TIMEOUT="5")).steps
    assert step.timeout_s == 5
    with pytest.raises(ep.PlanError, match="AIRFLOW_HEALTHCHECK_TIMEOUT"):
        ep.plan("healthcheck", ["scheduler"], base_env(AIRFLOW_HEALTHCHECK_TIMEOUT="0"))


def test_healthcheck_of_a_celery_worker_pings_this_hosts_worker_in_process() -> None:
    p = ep.plan("healthcheck", ["celery-worker"], worker_env())
    # Like the worker itself: no database, and no SQLite file created by accident.
    assert dict(p.env_set) == {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": ep.WORKER_NO_DATABASE_URL}
    (step,) = p.steps
    assert step == ep.CeleryPing("celery@ip-10-0-1-7", timeout_s=ep.HEALTHCHECK_TIMEOUT_S)


def test_healthcheck_of_a_celery_worker_without_a_plain_broker_url_uses_celerys_cli() -> None:
    env = {k: v for k, v in worker_env().items() if k != "AIRFLOW__CELERY__BROKER_URL"}
    (step,) = ep.plan("healthcheck", ["celery-worker"], env).steps
    assert isinstance(step, ep.Command)
    assert step.argv == (
        "celery",
        "--app",
        "airflow.providers.celery.executors.celery_executor.app",
        "inspect",
        "ping",
        "-d",
        "celery@ip-10-0-1-7",
    )


@pytest.mark.parametrize(
    ("extra", "url"),
    [
        ({}, "http://127.0.0.1:8080/api/v2/monitor/health"),
        ({"AIRFLOW__API__PORT": "9091"}, "http://127.0.0.1:9091/api/v2/monitor/health"),
        (
            {"AIRFLOW__API__BASE_URL": "https://airflow.example.com/af/"},
            "http://127.0.0.1:8080/af/api/v2/monitor/health",
        ),
    ],
)
def test_healthcheck_of_the_api_server_gets_its_own_health_endpoint(extra: dict[str, str], url: str) -> None:
    (step,) = ep.plan("healthcheck", ["api-server"], base_env(**extra)).steps
    assert step == ep.HttpCheck(url)


@pytest.mark.parametrize("port", ["0", "70000", "http"])
def test_healthcheck_rejects_a_bad_api_port(port: str) -> None:
    with pytest.raises(ep.PlanError, match="AIRFLOW__API__PORT"):
        ep.plan("healthcheck", ["api-server"], base_env(AIRFLOW__API__PORT=port))


@pytest.mark.parametrize("role", ["db-migrate", "create-user"])
def test_healthcheck_of_a_one_off_job_has_nothing_to_check(role: str) -> None:
    p = ep.plan("healthcheck", [role], {})
    assert p.steps == ()
    assert "one-off" in p.reason


@pytest.mark.parametrize("args", [[], ["webserver"], ["scheduler", "extra"]])
def test_healthcheck_rejects_a_missing_or_unknown_role(args: list[str]) -> None:
    with pytest.raises(ep.PlanError, match="healthcheck"):
        ep.plan("healthcheck", args, base_env())


def test_healthcheck_does_not_record_a_role() -> None:
    # GIVEN a health probe WHEN planned THEN it never overwrites the container's recorded role
    assert ep.plan("healthcheck", ["scheduler"], base_env()).role_file is None


# --- unknown roles and main() ----------------------------------------------------------------------


@pytest.mark.parametrize("role", ["webserver", "", "SCHEDULER", "bash"])
def test_an_unknown_role_is_refused_with_the_list_of_roles(role: str) -> None:
    with pytest.raises(ep.PlanError, match="unknown role") as caught:
        ep.plan(role, [], base_env())
    for known in ("api-server", "scheduler", "dag-processor", "triggerer", "celery-worker", "db-migrate"):
        assert known in str(caught.value)


@pytest.fixture
def nothing_may_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the entrypoint started a process for bad input")

    monkeypatch.setattr(ep.subprocess, "Popen", refuse)
    monkeypatch.setattr(ep.os, "execvpe", refuse)
    monkeypatch.setattr(ep.urllib.request, "urlopen", refuse)


@pytest.mark.usefixtures("nothing_may_run")
def test_main_exits_2_on_an_unknown_role_and_runs_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN an unknown role WHEN main runs THEN exit code 2, the roles listed, nothing started
    assert ep.main(["webserver"], base_env()) == 2
    err = capsys.readouterr().err
    assert "unknown role 'webserver'" in err
    assert "celery-worker" in err


@pytest.mark.usefixtures("nothing_may_run")
def test_main_without_a_role_prints_usage_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert ep.main([], base_env()) == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.usefixtures("nothing_may_run")
def test_main_never_prints_the_password_when_create_user_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN a password but no FAB auth manager
    env = user_env()
    del env["AIRFLOW__CORE__AUTH_MANAGER"]
    # WHEN main runs create-user THEN it refuses (2) and the password is nowhere in the output
    assert ep.main(["create-user"], env) == 2
    out = capsys.readouterr()
    assert "FAB auth manager" in out.err
    assert PASSWORD not in out.out + out.err


@pytest.mark.usefixtures("nothing_may_run")
def test_healthcheck_failures_exit_1_never_2(tmp_path: Path) -> None:
    # GIVEN no recorded role (Docker reserves exit code 2 in health checks)
    env = base_env(AIRFLOW_IMAGE_ROLE_FILE=str(tmp_path / "missing"))
    # WHEN the health check runs without a role THEN it is "unhealthy" (1)
    assert ep.main(["healthcheck"], env) == 1
    assert ep.main(["healthcheck", "webserver"], env) == 1


@pytest.mark.usefixtures("nothing_may_run")
def test_healthcheck_without_a_role_uses_the_recorded_one(tmp_path: Path) -> None:
    # GIVEN a container that recorded it runs a one-off job
    role_file = tmp_path / "role"
    role_file.write_text("db-migrate\n")
    # WHEN the image health check runs without a role THEN it checks that role (nothing to run)
    assert ep.main(["healthcheck"], base_env(AIRFLOW_IMAGE_ROLE_FILE=str(role_file))) == 0


# --- the read-only role (db-migrate) ---------------------------------------------------------------


def test_db_migrate_makes_the_read_only_role_after_the_migration_when_asked() -> None:
    # GIVEN the read-only role's name and password (a secret) in the job's environment
    env = base_env(AIRFLOW_READONLY_DB_USER="airflow_readonly", AIRFLOW_READONLY_DB_PASSWORD="pw-9f8e7d")
    # WHEN planning db-migrate
    p = ep.plan("db-migrate", [], env)
    # THEN the migration runs first, then the role script, and the password is in no argv
    assert p.steps[0] == ep.Command(("airflow", "db", "migrate"))
    assert p.steps[1].argv[:2] == ("python", "-c")
    assert "GRANT SELECT ON ALL TABLES" in p.steps[1].argv[2]
    assert all("pw-9f8e7d" not in part for step in p.steps for part in step.argv)
    assert "read-only role 'airflow_readonly'" in p.reason
    # AND without the name nothing but the migration runs
    assert len(ep.plan("db-migrate", [], base_env()).steps) == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"AIRFLOW_READONLY_DB_USER": "ro"}, "AIRFLOW_READONLY_DB_PASSWORD is not"),
        ({"AIRFLOW_READONLY_DB_USER": "Robert'); DROP", "AIRFLOW_READONLY_DB_PASSWORD": "x"}, "must match"),
        ({"AIRFLOW_READONLY_DB_USER": "ro\nx", "AIRFLOW_READONLY_DB_PASSWORD": "x"}, "must match"),
    ],
)
def test_db_migrate_refuses_a_bad_read_only_role_setting(extra: dict[str, str], message: str) -> None:
    with pytest.raises(ep.PlanError, match=message):
        ep.plan("db-migrate", [], base_env(**extra))


def test_db_migrate_makes_the_results_database_after_the_migration_when_asked() -> None:
    # GIVEN the SQS broker option's migrate job: the read-only role and the results database
    env = base_env(
        AIRFLOW_READONLY_DB_USER="airflow_readonly",
        AIRFLOW_READONLY_DB_PASSWORD="pw-9f8e7d",
        AIRFLOW_CELERY_RESULTS_DATABASE="celery_results",
        AIRFLOW_CELERY_RESULTS_DB_PASSWORD="pw-res-1a2b",
    )
    # WHEN planning db-migrate
    p = ep.plan("db-migrate", [], env)
    # THEN migration, read-only role, then the results database; no password in any argv
    assert [step.argv[:2] for step in p.steps] == [("airflow", "db"), ("python", "-c"), ("python", "-c")]
    script = p.steps[2].argv[2]
    assert "CREATE DATABASE" in script
    assert "REVOKE CONNECT, TEMPORARY ON DATABASE" in script
    assert all(
        secret not in part
        for step in p.steps
        for part in step.argv
        for secret in ("pw-9f8e7d", "pw-res-1a2b")
    )
    assert "results-only database and role 'celery_results'" in p.reason


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"AIRFLOW_CELERY_RESULTS_DATABASE": "celery_results"}, "AIRFLOW_CELERY_RESULTS_DB_PASSWORD is not"),
        (
            {"AIRFLOW_CELERY_RESULTS_DATABASE": "x; DROP", "AIRFLOW_CELERY_RESULTS_DB_PASSWORD": "x"},
            "must match",
        ),
        (
            {
                "AIRFLOW_CELERY_RESULTS_DATABASE": "airflow_readonly",
                "AIRFLOW_CELERY_RESULTS_DB_PASSWORD": "x",
                "AIRFLOW_READONLY_DB_USER": "airflow_readonly",
                "AIRFLOW_READONLY_DB_PASSWORD": "y",
            },
            "must differ from AIRFLOW_READONLY_DB_USER",
        ),
    ],
)
def test_db_migrate_refuses_a_bad_results_database_setting(extra: dict[str, str], message: str) -> None:
    with pytest.raises(ep.PlanError, match=message):
        ep.plan("db-migrate", [], base_env(**extra))


def test_the_health_check_pings_the_node_name_the_worker_started_with(tmp_path: Path) -> None:
    # GIVEN a worker that recorded its ECS task id at start
    env = base_env(AIRFLOW_IMAGE_ROLE_FILE=str(tmp_path / "role"))
    ep._record_task_id(env, "abc123")
    # WHEN the health check looks for it (the metadata endpoint is not even reachable)
    # THEN it finds the recorded one; without a record there is none
    assert ep._recorded_task_id(env) == "abc123"
    assert ep._recorded_task_id(base_env(AIRFLOW_IMAGE_ROLE_FILE=str(tmp_path / "other"))) is None
