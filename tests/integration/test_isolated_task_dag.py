"""The isolated_task sample names the AwsEcsExecutor only where Airflow has it configured:
with the stack's executor list its heavy step goes to its own Fargate task, with Celery alone
(the local runtime, `afctl dags check`) it stays an ordinary Celery task and still imports.

Each case parses the file with the real DagBag of the runtime (which refuses a task that names
an executor not configured), in its own process: the executor list is read at parse time.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, AirflowRuntime

pytestmark = pytest.mark.integration

CELERY_AND_ECS = "CeleryExecutor,airflow.providers.amazon.aws.executors.ecs.ecs_executor.AwsEcsExecutor"
PARSE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get("isolated_task")
print(json.dumps({
    "errors": {k: str(v)[:300] for k, v in bag.import_errors.items()},
    "executors": {t.task_id: t.executor for t in dag.tasks} if dag else None,
}))
"""


def parse(
    runtime: AirflowRuntime, tmp_path: Path, executor: str, source: str | None = None
) -> dict[str, object]:
    folder = tmp_path / executor.split(",")[-1].rsplit(".", 1)[-1]
    folder.mkdir()
    text = source if source is not None else (REPO_ROOT / "dags" / "isolated_task.py").read_text()
    (folder / "isolated_task.py").write_text(text)
    env = {
        "PATH": f"{runtime.venv / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(tmp_path / "home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": executor,
    }
    result = subprocess.run(
        [str(runtime.python), "-c", PARSE, str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_with_the_ecs_executor_configured_only_the_heavy_step_asks_for_it(
    airflow_runtime: AirflowRuntime, tmp_path: Path
) -> None:
    report = parse(airflow_runtime, tmp_path, CELERY_AND_ECS)
    assert report["errors"] == {}
    assert report["executors"] == {"prepare": None, "heavy_step": "AwsEcsExecutor", "check": None}


def test_with_celery_alone_it_stays_on_celery_where_naming_the_executor_would_fail(
    airflow_runtime: AirflowRuntime, tmp_path: Path
) -> None:
    # GIVEN Celery alone (the local runtime) THEN the sample imports with every task on Celery
    report = parse(airflow_runtime, tmp_path, "CeleryExecutor")
    assert report["errors"] == {}
    assert report["executors"] == {"prepare": None, "heavy_step": None, "check": None}
    # AND the guard is what makes that so: naming the executor unconditionally is an import error
    source = (REPO_ROOT / "dags" / "isolated_task.py").read_text()
    unguarded = source.replace("executor=ECS_EXECUTOR if ON_ECS else None", "executor=ECS_EXECUTOR")
    assert unguarded != source
    (tmp_path / "again").mkdir()
    broken = parse(airflow_runtime, tmp_path / "again", "CeleryExecutor", unguarded)
    assert broken["executors"] is None
    assert "AwsEcsExecutor" in json.dumps(broken["errors"])
