"""The local runtime's SQS broker queues against moto's SQS, checked against template.yaml's
broker queues: `afctl up` must create what a deployed stack has."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from airflow_control_plane.local.sqs_broker import SqsBroker

pytestmark = pytest.mark.contract


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for key, value in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


def test_up_creates_the_queue_and_dead_letter_queue_the_template_creates(
    sqs: Any, template: dict[str, Any]
) -> None:
    # GIVEN the template's broker queue of the default worker queue and its dead-letter queue
    queue = template["Resources"]["Worker1BrokerQueue"]["Properties"]
    dlq = template["Resources"]["Worker1BrokerDeadLetterQueue"]["Properties"]
    broker = SqsBroker("us-east-1", "dev-")
    # WHEN the local runtime ensures the queue, twice (every `up` does)
    assert broker.ensure_queue(sqs, "default") == "dev-default"
    broker.ensure_queue(sqs, "default")
    # THEN the queue has the template's attributes and redrive to "<name>-dlq"
    url = sqs.get_queue_url(QueueName="dev-default")["QueueUrl"]
    got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert int(got["VisibilityTimeout"]) == queue["VisibilityTimeout"]
    assert int(got["MessageRetentionPeriod"]) == queue["MessageRetentionPeriod"]
    assert int(got["ReceiveMessageWaitTimeSeconds"]) == queue["ReceiveMessageWaitTimeSeconds"]
    redrive = json.loads(got["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == queue["RedrivePolicy"]["maxReceiveCount"]
    assert redrive["deadLetterTargetArn"].endswith(":dev-default-dlq")
    assert queue["QueueName"] == {"Fn::Sub": "${EnvironmentName}-default"}
    assert dlq["QueueName"] == {"Fn::Sub": "${EnvironmentName}-default-dlq"}
    dlq_url = sqs.get_queue_url(QueueName="dev-default-dlq")["QueueUrl"]
    retention = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["MessageRetentionPeriod"])
    assert int(retention["Attributes"]["MessageRetentionPeriod"]) == dlq["MessageRetentionPeriod"]
    # AND the autoscaler's depth reader (its own client) finds it: one message sent, one counted
    sqs.send_message(QueueUrl=url, MessageBody="task")
    assert broker.depth().waiting("default") == 1
