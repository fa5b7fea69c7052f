"""The hooks inside real Celery and Airflow (runtime environment): the Celery config module
Airflow loads, and the wake-up fired by a real publish."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.conftest import AirflowRuntime, RedisDatabase

pytestmark = pytest.mark.integration

PUBLISH_WITH_HOOK = textwrap.dedent(
    """
    import sys
    from celery import Celery
    from airflow_control_plane.scaling.wakeup import install_wakeup_hook

    class Recording:
        def __init__(self):
            self.woken = []
        def wake(self, queue):
            self.woken.append(queue)

    waker = Recording()
    hook = install_wakeup_hook({"AUTOSCALER_WAKEUP_QUEUES": "etl"}, waker=waker)
    app = Celery("probe", broker=sys.argv[1])
    for _ in range(20):
        app.send_task("probe.sleep", args=[1], queue="etl")
    app.send_task("probe.sleep", args=[1], queue="default")
    print(",".join(waker.woken))
    """
)


def test_real_publish_wakes_the_autoscaler_once(
    airflow_runtime: AirflowRuntime, redis_database: RedisDatabase
) -> None:
    # GIVEN the wake-up hook on a real Celery app watching "etl"
    redis_database.client().flushdb()
    # WHEN 20 tasks are published to etl and one to default
    result = subprocess.run(
        [str(airflow_runtime.python), "-c", PUBLISH_WITH_HOOK, redis_database.url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # THEN after_task_publish fired and the rate limit let exactly one wake-up through, for etl only
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "etl"


def test_airflow_loads_the_celery_config_module(airflow_runtime: AirflowRuntime, tmp_path: Path) -> None:
    # GIVEN Airflow configured to take its Celery options from the control plane's module
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "airflow_control_plane.scaling.celery_config.CELERY_CONFIG",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    }
    env.pop("ECS_AGENT_URI", None)
    env.pop("AUTOSCALER_WAKEUP_FUNCTION", None)
    script = (
        "from airflow.providers.celery.executors.celery_executor_utils import app\n"
        "from airflow_control_plane.scaling import celery_config as c\n"
        "print(app.conf.task_default_queue, c.PROTECTION_INSTALLED, c.WAKEUP_INSTALLED)\n"
    )
    # WHEN the Celery executor's app is built
    result = subprocess.run(
        [str(airflow_runtime.python), "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    # THEN it builds from Airflow's defaults, and outside ECS no hook is installed
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-3:] == ["default", "False", "False"]
