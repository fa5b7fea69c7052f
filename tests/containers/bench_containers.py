"""Print bring-up to ready and worker scale-from-zero, on the template's real containers.

Run: ``make bench-containers`` (needs the image; it runs this file with pytest for its
fixtures: a fresh database, the Redis db, the published DAGs).

1. Bring-up: statemachines/bringup.asl.json on a fresh database, executed by the emulator
   with ECS bridged to Docker (tests/containers/local_aws.py); prints the execution's time to
   ready and the time spent in each step (from the execution history).
2. Scale from zero: a run of even_odd queued with no worker; the autoscaler Lambda handler
   ticks every ``TICK_S`` seconds (the deployed schedule ticks every minute: add up to 60 s
   on AWS, and Fargate's own 30-60 s task start); prints queued -> running of the first task
   instance (from the metadata database) and the tick that scaled up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from airflow_control_plane.poll import poll_until
from tests.containers.local_aws import BridgedEnvironment, bridged_environment, bringup_input
from tests.containers.stack import Stack
from tests.harness import request_json
from tests.statemachines.sfn_emulator import Execution

pytestmark = pytest.mark.containers

TICK_S = 5
STEPS = (
    ("migrate (db-migrate container)", "MigrateDatabase"),
    ("create admin user (create-user container)", "CreateAdminUser"),
    ("start core services", "StartCoreServices"),
    ("services steady and healthy", "DescribeCoreServices"),
    ("health gate (api-server)", "HealthGate"),
)


@pytest.fixture(scope="module")
def env(stack_factory: Callable[[], Stack]) -> Iterator[BridgedEnvironment]:
    with bridged_environment(stack_factory()) as environment:
        yield environment


def _step_seconds(execution: Execution) -> dict[str, float]:
    """Seconds from a state's first entry to its last exit (polls included)."""
    first: dict[str, datetime] = {}
    last: dict[str, datetime] = {}
    for event in execution.history:
        if event["type"].endswith("StateEntered"):
            first.setdefault(event["stateEnteredEventDetails"]["name"], event["timestamp"])
        elif event["type"].endswith("StateExited"):
            last[event["stateExitedEventDetails"]["name"]] = event["timestamp"]
    return {name: (last[name] - first[name]).total_seconds() for name in first if name in last}


def _execution_seconds(execution: Execution) -> float:
    stamps = [event["timestamp"] for event in execution.history]
    return float((max(stamps) - min(stamps)).total_seconds())


def test_bench_bringup_and_scale_from_zero(env: BridgedEnvironment) -> None:
    execution = env.bringup(bringup_input("bench"))
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    steps = _step_seconds(execution)
    print("\nbring-up on containers (fresh database, one of each core service):")
    print(f"  execution to ready: {_execution_seconds(execution):6.1f} s")
    for label, state in STEPS:
        if state in steps:
            print(f"    {label:<44} {steps[state]:6.1f} s")

    result = scale_from_zero(env)
    print(f"worker scale from zero through the autoscaler Lambda (ticks every {TICK_S} s here):")
    print(f"  first task queued -> running:   {result['queued_to_running']:6.1f} s")
    print(f"  first task queued -> scale-up:  {result['queued_to_scale_up']:6.1f} s (tick {result['ticks']})")
    print(f"  scale-up -> task running:       {result['scale_up_to_running']:6.1f} s")


def scale_from_zero(env: BridgedEnvironment) -> dict[str, Any]:
    def api(path: str, body: object | None = None, method: str = "GET", token: str = "") -> Any:
        return request_json(env.stack.base_url + path, method=method, body=body, token=token)

    body = {"username": "admin", "password": env.stack.admin_password}
    token = str(api("/auth/token", body, "POST")["access_token"])

    def parsed() -> bool:
        try:
            api("/api/v2/dags/even_odd", token=token)
        except OSError:
            return False
        return True

    poll_until(parsed, timeout_s=300, interval_s=2, what="even_odd to be parsed")
    api("/api/v2/dags/even_odd", {"is_paused": False}, "PATCH", token)
    run_id = str(api("/api/v2/dags/even_odd/dagRuns", {"logical_date": None}, "POST", token)["dag_run_id"])

    def first_task(column: str) -> datetime | None:
        rows = env.stack.database.connect().run(
            f"SELECT min({column}) FROM task_instance WHERE dag_id = 'even_odd' AND run_id = :r",  # noqa: S608
            r=run_id,
        )
        return rows[0][0] if rows and rows[0][0] is not None else None

    queued_at = poll_until(
        lambda: first_task("queued_dttm"), timeout_s=300, interval_s=0.5, what="a queued task"
    )
    ticks = 0
    scaled_at = 0.0

    def tick() -> bool:
        nonlocal ticks, scaled_at
        ticks += 1
        env.autoscale()
        if env.counts()["worker"][0] >= 1:
            scaled_at = time.time()
            return True
        return False

    poll_until(tick, timeout_s=300, interval_s=TICK_S, what="the autoscaler to scale up")
    started = poll_until(lambda: first_task("start_date"), timeout_s=600, interval_s=1, what="a running task")
    return {
        "queued_to_running": (started - queued_at).total_seconds(),
        "queued_to_scale_up": scaled_at - queued_at.timestamp(),
        "scale_up_to_running": started.timestamp() - scaled_at,
        "ticks": ticks,
    }
