"""The sample DAGs load with real Airflow, follow the house rules, and run.

`afctl dags check` runs as a real process from the runtime environment (.venv); the sample
DAGs are executed with `airflow dags test` against a fresh PostgreSQL metadata database.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_control_plane.dag_check import check_dag_folder
from airflow_control_plane.errors import ConfigError
from tests.conftest import AirflowRuntime, PostgresDatabase

pytestmark = pytest.mark.integration

# The samples must be there; a DAG a user adds to dags/ is checked by the same rules, never
# refused for being new.
SAMPLE_DAG_IDS = {"even_odd", "fanout", "isolated_task", "long_running"}
ECS_SETTINGS = {
    "SAMPLE_DAGS_RUN_ON_ECS": "true",
    "SAMPLE_DAGS_ECS_CLUSTER": "airflow",
    "SAMPLE_DAGS_ECS_TASK_DEFINITION": "airflow-standalone:3",
    "SAMPLE_DAGS_ECS_CONTAINER_NAME": "standalone",
    "SAMPLE_DAGS_ECS_SUBNETS": "subnet-0a, subnet-0b",
    "SAMPLE_DAGS_ECS_SECURITY_GROUPS": "sg-0c",
    "SAMPLE_DAGS_ECS_AWSLOGS_GROUP": "/airflow/standalone",
    "SAMPLE_DAGS_ECS_AWSLOGS_STREAM_PREFIX": "standalone",
}
CHECK_TIMEOUT_S = 180
AIRFLOW_TIMEOUT_S = 240


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Airflow or sample-DAG setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SAMPLE_DAGS_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


@dataclass(frozen=True)
class CheckRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def report(self) -> dict[str, Any]:
        data = json.loads(self.stdout)
        assert isinstance(data, dict)
        return data


def _afctl_check(runtime: AirflowRuntime, folder: Path, env: Mapping[str, str], *args: str) -> CheckRun:
    done = subprocess.run(
        [str(runtime.afctl), "dags", "check", str(folder), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=CHECK_TIMEOUT_S,
        check=False,
    )
    return CheckRun(done.returncode, done.stdout, done.stderr)


def test_sample_dags_import_cleanly_and_follow_the_house_rules(
    airflow_runtime: AirflowRuntime, repo_root: Path
) -> None:
    # GIVEN the repository's dags/ folder and no sample-DAG settings (the local default)
    # WHEN the integrity check loads it with real Airflow
    run = _afctl_check(airflow_runtime, repo_root / "dags", _clean_env(), "--json", "--strict")
    # THEN every file imports, the samples are among the DAGs found, and each passes review
    assert run.returncode == 0, run.stdout + run.stderr
    report = run.report
    assert report["ok"] is True
    assert report["import_errors"] == []
    assert set(report["dag_ids"]) >= SAMPLE_DAG_IDS
    # AND every Python file of dags/ that defines a DAG produced at least one (none vanished)
    dag_files = {d["file"] for d in report["dags"]}
    for path in (repo_root / "dags").glob("*.py"):
        if "DAG(" in path.read_text() or "@dag" in path.read_text():
            assert path.name in dag_files, f"{path.name} defines a DAG but none was loaded"
    for dag in report["dags"]:
        assert dag["owner"] not in ("", "airflow"), dag
        assert dag["min_retries"] >= 1, dag
        assert dag["tags"], dag
        assert dag["catchup"] is False, dag
        assert dag["has_doc_md"] is True, dag
        assert dag["schedule"] is None, dag
        assert dag["findings"] == [], dag
    # AND locally even_odd's picks are ordinary (Celery) Python tasks, not ECS tasks
    even_odd = next(d for d in report["dags"] if d["dag_id"] == "even_odd")
    assert "EcsRunTaskOperator" not in even_odd["operators"]
    assert even_odd["task_count"] == 4
    # AND the check left no bytecode in the repository's DAG folder
    assert not (repo_root / "dags" / "__pycache__").exists()


def test_ecs_switch_runs_the_picks_as_fargate_tasks(airflow_runtime: AirflowRuntime, repo_root: Path) -> None:
    # GIVEN the switch on and every ECS setting the template provides
    # WHEN the DAGs are checked
    run = _afctl_check(airflow_runtime, repo_root / "dags", _clean_env(**ECS_SETTINGS), "--json")
    # THEN even_odd still imports, now with its two picks as EcsRunTaskOperator tasks
    assert run.returncode == 0, run.stdout + run.stderr
    report = run.report
    assert set(report["dag_ids"]) >= SAMPLE_DAG_IDS
    even_odd = next(d for d in report["dags"] if d["dag_id"] == "even_odd")
    assert "EcsRunTaskOperator" in even_odd["operators"]
    assert even_odd["task_count"] == 4


def test_ecs_switch_without_its_settings_is_an_import_error_naming_the_variable(
    airflow_runtime: AirflowRuntime, repo_root: Path
) -> None:
    # GIVEN the switch on but the ECS settings missing
    env = _clean_env(**{k: v for k, v in ECS_SETTINGS.items() if k != "SAMPLE_DAGS_ECS_CONTAINER_NAME"})
    # WHEN the DAGs are checked
    run = _afctl_check(airflow_runtime, repo_root / "dags", env, "--json")
    # THEN the check fails and says which setting is missing, in which file
    assert run.returncode == 1
    errors = run.report["import_errors"]
    assert [e["file"] for e in errors] == ["even_odd.py"]
    assert "SAMPLE_DAGS_ECS_CONTAINER_NAME is required" in errors[0]["message"]
    assert run.report["dag_ids"] == ["fanout", "isolated_task", "long_running"]


BROKEN_DAG = """\
from airflow.sdk import dag

