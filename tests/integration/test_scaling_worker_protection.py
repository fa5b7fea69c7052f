"""A real Celery worker (from the Airflow runtime) with the protection hooks installed protects
its ECS task from its start, keeps it while idle or busy, and never releases it itself (the
scaler's drain does), through the agent's HTTP protocol.

The ECS agent exists only inside ECS; its stand-in speaks the same protocol (see
tests/contract/test_scaling_protection_agent.py).
"""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import AirflowRuntime, RedisDatabase
from tests.contract.test_scaling_protection_agent import running_agent
from tests.harness import protection_puts, run_python, start_probe_worker, stop_process_group, wait_for

pytestmark = pytest.mark.integration

APP = textwrap.dedent(
    """
    import os
    import time

    from celery import Celery

    from airflow_control_plane.scaling.protection import install_celery_hooks

    app = Celery("probe", broker=os.environ["PROBE_BROKER_URL"])
    app.conf.broker_connection_retry_on_startup = True
    assert install_celery_hooks()


    @app.task(name="probe.sleep")
    def sleep(seconds):
        time.sleep(seconds)
        return seconds
    """
)


def test_worker_protects_from_start_and_keeps_it(
    tmp_path: Path, airflow_runtime: AirflowRuntime, redis_database: RedisDatabase
) -> None:
    (tmp_path / "celery_probe.py").write_text(APP)
    redis_database.client().flushdb()
    with running_agent() as (agent_uri, state):
        env = {
            **os.environ,
            "PYTHONPATH": str(tmp_path),
            "PROBE_BROKER_URL": redis_database.url,
            "ECS_AGENT_URI": agent_uri,
            "WORKER_PROTECTION_INTERVAL_SECONDS": "0.5",
            "WORKER_PROTECTION_EXPIRES_MINUTES": "30",
        }
        # GIVEN a real Celery worker with the hooks, consuming queue "probe"
        log = tmp_path / "worker.log"
        worker = start_probe_worker(airflow_runtime, tmp_path, env, queue="probe", log=log)
        try:
            wait_for(lambda: "ready" in log.read_text(), 90, "the worker to be ready", interval_s=0.2)
            # THEN it is protected before any task reaches it
            wait_for(lambda: True in protection_puts(state), 30, "protection at start", interval_s=0.2)
            # WHEN a 4-second task is sent to it
            send_task = "import celery_probe; celery_probe.sleep.apply_async(args=[4], queue='probe')"
            send = run_python(airflow_runtime, send_task, env=env, cwd=tmp_path, timeout=60)
            assert send.returncode == 0, send.stderr
            # THEN the task runs, and the worker still holds protection once idle again: only the
            # scaler's drain (cancel_consumer, then UpdateTaskProtection) releases it
            wait_for(lambda: "succeeded" in log.read_text(), 60, "the task", interval_s=0.2)
            time.sleep(1.5)  # three keeper intervals
            assert False not in protection_puts(state)
            assert state.enabled
            with state.lock:
                bodies = [b for m, b in state.requests if m == "PUT" and b and b["ProtectionEnabled"]]
            assert bodies[0]["ExpiresInMinutes"] == 30
        finally:
            stop_process_group(worker)
