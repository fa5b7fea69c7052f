"""The autoscaler Lambda's scale-in, end to end: real Celery workers on a real Redis, ECS in moto.

Two real Celery workers (from the Airflow runtime) run the image's protection hooks, each
against its own ECS agent stand-in, and are named ``worker-<ECS task id>@host`` as the image
names them. ECS is moto (cluster, service, tasks, tags, the broker URL secret) with task
protection answered from the same state as each task's agent (moto has none). The handler
decides from the workers' real Celery inspect answers, drains through real ``cancel_consumer``,
releases protection and lowers the count -- and a task published at the instant of the cancel
(the race) keeps its worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType

import boto3
import pytest

from airflow_control_plane.scaling.broker import RedisQueueDepth
from airflow_control_plane.scaling.config import AutoscalerConfig
from airflow_control_plane.scaling.drain import KombuWorkerControl, WorkerControl
from airflow_control_plane.scaling.ecs import EcsWorkerServices
from airflow_control_plane.scaling.events import RecordingPublisher
from airflow_control_plane.scaling.hibernation import FixedFlag
from airflow_control_plane.scaling.memory import EcsTagStore
from airflow_control_plane.scaling.service import ScalingPorts
from tests.conftest import AirflowRuntime, RedisDatabase, function_app, load_event
from tests.contract.ecs_task_protection import (
    REGION,
    create_cluster,
    emulate_task_protection,
    run_worker_tasks,
)
from tests.contract.test_scaling_protection_agent import AgentState, running_agent
from tests.harness import run_python, start_probe_worker, stop_process_group, wait_for
from tests.unit.test_scaling_handler import NoDemand

pytestmark = pytest.mark.integration

CLUSTER = "airflow-test"
SERVICE = "airflow-test-worker-etl"

APP = textwrap.dedent(
    """
    import os
    import time

    from celery import Celery

    from airflow_control_plane.scaling.protection import install_celery_hooks

    app = Celery("probe", broker=os.environ["PROBE_BROKER_URL"])
    app.conf.broker_connection_retry_on_startup = True
    app.conf.task_acks_late = True
    app.conf.worker_prefetch_multiplier = 1
    install_celery_hooks()  # a no-op in the publishing process (no ECS_AGENT_URI)


    @app.task(name="probe.sleep")
    def sleep(seconds, marker):
        time.sleep(seconds)
        open(marker, "a").write("done\\n")
        return seconds
    """
)


class RacingControl:
    """The real control, with a task published to the queue just before the cancel goes out:
    the dispatch-between-decision-and-stop race, made to happen every time."""

    def __init__(self, inner: WorkerControl, publish: Callable[[], None]) -> None:
        self.inner = inner
        self.publish = publish
        self.raced = False

    def busy(self, queue: str, hostnames: Sequence[str] | None = None) -> dict[str, int]:
        return self.inner.busy(queue, hostnames)

    def cancel(self, queue: str, hostnames: Sequence[str]) -> set[str]:
        if not self.raced:
            self.raced = True
            self.publish()
        return self.inner.cancel(queue, hostnames)

    def resume(self, queue: str, hostnames: Sequence[str]) -> set[str]:
        return self.inner.resume(queue, hostnames)


def load_app(monkeypatch: pytest.MonkeyPatch, broker_secret: str) -> ModuleType:
    env = {
        "ENVIRONMENT_NAME": "airflow-test",
        "CLUSTER_NAME": CLUSTER,
        "SCHEDULER_SERVICE": "airflow-test-scheduler",
        "WORKER_QUEUES": json.dumps(
            [{"queue": "etl", "service": SERVICE, "concurrency": 2, "max": 4, "startup_seconds": 60}]
        ),
        "METADATA_DB_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db",
        "BROKER_URL_SECRET_ARN": broker_secret,
        "POWERTOOLS_METRICS_NAMESPACE": "AirflowControlPlane",
        "POWERTOOLS_TRACE_DISABLED": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return function_app("autoscaler")


def start_worker(
    runtime: AirflowRuntime, folder: Path, broker: str, agent_uri: str, task_id: str
) -> subprocess.Popen[bytes]:
    """A worker named as the image names it, ``worker-<ECS task id>@host``."""
    env = {
        **os.environ,
        "PYTHONPATH": str(folder),
        "PROBE_BROKER_URL": broker,
        "ECS_AGENT_URI": agent_uri,
        "WORKER_PROTECTION_INTERVAL_SECONDS": "0.5",
    }
    log = folder / f"worker-{task_id}.log"
    return start_probe_worker(runtime, folder, env, queue="etl", log=log, hostname=f"worker-{task_id}@%h")


def test_lambda_drains_idle_workers_and_keeps_the_one_that_got_a_task(
    tmp_path: Path,
    moto_aws: None,
    monkeypatch: pytest.MonkeyPatch,
    airflow_runtime: AirflowRuntime,
    redis_database: RedisDatabase,
) -> None:
    (tmp_path / "celery_probe.py").write_text(APP)
    redis_database.client().flushdb()
    # GIVEN ECS (moto): the etl worker service with 2 running tasks, the broker URL secret
    ecs = boto3.client("ecs", region_name=REGION)
    create_cluster(ecs, CLUSTER, {SERVICE: 2})
    ids = run_worker_tasks(ecs, CLUSTER, 2)
    secret = boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="broker", SecretString=redis_database.url
    )["ARN"]
    app = load_app(monkeypatch, secret)
    marker = tmp_path / "task-done"
    with ExitStack() as stack:
        agents: dict[str, AgentState] = {}
        workers = []
        for task_id in ids:
            uri, state = stack.enter_context(running_agent())
            agents[task_id] = state
            # AND a real Celery worker per task, named after it, with the image's protection hooks
            worker = start_worker(airflow_runtime, tmp_path, redis_database.url, uri, task_id)
            stack.callback(stop_process_group, worker)
            workers.append(worker)
        table = emulate_task_protection(ecs, CLUSTER, agents)
        names = {task_id: f"worker-{task_id}@" for task_id in ids}
        # THEN every worker protects itself from its start, before any task
        wait_for(
            lambda: all(table.is_enabled(t) for t in ids),
            90,
            "both workers to protect themselves",
            interval_s=0.2,
        )
        real = KombuWorkerControl(redis_database.url)
        wait_for(
            lambda: len(real.busy("etl")) == 2, 60, "both workers to answer Celery inspect", interval_s=0.2
        )
        hostnames = sorted(real.busy("etl"))
        assert all(any(h.startswith(prefix) for h in hostnames) for prefix in names.values())

        def publish() -> None:
            send = (
                f"import celery_probe; celery_probe.sleep.apply_async(args=[4, {str(marker)!r}], queue='etl')"
            )
            env = {**os.environ, "PYTHONPATH": str(tmp_path), "PROBE_BROKER_URL": redis_database.url}
            sent = run_python(airflow_runtime, send, env=env, cwd=tmp_path, timeout=60)
            assert sent.returncode == 0, sent.stderr
            wait_for(
                lambda: sum(real.busy("etl", hostnames).values()) == 1,
                30,
                "a worker to take the task",
                interval_s=0.2,
            )

        racing = RacingControl(app._SecretControl(secret, ""), publish)
        config = AutoscalerConfig.from_env()
        ports = ScalingPorts(
            demand=NoDemand(),
            broker=RedisQueueDepth.from_url(redis_database.url),
            services=EcsWorkerServices(ecs, CLUSTER),
            memory=EcsTagStore(ecs, CLUSTER),
            hibernation=FixedFlag(False),
            publisher=RecordingPublisher(),
            control=racing,
            interval_s=config.interval_s,
        )
        monkeypatch.setattr(app, "build_runtime", lambda: (config, ports))
        # WHEN the scheduled event invokes the handler with both workers idle (idle period 60 s,
        # next run in 60 s: both are due), and a task is published as the cancel goes out
        event = load_event("autoscaler_schedule.json")
        result = app.lambda_handler(event, _Context())
        # THEN the worker that took the task is kept (consuming again, still protected), the
        # other is released and the service's desired count is lowered by one
        (decision,) = result["decisions"]
        assert result["errors"] == [], result["errors"]
        assert decision["action"] == "scale_down"
        assert len(decision["drained"]) == 1
        assert len(decision["kept"]) == 1
        assert "received 1 task(s) during the drain" in decision["reason"]
        drained_id = decision["drained"][0].split("@")[0].removeprefix("worker-")
        kept_id = decision["kept"][0].split("@")[0].removeprefix("worker-")
        described = ecs.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]
        assert described["desiredCount"] == 1
        assert table.is_enabled(kept_id)
        assert not table.is_enabled(drained_id)
        consuming = real._broadcast("active_queues", {}, None)
        assert [q["name"] for q in consuming[decision["kept"][0]]] == ["etl"]
        assert consuming[decision["drained"][0]] == []
        # AND the released worker's keeper does not take the protection back
        time.sleep(2)
        assert not table.is_enabled(drained_id)
        # AND the task finishes on the kept worker, nothing failed
        wait_for(marker.exists, 30, "the task to finish", interval_s=0.2)
        log = (tmp_path / f"worker-{kept_id}.log").read_text()
        assert "succeeded" in log
        assert "Traceback" not in log
        # WHEN ECS stops the released task (what the lower count makes it do), and the next run
        # comes once the kept worker is idle again
        ecs.stop_task(cluster=CLUSTER, task=drained_id, reason="Scaling activity initiated by deployment")
        stop_process_group(workers[ids.index(drained_id)])
        wait_for(
            lambda: real.busy("etl", [decision["kept"][0]]) == {decision["kept"][0]: 0},
            30,
            "idle",
            interval_s=0.2,
        )
        later = {**event, "time": "2026-01-05T06:03:00Z"}
        second = app.lambda_handler(later, _Context())
        # THEN it is drained too and the service goes to zero
        assert second["decisions"][0]["drained"] == [decision["kept"][0]]
        assert ecs.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]["desiredCount"] == 0


class _Context:
    function_name = "autoscaler"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:autoscaler"
    aws_request_id = "52fdfc07-2182-454f-963f-5f0f9a621d72"