import module_that_does_not_exist_anywhere


@dag(schedule=None)
def broken() -> None:
    pass


broken()
"""


def test_a_dag_file_with_an_import_error_fails_the_check_and_is_named(
    airflow_runtime: AirflowRuntime, repo_root: Path, tmp_path: Path
) -> None:
    # GIVEN a copy of the sample DAGs plus one file importing a module that does not exist
    folder = tmp_path / "dags"
    shutil.copytree(repo_root / "dags", folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "broken_dag.py").write_text(BROKEN_DAG)
    # WHEN the check runs, as JSON and for a human
    as_json = _afctl_check(airflow_runtime, folder, _clean_env(), "--json")
    human = _afctl_check(airflow_runtime, folder, _clean_env())
    # THEN both exit 1 and name the file, the line and the missing module
    assert as_json.returncode == 1
    assert human.returncode == 1
    report = as_json.report
    assert report["ok"] is False
    assert [(e["file"], e["line"]) for e in report["import_errors"]] == [("broken_dag.py", 3)]
    assert "module_that_does_not_exist_anywhere" in report["import_errors"][0]["message"]
    assert "broken_dag.py:3" in human.stdout
    # AND the good DAGs are still reported
    assert set(report["dag_ids"]) >= SAMPLE_DAG_IDS


def test_check_without_airflow_is_a_config_error(repo_root: Path) -> None:
    # GIVEN the development interpreter, which has no Airflow installed
    # WHEN the check is asked to load DAGs with it
    # THEN it fails with a ConfigError that says where Airflow is expected
    with pytest.raises(ConfigError, match=r"Airflow is not importable .*--python \.venv/bin/python"):
        check_dag_folder(repo_root / "dags", python=Path(sys.executable), env=_clean_env())


# --- the sample DAGs executed for real -------------------------------------------------------


@dataclass(frozen=True)
class AirflowEnv:
    runtime: AirflowRuntime
    database: PostgresDatabase
    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.runtime.airflow), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=AIRFLOW_TIMEOUT_S,
            check=False,
        )


@pytest.fixture(scope="module")
def migrated_airflow(
    airflow_runtime: AirflowRuntime,
    migrated_database_factory: Callable[[str], PostgresDatabase],
    repo_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AirflowEnv:
    """A fresh metadata database with the migrated schema, AIRFLOW_HOME in a temp dir."""
    database = migrated_database_factory("dags")
    env = _clean_env(
        AIRFLOW_HOME=str(tmp_path_factory.mktemp("airflow_home")),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=database.sqlalchemy_url,
        AIRFLOW__CORE__DAGS_FOLDER=str(repo_root / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    return AirflowEnv(airflow_runtime, database, env)


def _final_result(database: PostgresDatabase, dag_id: str, task_id: str) -> tuple[str, Any, list[Any]]:
    connection = database.connect()
    try:
        [[run_state]] = connection.run("SELECT state FROM dag_run WHERE dag_id = :d", d=dag_id)
        rows = connection.run(
            "SELECT value FROM xcom WHERE dag_id = :d AND task_id = :t AND key = 'return_value'",
            d=dag_id,
            t=task_id,
        )
        tries = connection.run(
            "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = :d", d=dag_id
        )
    finally:
        connection.close()
    assert len(rows) == 1, rows
    return run_state, rows[0][0], tries


@pytest.mark.parametrize(
    ("dag_id", "conf", "final_task", "expected"),
    [
        pytest.param(
            "even_odd",
            None,
            "join",
            {"odd": [1, 3, 5, 7, 9], "even": [2, 4, 6, 8, 10], "odd_sum": 25, "even_sum": 30, "total": 55},
            id="even_odd",
        ),
        pytest.param(
            "fanout", {"task_count": 3, "sleep_seconds": 1}, "reduce", {"items": 3, "total_slept_seconds": 3}
        ),
        pytest.param(
            "long_running",
            {"duration_seconds": 2, "progress_seconds": 1},
            "hold",
            {"duration_seconds": 2},
        ),
    ],
)
def test_sample_dag_runs_to_success(
    migrated_airflow: AirflowEnv,
    dag_id: str,
    conf: dict[str, int] | None,
    final_task: str,
    expected: dict[str, Any],
) -> None:
    # GIVEN a migrated metadata database and the sample DAG (local mode; small params)
    args = ["dags", "test", dag_id] + (["--conf", json.dumps(conf)] if conf else [])
    # WHEN Airflow runs it for real, every task in a real task process
    done = migrated_airflow.run(*args)
    # THEN the run succeeds, every task succeeded on its first try, and the last step's result is right
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    run_state, result, tries = _final_result(migrated_airflow.database, dag_id, final_task)
    assert run_state == "success"
    assert result == expected
    assert tries, "no task instances recorded"
    assert all(state == "success" and try_number == 1 for _, state, try_number in tries), tries
