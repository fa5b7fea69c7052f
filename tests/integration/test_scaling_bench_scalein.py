"""A small `afctl bench-scalein`: real Celery workers through a few scale-in cycles, tasks at
random instants, and not one task lost or run twice (the command fails if one is)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import AirflowRuntime

pytestmark = pytest.mark.integration


def test_scale_in_cycles_lose_no_task(airflow_runtime: AirflowRuntime) -> None:
    # GIVEN the benchmark with 3 scale-in cycles and a 2 s idle period
    # WHEN it runs (on a redis-server of its own)
    done = subprocess.run(
        [str(airflow_runtime.afctl), "bench-scalein", "--cycles", "3", "--idle-seconds", "2", "--seed", "3"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    # THEN it completes every task exactly once, through at least 3 scale-ins, for less than
    # always-on costs
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tasks failed or run twice because of scale-in: 0" in done.stdout
    cycles = re.search(r"scale-in cycles \(drains that stopped a worker\): (\d+)", done.stdout)
    hours = re.search(r"worker-hours: ([\d.]+) autoscaled vs ([\d.]+) always-on", done.stdout)
    assert cycles is not None
    assert hours is not None
    assert int(cycles.group(1)) >= 3
    assert 0 < float(hours.group(1)) < float(hours.group(2))
