"""plan() of the image entrypoint for the optional roles: ``flower`` (never open) and
``ecs-task`` (one task instance started by the AwsEcsExecutor, no database, token never logged).

Flower running for real behind its basic auth is tests/integration/test_flower_auth.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.test_image_entrypoint import EXECUTION_API, ep

pytestmark = pytest.mark.unit

PASSWORD = "Flower-Secret-Value-7"


def flower_env(**extra: str) -> dict[str, str]:
    """What the template gives Flower: the broker, and the user and password from one secret."""
    env = {
        "AIRFLOW__CELERY__BROKER_URL": "rediss://:token@broker:6379/0",
        "AIRFLOW_FLOWER_USERNAME": "flower",
        "AIRFLOW_FLOWER_PASSWORD": PASSWORD,
        "HOSTNAME": "ip-10-0-1-9",
    }
    env.update(extra)
    return env


def test_flower_serves_under_its_prefix_with_basic_auth_joined_only_in_the_childs_environment() -> None:
    # GIVEN the template's Flower environment WHEN the container starts as flower
    p = ep.plan("flower", [], flower_env())
    # THEN it becomes `airflow celery flower` on 5555 under /flower, the password nowhere in the plan
    assert p.exec_argv == (
        "airflow",
        "celery",
        "flower",
        "--hostname",
        "0.0.0.0",  # noqa: S104 - the expected argv
        "--port",
        "5555",
        "--url-prefix",
        "flower",
    )
    assert PASSWORD not in repr(p)
    assert "basic auth" in p.reason
    # AND its child gets Airflow's own basic-auth setting, not the separate password variable
    child = ep._child_env(p, flower_env())
    assert child["AIRFLOW__CELERY__FLOWER_BASIC_AUTH"] == f"flower:{PASSWORD}"
    assert "AIRFLOW_FLOWER_PASSWORD" not in child
    # AND no metadata database: SQLite is pinned to a path that cannot be opened
    assert child["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == ep.WORKER_NO_DATABASE_URL


def test_flower_accepts_airflows_own_basic_auth_setting_and_a_custom_prefix_and_port() -> None:
    env = {
        "AIRFLOW__CELERY__BROKER_URL": "redis://127.0.0.1:6379/3",
        "AIRFLOW__CELERY__FLOWER_BASIC_AUTH": "ops:pw1,audit:pw2",
        "AIRFLOW_FLOWER_URL_PREFIX": "/ops/flower",
        "AIRFLOW_FLOWER_PORT": "15555",
    }
    p = ep.plan("flower", [], env)
    assert p.exec_argv is not None
    assert p.exec_argv[-4:] == ("--port", "15555", "--url-prefix", "ops/flower")
    assert p.flower_auth_from is None
    assert ep._child_env(p, env)["AIRFLOW__CELERY__FLOWER_BASIC_AUTH"] == "ops:pw1,audit:pw2"
    # AND its health check asks Flower's own unauthenticated /healthcheck under the prefix
    check = ep.plan("healthcheck", ["flower"], env)
    assert check.steps == (ep.HttpCheck("http://127.0.0.1:15555/ops/flower/healthcheck"),)


@pytest.mark.parametrize(
    "drop",
    [
        ("AIRFLOW_FLOWER_USERNAME",),
        ("AIRFLOW_FLOWER_PASSWORD",),
        ("AIRFLOW_FLOWER_USERNAME", "AIRFLOW_FLOWER_PASSWORD"),
    ],
)
def test_flower_is_never_started_open(drop: tuple[str, ...]) -> None:
    env = {k: v for k, v in flower_env().items() if k not in drop}
    with pytest.raises(ep.PlanError, match="never started open"):
        ep.plan("flower", [], env)


@pytest.mark.parametrize("value", ["nopassword", "alice:", ":pw9", "a b:c", "ok:pw,broken"])
def test_flower_refuses_malformed_basic_auth_without_showing_it(value: str) -> None:
    with pytest.raises(ep.PlanError, match="value not shown") as caught:
        ep.plan(
            "flower",
            [],
            {"AIRFLOW__CELERY__BROKER_URL": "redis://b:6379/0", "AIRFLOW__CELERY__FLOWER_BASIC_AUTH": value},
        )
    assert value not in str(caught.value)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://db/airflow"}, "must not carry"),
        ({"AIRFLOW__CORE__FERNET_KEY": "k"}, "must not carry"),
        ({"AIRFLOW__CELERY__BROKER_URL": ""}, "BROKER_URL"),
        ({"AIRFLOW_FLOWER_URL_PREFIX": "flower"}, "URL_PREFIX"),
        ({"AIRFLOW_FLOWER_URL_PREFIX": "/a/../b"}, "URL_PREFIX"),
        ({"AIRFLOW_FLOWER_PORT": "70000"}, "TCP port"),
    ],
)
def test_flower_refuses_bad_or_excess_settings(extra: dict[str, str], message: str) -> None:
    with pytest.raises(ep.PlanError, match=message):
        ep.plan("flower", [], flower_env(**extra))


def test_flower_takes_no_arguments() -> None:
    with pytest.raises(ep.PlanError, match="takes no arguments"):
        ep.plan("flower", ["--basic-auth", "u:p"], flower_env())


# --- ecs-task ------------------------------------------------------------------------------------

WORKLOAD = {
    "token": "eyJ-secret-task-token",
    "ti": {"dag_id": "isolated_sample", "task_id": "heavy", "run_id": "manual__1", "try_number": 1},
    "type": "ExecuteTask",
}
COMMAND = [
    "python",
    "-m",
    "airflow.sdk.execution_time.execute_workload",
    "--json-string",
    json.dumps(WORKLOAD),
]


def ecs_task_env(**extra: str) -> dict[str, str]:
    env = {"AIRFLOW__CORE__EXECUTION_API_SERVER_URL": EXECUTION_API, "HOSTNAME": "ip-10-0-2-4"}
    env.update(extra)
    return env


def test_ecs_task_runs_the_executors_workload_without_a_database() -> None:
    # GIVEN the command the AwsEcsExecutor puts in the container override
    p = ep.plan("ecs-task", COMMAND, ecs_task_env())
    # THEN the container becomes exactly that command, with no database and the reason naming the task
    assert p.exec_argv == tuple(COMMAND)
    assert "isolated_sample.heavy" in p.reason
    assert (
        ep._child_env(p, ecs_task_env())["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == ep.WORKER_NO_DATABASE_URL
    )
    # AND what is logged never holds the workload (it carries the task's API token)
    assert p.exec_display is not None
    assert "secret-task-token" not in p.exec_display
    assert "secret-task-token" not in p.reason


def test_ecs_task_logs_never_show_the_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    became: list[list[str]] = []

    def fake_exec(_file: str, argv: list[str], _env: dict[str, str]) -> None:
        became.append(argv)

    monkeypatch.setattr(ep.os, "execvpe", fake_exec)
    assert ep.main(["ecs-task", *COMMAND], ecs_task_env(AIRFLOW_IMAGE_ROLE_FILE="/nonexistent/role")) == 0
    assert became == [COMMAND]
    assert "secret-task-token" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["bash", "-c", "curl evil"],
        ["python", "-m", "airflow.sdk.execution_time.execute_workload", "--json-string"],
        ["python", "-m", "airflow.sdk.execution_time.execute_workload", "--json-string", "{}", "extra"],
        ["python", "-m", "airflow.sdk.execution_time.execute_workload", "--json-string", "not json"],
    ],
)
def test_ecs_task_refuses_anything_but_the_executors_command(command: list[str]) -> None:
    with pytest.raises(ep.PlanError, match="ecs-task"):
        ep.plan("ecs-task", command, ecs_task_env())


@pytest.mark.parametrize("name", ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__API_AUTH__JWT_SECRET"])
def test_ecs_task_refuses_control_secrets_and_needs_the_execution_api(name: str) -> None:
    with pytest.raises(ep.PlanError, match="must not carry"):
        ep.plan("ecs-task", COMMAND, ecs_task_env(**{name: "x"}))
    with pytest.raises(ep.PlanError, match="EXECUTION_API_SERVER_URL"):
        ep.plan("ecs-task", COMMAND, {"HOSTNAME": "h"})


def test_the_usage_names_the_new_roles(tmp_path: Path) -> None:
    assert "flower" in ep.USAGE
    assert "ecs-task" in ep.USAGE


def test_flower_takes_the_results_only_database_and_no_other_database_backend() -> None:
    results = "db+postgresql://celery_results:pw-res-1a2b@db.internal:5432/celery_results?sslmode=require"
    env = flower_env(
        AIRFLOW__CELERY__RESULT_BACKEND=results, AIRFLOW_CELERY_RESULTS_DATABASE="celery_results"
    )
    assert ep.plan("flower", [], env).role == "flower"
    metadata = "db+postgresql://airflow:pw-res-1a2b@db.internal:5432/airflow"
    with pytest.raises(ep.PlanError, match="database result backend"):
        ep.plan("flower", [], {**env, "AIRFLOW__CELERY__RESULT_BACKEND": metadata})
