"""The installed runtime (.venv, from airflow_image/requirements.txt) is the set we rely on."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import AirflowRuntime

pytestmark = pytest.mark.integration

PROBE = """
import celery, importlib.metadata as md
from airflow.sdk.exceptions import TaskAlreadyRunningError  # apache/airflow#60855
from airflow.providers.celery.executors import celery_executor_utils  # imports cleanly with this celery
import inspect
src = inspect.getsource(celery_executor_utils)
assert "TaskAlreadyRunningError" in src, "celery provider lacks apache/airflow#64052"
provider = md.version("apache-airflow-providers-celery")
print("VERSIONS", md.version("apache-airflow"), celery.__version__, provider)
"""


def test_runtime_has_airflow_33_a_working_celery_and_the_redelivery_fixes(
    airflow_runtime: AirflowRuntime,
) -> None:
    # GIVEN the runtime environment built from the Airflow lock
    # WHEN we import the Celery executor and the redelivery fix in it
    out = subprocess.run(
        [str(airflow_runtime.python), "-c", PROBE], capture_output=True, text=True, timeout=120, check=False
    )
    # THEN it imports (celery 5.7 would fail here) and the versions are the pinned ones
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("VERSIONS "))
    airflow_version, celery_version, provider_version = line.split()[1:]
    assert airflow_version.startswith("3.3.")
    assert celery_version.startswith("5.6.")
    assert tuple(int(x) for x in provider_version.split(".")[:2]) >= (3, 26)
