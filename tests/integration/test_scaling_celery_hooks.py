"""The hooks inside real Celery and Airflow (runtime environment): the Celery config module
Airflow loads, and the wake-up fired by a real publish."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from tests.conftest import AirflowRuntime, RedisDatabase
from tests.harness import celery_executor_app, run_python

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
    result = run_python(airflow_runtime, PUBLISH_WITH_HOOK, redis_database.url, timeout=120)
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
    # WHEN the Celery executor's app is built
    built = celery_executor_app(
        airflow_runtime, env, "app.conf.task_default_queue", "c.PROTECTION_INSTALLED", "c.WAKEUP_INSTALLED"
    )
    # THEN it builds from Airflow's defaults, and outside ECS no hook is installed
    assert built == ["default", "False", "False"]
