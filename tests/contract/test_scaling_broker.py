"""Celery queue depth against a real Redis; the key layout checked against kombu's own producer.

celery and kombu live only in the runtime environment (.venv), so a real Celery app publishes
from a subprocess there, and this test reads the result with the control plane's adapter.
"""

from __future__ import annotations

import socket
import subprocess
import textwrap

import pytest

from airflow_control_plane.errors import TransientError
from airflow_control_plane.scaling.broker import KOMBU_PRIORITY_SEP, RedisQueueDepth, kombu_queue_keys
from tests.conftest import AirflowRuntime, RedisDatabase

pytestmark = pytest.mark.contract

PUBLISH = textwrap.dedent(
    """
    import sys
    from celery import Celery

    app = Celery("probe", broker=sys.argv[1])
    app.conf.broker_connection_retry_on_startup = False
    # Two plain tasks and one with priority 5, which kombu files under priority step 3.
    app.send_task("airflow.providers.celery.executors.celery_executor_utils.execute_command",
                  args=[["airflow", "tasks", "run"]], queue="etl")
    app.send_task("airflow.providers.celery.executors.celery_executor_utils.execute_command",
                  args=[["airflow", "tasks", "run"]], queue="etl")
    app.send_task("airflow.providers.celery.executors.celery_executor_utils.execute_command",
                  args=[["airflow", "tasks", "run"]], queue="etl", priority=5)
    app.send_task("airflow.providers.celery.executors.celery_executor_utils.execute_command",
                  args=[["airflow", "tasks", "run"]], queue="default")
    """
)


def test_depth_counts_every_priority_list(redis_database: RedisDatabase) -> None:
    # GIVEN messages in the lists kombu uses for queue "etl" (plain and two priority steps)
    client = redis_database.client()
    client.flushdb()
    keys = kombu_queue_keys("etl")
    assert keys == [
        "etl",
        f"etl{KOMBU_PRIORITY_SEP}3",
        f"etl{KOMBU_PRIORITY_SEP}6",
        f"etl{KOMBU_PRIORITY_SEP}9",
    ]
    client.lpush(keys[0], "m1", "m2")
    client.lpush(keys[2], "m3")
    client.lpush("etl-other", "not ours")
    # WHEN the adapter reads the depth
    depth = RedisQueueDepth(client).waiting("etl")
    # THEN it sums every priority list of the queue and nothing else
    assert depth == 3
    assert RedisQueueDepth(client).waiting("default") == 0


def test_global_key_prefix_is_honoured(redis_database: RedisDatabase) -> None:
    client = redis_database.client()
    client.flushdb()
    client.lpush("airflow:etl", "m1")
    assert RedisQueueDepth(client, global_keyprefix="airflow:").waiting("etl") == 1
    assert RedisQueueDepth(client).waiting("etl") == 0


def test_depth_of_messages_a_real_celery_producer_sent(
    redis_database: RedisDatabase, airflow_runtime: AirflowRuntime
) -> None:
    # GIVEN a real Celery app (from the Airflow runtime) that sent 3 tasks to "etl", one with priority 5
    client = redis_database.client()
    client.flushdb()
    result = subprocess.run(
        [str(airflow_runtime.python), "-c", PUBLISH, redis_database.url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # THEN kombu left them in exactly the keys the adapter reads
    lists = {k.decode() for k in client.keys("etl*") if client.type(k) == b"list"}
    assert lists == {"etl", f"etl{KOMBU_PRIORITY_SEP}3"}
    # AND the adapter counts all three, and the one on "default" separately
    assert RedisQueueDepth.from_url(redis_database.url).waiting("etl") == 3
    assert RedisQueueDepth.from_url(redis_database.url).waiting("default") == 1


def test_redis_down_is_a_transient_error() -> None:
    # GIVEN a port where nothing listens
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # WHEN the depth is read THEN it fails as a TransientError naming the queue
    with pytest.raises(TransientError, match=r"broker unreadable \(queue 'etl'\)"):
        RedisQueueDepth.from_url(f"redis://127.0.0.1:{port}/0").waiting("etl")
