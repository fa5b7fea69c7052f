"""The SQS broker option against moto's SQS server, with real Celery processes.

moto's ThreadedMotoServer runs SQS on a free local port; the queue is created as template.yaml
creates it (dead-letter queue, visibility timeout). A real Celery producer (the Airflow runtime
environment: celery 5.6, kombu 5.7 SQS transport with pycurl) publishes tasks; the autoscaler
reads the depth through :class:`SqsQueueDepth` and decides to scale up on it; a real Celery
worker consumes every task, and the depth returns to zero.

A DAG run through Airflow's Celery executor on SQS is in test_local_sqs_broker.py; Celery
remote control over SQS (what the drain would need) in test_sqs_broker_remote_control.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest

from airflow_control_plane.poll import poll_until
from airflow_control_plane.scaling.broker import SqsQueueDepth, kombu_sqs_queue_name
from airflow_control_plane.scaling.config import QueueScaling
from airflow_control_plane.scaling.drain import InMemoryWorkerControl
from airflow_control_plane.scaling.ecs import InMemoryWorkerServices, ServiceCounts
from airflow_control_plane.scaling.events import RecordingPublisher
from airflow_control_plane.scaling.hibernation import FixedFlag
from airflow_control_plane.scaling.memory import InMemoryStore
from airflow_control_plane.scaling.policy import Action
from airflow_control_plane.scaling.service import ScalingPorts, evaluate
from tests.harness import moto_server
from tests.unit.test_scaling_service import FakeDemand

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNTIME_PY = REPO_ROOT / ".venv" / "bin" / "python"
PREFIX = "airflow-test-"
QUEUE = "default"
TASKS = 6
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def sqs_endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


def sqs_app_settings(endpoint: str, prefix: str, queue: str) -> str:
    """The settings of a Celery test app on moto's SQS (module source, after ``app = Celery(...)``):
    the template's transport options (prefix, 12 h visibility) with short polls, the queue
    predefined at the server, late acks and a prefetch of one, as Airflow runs its workers."""
    return textwrap.dedent(
        f"""
        app.conf.broker_transport_options = {{
            "region": "us-east-1", "is_secure": False, "queue_name_prefix": "{prefix}",
            "visibility_timeout": 43200, "wait_time_seconds": 1, "polling_interval": 0.2,
            "predefined_queues": {{"{prefix}{queue}": {{"url": "{endpoint}/123456789012/{prefix}{queue}",
                "access_key_id": "testing", "secret_access_key": "testing"}}}},
        }}
        app.conf.task_default_queue = "{queue}"
        app.conf.task_acks_late = True
        app.conf.worker_prefetch_multiplier = 1
        """
    )


def _app_module(tmp_path: Path, endpoint: str) -> Path:
    port = endpoint.rsplit(":", 1)[1]
    (tmp_path / "sqs_app.py").write_text(
        "from pathlib import Path\n"
        "from celery import Celery\n\n"
        f'app = Celery("sqs_app", broker="sqs://testing:testing@127.0.0.1:{port}/")\n'
        + sqs_app_settings(endpoint, PREFIX, QUEUE)
        + textwrap.dedent(
            f"""

            @app.task
            def touch(name):
                Path("{tmp_path}", name).write_text("done")
                return name
            """
        )
    )
    return tmp_path


def test_celery_on_sqs_and_the_autoscaler_scaling_on_its_depth(sqs_endpoint: str, tmp_path: Path) -> None:
    # GIVEN the Celery queue's SQS queue as the template creates it (DLQ, long visibility)
    sqs = boto3.client("sqs", endpoint_url=sqs_endpoint, region_name="us-east-1", **_keys())
    dlq = sqs.create_queue(QueueName=f"{PREFIX}{QUEUE}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    name = kombu_sqs_queue_name(QUEUE, queue_name_prefix=PREFIX)
    sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": "43200",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}),
        },
    )
    workdir = _app_module(tmp_path, sqs_endpoint)
    env = {**os.environ, **CREDENTIALS, "PYTHONPATH": str(workdir)}

    # WHEN a real Celery producer publishes six tasks
    publish = f"from sqs_app import touch\nfor i in range({TASKS}): touch.delay(f'task-{{i}}')\n"
    subprocess.run([str(RUNTIME_PY), "-c", publish], cwd=workdir, env=env, check=True, timeout=120)

    # THEN the SQS depth the autoscaler reads is six
    depth = SqsQueueDepth(sqs, queue_name_prefix=PREFIX)
    assert depth.waiting(QUEUE) == TASKS
    # AND on that depth alone (database empty) it scales the queue's service from 0 to 3
    scaling = QueueScaling(QUEUE, "airflow-test-worker-default", 2, 0, 5, idle_seconds=600)
    services = InMemoryWorkerServices({scaling.service: ServiceCounts(0, 0)})
    ports = ScalingPorts(
        demand=FakeDemand({}),
        broker=depth,
        services=services,
        memory=InMemoryStore(),
        hibernation=FixedFlag(False),
        publisher=RecordingPublisher(),
        control=InMemoryWorkerControl({}, {}),
        settle_s=0.0,
    )
    run = evaluate((scaling,), ports, datetime(2026, 1, 5, 9, tzinfo=UTC))
    assert run.errors == ()
    assert run.outcomes[0].decision.action is Action.SCALE_UP
    assert services.describe(scaling.service).desired == 3
    assert "broker waiting 6" in run.outcomes[0].decision.reason

    # WHEN a real Celery worker consumes the queue
    worker = subprocess.Popen(
        [
            str(RUNTIME_PY),
            "-m",
            "celery",
            "-A",
            "sqs_app",
            "worker",
            "-Q",
            QUEUE,
            "-c",
            "2",
            "--pool",
            "threads",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
        ],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        # THEN every task runs, and every message is acknowledged (deleted): depth 0
        poll_until(
            lambda: all((workdir / f"task-{i}").exists() for i in range(TASKS)),
            timeout_s=90,
            interval_s=0.5,
            what="Celery worker on SQS ran every task",
        )
        poll_until(lambda: depth.waiting(QUEUE) == 0, timeout_s=30, interval_s=0.5, what="SQS queue drained")
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    # AND nothing went to the dead-letter queue
    assert (
        sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"][
            "ApproximateNumberOfMessages"
        ]
        == "0"
    )


def _keys() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
