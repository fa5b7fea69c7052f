"""SqsQueueDepth against moto's SQS: waiting + in-flight, kombu's queue naming, failures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from airflow_control_plane.errors import TransientError
from airflow_control_plane.scaling.broker import SqsQueueDepth, kombu_sqs_queue_name

pytestmark = pytest.mark.contract


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for key, value in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


def test_depth_is_visible_plus_in_flight(sqs: Any) -> None:
    # GIVEN the SQS queue of Celery queue "etl" with 5 messages, 2 of them received by a worker
    url = sqs.create_queue(QueueName="env-etl", Attributes={"VisibilityTimeout": "600"})["QueueUrl"]
    for i in range(5):
        sqs.send_message(QueueUrl=url, MessageBody=str(i))
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2)["Messages"]
    assert len(received) == 2
    depth = SqsQueueDepth(sqs, queue_name_prefix="env-")
    # THEN the depth counts the 3 waiting and the 2 in flight
    assert depth.waiting("etl") == 5
    # AND an acknowledged (deleted) message no longer counts
    sqs.delete_message(QueueUrl=url, ReceiptHandle=received[0]["ReceiptHandle"])
    assert depth.waiting("etl") == 4


def test_a_missing_queue_is_a_transient_error_never_zero(sqs: Any) -> None:
    with pytest.raises(TransientError, match="SQS queue of 'nope'"):
        SqsQueueDepth(sqs, queue_name_prefix="env-").waiting("nope")


@pytest.mark.parametrize(
    ("queue", "prefix", "expected"),
    [
        ("default", "", "default"),
        ("etl_nightly", "env-", "env-etl_nightly"),
        ("a.b", "env-", "env-a-b"),
        ("a:b", "", "a_b"),
        ("jobs.fifo", "", "jobs.fifo"),
    ],
)
def test_queue_names_follow_kombu(queue: str, prefix: str, expected: str) -> None:
    assert kombu_sqs_queue_name(queue, queue_name_prefix=prefix) == expected
