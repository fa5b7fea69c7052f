"""The two Lambda handlers with moto (Secrets Manager, EventBridge, DynamoDB), a real Git repo
and a real folder."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from types import ModuleType, SimpleNamespace

import boto3
import botocore.session
import pytest
from botocore.stub import ANY, Stubber

from airflow_control_plane.errors import InvalidInputError
from tests.conftest import function_app, load_event

pytestmark = pytest.mark.contract

REGION = "us-east-1"
EVENTS_SECRET = "dagsync-test-webhook-secret"  # the secret events/github_*.json are signed with
CONTEXT = SimpleNamespace(
    function_name="test",
    memory_limit_in_mb=256,
    invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:test",
    aws_request_id="req-1",
)


def _load(name: str) -> ModuleType:
    return function_app(name)


@pytest.fixture
def aws(moto_aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "AirflowControlPlaneTest")
    monkeypatch.setenv("POWERTOOLS_DEV", "false")


def _origin(tmp_path: Path) -> tuple[str, str]:
    repo = tmp_path / "origin"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x.invalid"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x.invalid"}
    (repo / "dags").mkdir()
    (repo / "dags" / "hello.py").write_text("HELLO = 1\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "c"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env=env, capture_output=True)
    sha = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    )
    return f"file://{repo}", sha.stdout.strip()


@pytest.mark.usefixtures("aws")
def test_the_sync_lambda_publishes_on_the_schedule_and_announces_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a repository, a token secret, an event bus and the EFS mount (a folder here)
    url, sha = _origin(tmp_path)
    secret_arn = boto3.client("secretsmanager").create_secret(Name="git-token", SecretString="tok-123")["ARN"]
    events = boto3.client("events")
    events.create_event_bus(Name="airflow")
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="q")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="all", EventBusName="airflow", EventPattern=json.dumps({"source": [{"prefix": ""}]}))
    events.put_targets(Rule="all", EventBusName="airflow", Targets=[{"Id": "q", "Arn": arn}])
    for name, value in {
        "DAG_REPO_URL": url,
        "DAG_REPO_REF": "main",
        "DAGS_TARGET_DIR": str(tmp_path / "efs"),
        "GIT_CACHE_DIR": str(tmp_path / "cache"),
        "GIT_TOKEN_SECRET_ARN": secret_arn,
        "EVENT_BUS_NAME": "airflow",
    }.items():
        monkeypatch.setenv(name, value)
    app = _load("dag_sync")
    # WHEN the schedule fires
    result = app.lambda_handler(load_event("dag_sync_schedule.json"), CONTEXT)
    # THEN the commit is published, the handler says why, and the event is on the bus
    assert (result["action"], result["sha"]) == ("published", sha)
    assert (tmp_path / "efs" / "current" / "dags" / "hello.py").read_text() == "HELLO = 1\n"
    body = json.loads(sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"][0]["Body"])
    assert body["detail-type"] == "DAG release published"
    assert body["detail"]["sha"] == sha
    assert "tok-123" not in json.dumps(body)
    # AND the webhook's hand-off for the same commit is a no-op
    again = app.lambda_handler({"trigger": "webhook", "sha": sha, "delivery_id": "d-1"}, CONTEXT)
    assert again["action"] == "noop"


def test_the_sync_lambda_rejects_unknown_events() -> None:
    app = _load("dag_sync")
    with pytest.raises(InvalidInputError, match="unrecognised event"):
        app.parse_request({"hello": "world"})
    with pytest.raises(InvalidInputError):
        app.parse_request({"trigger": "manual", "rollback_to": 123})
    assert app.parse_request({"trigger": "manual", "rollback_to": "a" * 40}).rollback_to == "a" * 40


@pytest.mark.usefixtures("aws")
def test_the_webhook_lambda_verifies_dedupes_and_hands_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the webhook secret in Secrets Manager and a Lambda client that expects one async invoke
    secret_arn = boto3.client("secretsmanager").create_secret(Name="hook", SecretString=EVENTS_SECRET)["ARN"]
    create_deliveries_table()
    for name, value in {
        "WEBHOOK_SECRET_ARN": secret_arn,
        "DAG_REPO_URL": "https://github.com/example-org/dags.git",  # the repository check derives from it
        "DAG_REPO_REF": "main",
        "DAG_SYNC_FUNCTION_NAME": "dag-sync",
        "DELIVERIES_TABLE": "deliveries",
    }.items():
        monkeypatch.setenv(name, value)
    app = _load("github_webhook")
    lambda_client = botocore.session.get_session().create_client("lambda", region_name=REGION)
    monkeypatch.setattr(app, "_lambda_client", lambda: lambda_client)
    with Stubber(lambda_client) as stub:
        stub.add_response(
            "invoke",
            {"StatusCode": 202},
            {"FunctionName": "dag-sync", "InvocationType": "Event", "Payload": ANY},
        )
        # WHEN the push arrives twice (a redelivery), then a tampered copy, a ping and another branch
        push = load_event("github_push.json")
        first = app.lambda_handler(push, CONTEXT)
        replay = app.lambda_handler(push, CONTEXT)
        tampered = app.lambda_handler({**push, "body": str(push["body"]).replace("main", "mainx")}, CONTEXT)
        ping = app.lambda_handler(load_event("github_ping.json"), CONTEXT)
        other = app.lambda_handler(load_event("github_push_other_branch.json"), CONTEXT)
        stub.assert_no_pending_responses()
    # THEN exactly one hand-off happened and each answer says why
    assert first["statusCode"] == 202
    assert json.loads(first["body"])["sha"] == "2222222222222222222222222222222222222222"
    assert replay["statusCode"] == 200
    assert "already handed off" in json.loads(replay["body"])["reason"]
    assert tampered["statusCode"] == 401
    assert json.loads(ping["body"])["action"] == "pong"
    assert json.loads(other["body"])["action"] == "ignore"
    # AND the webhook's own table remembers the commit (never the unsigned delivery id)
    items = boto3.client("dynamodb").scan(TableName="deliveries")["Items"]
    assert [i["pk"]["S"] for i in items] == ["commit-2222222222222222222222222222222222222222"]


def create_deliveries_table() -> None:
    boto3.client("dynamodb").create_table(
        TableName="deliveries",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )


@pytest.mark.usefixtures("aws")
def test_the_dynamodb_store_claims_a_key_once_until_it_expires() -> None:
    from airflow_control_plane.dagsync.webhook import DynamoDbDeliveryStore

    create_deliveries_table()
    store = DynamoDbDeliveryStore(boto3.client("dynamodb"), "deliveries", ttl_s=100)
    # GIVEN a claimed key THEN it cannot be claimed again before it expires
    assert store.claim("commit-a", now=1_000.0)
    assert not store.claim("commit-a", now=1_050.0)
    # AND after its expiry time (even before DynamoDB's lazy TTL sweep) it can
    assert store.claim("commit-a", now=1_101.0)
    # AND an unclaimed key can be claimed at once
    store.unclaim("commit-a")
    assert store.claim("commit-a", now=1_102.0)
    assert store.claim("commit-b", now=1_102.0)


@pytest.mark.usefixtures("aws")
def test_the_webhook_refuses_to_run_without_a_repository_to_check(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "WEBHOOK_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:hook",
        "DAG_REPO_URL": "https://git.example.com/dags.git",
        "DAG_REPO_REF": "main",
        "DAG_SYNC_FUNCTION_NAME": "dag-sync",
        "DELIVERIES_TABLE": "deliveries",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("GITHUB_REPOSITORY", raising=False)
    app = _load("github_webhook")
    from airflow_control_plane.errors import ConfigError

    # GIVEN no GITHUB_REPOSITORY and a non-GitHub URL THEN the configuration is refused
    with pytest.raises(ConfigError, match="GITHUB_REPOSITORY"):
        app.WebhookConfig.from_env()
    # AND an explicit GITHUB_REPOSITORY wins over the URL
    monkeypatch.setenv("GITHUB_REPOSITORY", "example-org/dags")
    assert app.WebhookConfig.from_env().repository == "example-org/dags"


@pytest.mark.usefixtures("aws")
def test_the_sync_lambda_breaks_a_lease_on_request_and_keeps_releases_when_the_database_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the stack's database settings pointing at a port nobody listens on
    url, _sha = _origin(tmp_path)
    db_secret = boto3.client("secretsmanager").create_secret(
        Name="db", SecretString=json.dumps({"username": "airflow", "password": "pw"})
    )["ARN"]
    for name, value in {
        "DAG_REPO_URL": url,
        "DAGS_TARGET_DIR": str(tmp_path / "efs"),
        "GIT_CACHE_DIR": str(tmp_path / "cache"),
        "KEEP_RELEASES": "1",
        "MIN_RELEASE_AGE_SECONDS": "0",
        "DB_HOST": "127.0.0.1",
        "DB_PORT": "9",
        "DB_SECRET_ARN": db_secret,
        "DB_SSLMODE": "disable",
    }.items():
        monkeypatch.setenv(name, value)
    app = _load("dag_sync")
    app.lambda_handler(load_event("dag_sync_schedule.json"), CONTEXT)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x.invalid"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x.invalid"}
    origin = Path(url.removeprefix("file://"))
    (origin / "dags" / "hello.py").write_text("HELLO = 2\n")
    subprocess.run(
        ["git", "-C", str(origin), "commit", "-qam", "2"], check=True, env=env, capture_output=True
    )
    # WHEN a second commit is published with KEEP_RELEASES=1
    result = app.lambda_handler(load_event("dag_sync_schedule.json"), CONTEXT)
    # THEN nothing is deleted, because the DAG runs using releases could not be read
    assert result["action"] == "published"
    assert result["deleted_releases"] == []
    assert any("could not be read" in w for w in result["warnings"])
    # AND an operator can break a lease left by a sync on another machine
    (tmp_path / "efs" / ".dagsync.lock").write_text(
        json.dumps({"owner": "x", "acquired_at": 0, "expires_at": 9e12, "host": "elsewhere", "pid": 1})
    )
    broken = app.lambda_handler({"trigger": "break_lease"}, CONTEXT)
    assert broken["broken"] is True
    assert not (tmp_path / "efs" / ".dagsync.lock").exists()
