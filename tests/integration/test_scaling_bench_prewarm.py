"""`afctl bench-prewarm` on a small schedule: with real Celery workers, pre-warm removes the
cold start of scheduled runs (their tasks no longer wait for a worker to start)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import AirflowRuntime

pytestmark = pytest.mark.integration


def test_prewarm_removes_the_cold_start_of_scheduled_runs(airflow_runtime: AirflowRuntime) -> None:
    # GIVEN two scheduled runs of two tasks, spaced so that the workers return to zero between
    # WHEN they run without pre-warm, then with it (lead = measured start-up + evaluation)
    done = subprocess.run(
        [str(airflow_runtime.afctl), "bench-prewarm", "--runs", "2", "--tasks", "2"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    startup = re.search(r"measured worker start-up ([\d.]+)s", done.stdout)
    cold = re.search(r"no pre-warm\s+wait of scheduled tasks: p50 ([\d.]+)s", done.stdout)
    warm = re.search(r"pre-warm \d+s\s+wait of scheduled tasks: p50 ([\d.]+)s", done.stdout)
    assert startup is not None
    assert cold is not None
    assert warm is not None
    # THEN without pre-warm the tasks wait about a worker start-up; with it, well under one
    assert float(cold.group(1)) >= 0.5 * float(startup.group(1))
    assert float(warm.group(1)) < 0.5 * float(cold.group(1))
