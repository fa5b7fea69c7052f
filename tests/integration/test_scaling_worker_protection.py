"""A real Celery worker (from the Airflow runtime) with the protection hooks installed protects
its ECS task from its start, keeps it while idle or busy, and never releases it itself (the
scaler's drain does), through the agent's HTTP protocol.

The ECS agent exists only inside ECS; its stand-in speaks the same protocol (see
tests/contract/test_scaling_protection_agent.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import AirflowRuntime, RedisDatabase
from tests.contract.test_scaling_protection_agent import AgentState, running_agent

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


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def puts(state: AgentState) -> list[bool]:
    with state.lock:
        return [
            bool(body["ProtectionEnabled"]) for method, body in state.requests if method == "PUT" and body
        ]


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
        log = (tmp_path / "worker.log").open("wb")
        # GIVEN a real Celery worker with the hooks, consuming queue "probe"
        worker = subprocess.Popen(
            [str(airflow_runtime.python), "-m", "celery", "-A", "celery_probe", "worker", "-Q", "probe",
             "-c", "2", "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            wait_for(lambda: "ready" in (tmp_path / "worker.log").read_text(), 90, "the worker to be ready")
            # THEN it is protected before any task reaches it
            wait_for(lambda: True in puts(state), 30, "protection at start")
            # WHEN a 4-second task is sent to it
            send = subprocess.run(
                [str(airflow_runtime.python), "-c",
                 "import celery_probe; celery_probe.sleep.apply_async(args=[4], queue='probe')"],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert send.returncode == 0, send.stderr
            # THEN the task runs, and the worker still holds protection once idle again: only the
            # scaler's drain (cancel_consumer, then UpdateTaskProtection) releases it
            wait_for(lambda: "succeeded" in (tmp_path / "worker.log").read_text(), 60, "the task")
            time.sleep(1.5)  # three keeper intervals
            assert False not in puts(state)
            assert state.enabled
            with state.lock:
                bodies = [b for m, b in state.requests if m == "PUT" and b and b["ProtectionEnabled"]]
            assert bodies[0]["ExpiresInMinutes"] == 30
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=10)
            log.close()
