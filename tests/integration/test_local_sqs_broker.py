"""An Airflow DAG run through Celery on SQS: real `afctl up` with ``AFCTL_BROKER=sqs``.

moto's SQS server (ThreadedMotoServer, in this test process, on a free port) is the only
stand-in; everything else is real: PostgreSQL, the api-server, scheduler, dag-processor,
triggerer, Celery workers started by the local autoscaler, and the autoscaler itself (the
Lambda's policy, with ``SqsQueueDepth`` reading ApproximateNumberOfMessages + NotVisible).

It shows: `up` creates the queue and its dead-letter queue as template.yaml does; a fanout run
goes through SQS (its depth is seen above zero, then back to zero, nothing dead-lettered); the
autoscaler reads that depth and starts workers from zero; every task succeeds. Scale-in: Celery
remote control does not work on kombu's SQS transport, so the autoscaler keeps every worker and
says why in its decision (no error counted), and `afctl down` stops them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import boto3
import pytest

from airflow_control_plane.local.autoscaler import read_decisions
from airflow_control_plane.local.ecs import LocalEcs
from tests.harness import DOWN_TIMEOUT_S, LocalEnv, moto_server, wait_for

pytestmark = pytest.mark.integration

QUEUE = "default"
TASKS = 6
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
UNAVAILABLE = "Celery remote control is unavailable on the SQS broker"


@pytest.fixture(scope="module")
def sqs_endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"afsqs-{uuid.uuid4().hex[:8]}-"


@pytest.fixture(scope="module")
def on_sqs(
    local_environments: Callable[..., AbstractContextManager[LocalEnv]], sqs_endpoint: str, prefix: str
) -> Iterator[LocalEnv]:
    with local_environments(
        "sqs",
        AFCTL_BROKER="sqs",
        AFCTL_SQS_ENDPOINT_URL=sqs_endpoint,
        AFCTL_SQS_QUEUE_PREFIX=prefix,
        AFCTL_AUTOSCALE="true",
        AFCTL_AUTOSCALE_INTERVAL="3",
        AFCTL_AUTOSCALE_IDLE_SECONDS="5",
        AFCTL_WORKERS_MAX="2",
        AFCTL_WORKER_CONCURRENCY="4",
        **CREDENTIALS,
    ) as local:
        out = local.run("up")
        assert out.returncode == 0, f"afctl up failed:\n{out.stdout}\n{out.stderr}"
        yield local


def _sqs(endpoint: str) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _attributes(sqs: Any, name: str, *names: str) -> dict[str, str]:
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    return dict(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(names))["Attributes"])


def _depth(sqs: Any, name: str) -> int:
    counts = _attributes(sqs, name, "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")
    return sum(int(v) for v in counts.values())


def _worker(env: LocalEnv) -> tuple[int, int]:
    state = env.service("worker")
    return state.desired, state.running


def _broker_waiting(reason: str) -> int | None:
    found = re.search(r"broker waiting (\d+)", reason)
    return int(found.group(1)) if found else None


def test_a_dag_run_goes_through_celery_on_sqs_with_workers_scaled_from_zero_on_its_depth(
    on_sqs: LocalEnv, sqs_endpoint: str, prefix: str
) -> None:
    # GIVEN the environment on SQS: `up` created the worker queue as the template does
    env = on_sqs
    sqs = _sqs(sqs_endpoint)
    name = f"{prefix}{QUEUE}"
    created = _attributes(sqs, name, "VisibilityTimeout", "RedrivePolicy")
    assert created["VisibilityTimeout"] == "43200"
    assert f"{name}-dlq" in created["RedrivePolicy"]
    assert env.status()["broker"] == f"sqs ({sqs_endpoint}, queues {prefix}*)"
    # AND no worker runs
    wait_for(lambda: _worker(env) == (0, 0), 120, "the worker count to be 0 after up")

    # WHEN the fanout DAG runs 4 mapped tasks (plus plan and reduce)
    run_id = env.api().trigger("fanout", {"task_count": TASKS - 2, "sleep_seconds": 2})
    peak_depth = 0
    peak_workers = 0

    def finished() -> bool:
        nonlocal peak_depth, peak_workers
        peak_depth = max(peak_depth, _depth(sqs, name))
        peak_workers = max(peak_workers, _worker(env)[1])
        rows = env.query("SELECT state FROM dag_run WHERE dag_id = 'fanout' AND run_id = :r", r=run_id)
        return bool(rows) and rows[0][0] in ("success", "failed")

    wait_for(finished, 480, "the fanout run on SQS to finish")

    # THEN every task succeeded, on workers the autoscaler started from zero
    states = env.query(
        "SELECT state, count(*) FROM task_instance WHERE dag_id = 'fanout' AND run_id = :r GROUP BY state",
        r=run_id,
    )
    assert {s: int(n) for s, n in states} == {"success": TASKS}, states
    assert peak_workers >= 1
    # AND the tasks travelled through the SQS queue, which is empty again, nothing dead-lettered
    assert peak_depth >= 1, "no message was ever seen in the SQS queue"
    wait_for(lambda: _depth(sqs, name) == 0, 60, "the SQS queue to be empty")
    assert _depth(sqs, f"{name}-dlq") == 0
    # AND the autoscaler scaled up from 0 and read the SQS depth (never unreadable)
    decisions = read_decisions(env.paths)
    assert any(d["action"] == "scale_up" and d["current"] == 0 for d in decisions), decisions
    waiting = [_broker_waiting(d["reason"]) for d in decisions]
    assert None not in waiting, [d["reason"] for d in decisions if _broker_waiting(d["reason"]) is None]
    assert max(w for w in waiting if w is not None) >= 1, "the autoscaler never saw a message in SQS"
    assert all(not d["errors"] for d in decisions), [d["errors"] for d in decisions if d["errors"]]
    first_up = next(d for d in decisions if d["action"] == "scale_up" and d["current"] == 0)
    print(
        f"run on SQS: peak SQS depth {peak_depth}, peak workers {peak_workers}, "
        f"highest depth the autoscaler read {max(w for w in waiting if w is not None)}; "
        f"first scale-up: {first_up['reason']}"
    )


def test_without_remote_control_on_sqs_the_autoscaler_keeps_every_worker_and_says_why(
    on_sqs: LocalEnv,
) -> None:
    # GIVEN the workers the run started, now idle past the 5 s idle period
    env = on_sqs
    desired, running = _worker(env)
    assert desired >= 1, (desired, running)
    assert running == desired, (desired, running)
    seen = len(read_decisions(env.paths))

    # WHEN the autoscaler evaluates a few more times
    def held() -> list[dict[str, Any]]:
        return [d for d in read_decisions(env.paths)[seen:] if d["demand"] == 0]

    wait_for(lambda: len(held()) >= 3, 60, "three evaluations with nothing to run")

    # THEN it keeps every worker, naming the missing remote control, without counting an error
    for decision in held():
        assert decision["action"] == "hold", decision
        assert decision["target"] == decision["current"] == desired, decision
        assert UNAVAILABLE in decision["reason"], decision["reason"]
        assert "never scale down" in decision["reason"], decision["reason"]
        assert decision["errors"] == [], decision
    assert _worker(env) == (desired, running)
    # AND hibernating stops them (it waits on the metadata database, not on Celery control)
    out = env.run("down", timeout=DOWN_TIMEOUT_S)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not LocalEcs(env.paths).is_running()
