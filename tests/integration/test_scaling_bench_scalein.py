"""A small `afctl bench-scalein`: real Celery workers through a few scale-in cycles, tasks at
random instants and a task sent into every drain, and not one task lost, failed or run twice
(the command fails if one is)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import AirflowRuntime

pytestmark = pytest.mark.integration


def _number(pattern: str, text: str) -> list[float]:
    found = re.search(pattern, text)
    assert found is not None, f"{pattern!r} not in the report:\n{text}"
    return [float(g) for g in found.groups()]


def test_scale_in_cycles_lose_no_task(airflow_runtime: AirflowRuntime) -> None:
    # GIVEN the benchmark with 4 scale-in cycles, up to 3 workers, a task sent into every drain
    # WHEN it runs (on a redis-server of its own)
    done = subprocess.run(
        [str(airflow_runtime.afctl), "bench-scalein", "--cycles", "4", "--max", "3", "--seed", "3",
         "--race-rate", "1"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    report = done.stdout
    # THEN it completes, and says with which seed and settings
    assert done.returncode == 0, report + done.stderr
    assert "seed 3 (schedule random.Random(3), drain-time arrivals random.Random(4))" in report
    # AND at least 4 workers went through a scale-in, by drains that each stopped one or more
    (cycles,) = _number(r"scale-in cycles \(.*?\): (\d+), completed", report)
    drains, released = _number(r"drains: (\d+), (\d+) stopped at least one worker", report)
    assert cycles >= 4
    assert 1 <= released <= drains
    assert released <= cycles
    # AND tasks were sent while a drain ran, and every task sent ran exactly once to the end
    sent, during, succeeded, failed, retried, never = _number(
        r"tasks: (\d+) sent \((\d+) while a drain ran\), (\d+) succeeded, (\d+) failed, "
        r"(\d+) retried, (\d+) never ran",
        report,
    )
    assert during >= 1
    assert sent == succeeded > 0
    assert (failed, retried, never) == (0, 0, 0)
    assert _number(r"tasks killed by scale-in: (\d+)", report) == [0]
    # AND the autoscaled workers cost less than always-on for the same time
    autoscaled, always_on = _number(r"worker-hours: ([\d.]+) autoscaled vs ([\d.]+) always-on", report)
    assert 0 < autoscaled < always_on
