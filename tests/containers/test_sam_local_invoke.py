"""Every function of the template under `sam local invoke`, with every sample event in events/.

`sam build` builds the functions and the control-plane layer; `sam local invoke
--skip-pull-image --docker-network host` runs each one in a Lambda container (SAM CLI's own
runtime interface emulator on the python3.11 base image: the official one, or the stand-in
from .ci/standin-lambda-base.sh where it cannot be pulled) against local services:

- the AWS APIs (Secrets Manager, ECS, EventBridge, DynamoDB, Lambda) on a moto server, reached
  through ``AWS_ENDPOINT_URL`` (boto3 honours it; no function code knows about it);
- the metadata database: a fresh PostgreSQL database with the real Airflow schema;
- the broker: this run's Redis db;
- Git: a real repository served over smart HTTP, the EFS mount a host folder bound at the
  template's ``LocalMountPath``;
- the api-server's health endpoint: a port nobody listens on (the bring-up's first polls);
- the CloudFormation response URL of the custom resources: a local HTTPS server whose
  certificate authority is given to the function (``SSL_CERT_FILE``).

Each test asserts what the function did (its result, and the state it changed), not that it ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import REPO_ROOT, PostgresDatabase, RedisDatabase, load_event
from tests.containers.docker import docker, engine_available, free_port
from tests.containers.sam_local import (
    LAMBDA_BASE_IMAGE,
    RAPID_REPOSITORY,
    SamLocal,
    check_event_map,
    function_mounts,
    template_functions,
)
from tests.containers.taskdefs import translated_template

pytestmark = pytest.mark.containers

REQUIRED = os.environ.get("AFCTL_REQUIRE_CONTAINERS", "") == "1"
REGION = "us-east-1"
EVENTS_SECRET = "dagsync-test-webhook-secret"  # the secret events/github_*.json are signed with
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}
# Settings the template gives every function (Globals) and SAM passes on as declared.
COMMON = {"POWERTOOLS_LOG_LEVEL": "INFO", "POWERTOOLS_METRICS_NAMESPACE": "AirflowControlPlaneTest"}


@pytest.fixture(scope="module")
def translated() -> dict[str, Any]:
    return translated_template(REPO_ROOT / "template.yaml")


@pytest.fixture(scope="module")
def sam(translated: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[SamLocal]:
    """`sam build` once for the module; the rapid images SAM builds for this run are removed after."""
    reason = None
    if not engine_available():
        reason = "no Docker engine answers"
    elif subprocess.run(
        ["docker", "image", "inspect", LAMBDA_BASE_IMAGE], capture_output=True, check=False
    ).returncode:
        reason = f"the Lambda base image {LAMBDA_BASE_IMAGE} is not present (.ci/standin-lambda-base.sh)"
    if reason:
        if REQUIRED:
            pytest.fail(f"{reason} (AFCTL_REQUIRE_CONTAINERS=1: `make containers-test` provides it)")
        pytest.skip(reason)
    before = set(docker("images", "-q", RAPID_REPOSITORY).split())
    local = SamLocal(
        build_dir=tmp_path_factory.mktemp("sam-build"),
        declared=template_functions(translated),
        env={**CREDENTIALS, "SAM_CLI_TELEMETRY": "0", "AWS_REGION": REGION},
    )
    local.build(REPO_ROOT / ".aws-sam" / "cache")
    yield local
    local.remove_containers()
    created = set(docker("images", "-q", RAPID_REPOSITORY).split()) - before
    if created:
        docker("rmi", "-f", *sorted(created), check=False)


@dataclass(frozen=True)
class Moto:
    url: str

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    # Lambda invocations (the webhook's hand-off) are recorded, not run in another container.
    import urllib.request

    request = urllib.request.Request(  # noqa: S310 - the local moto server
        f"{url}/moto-api/config",
        data=json.dumps({"lambda": {"use_docker": False}}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - local moto server
        pass
    yield Moto(url)
    server.stop()


@pytest.fixture(scope="module")
def airflow_db(migrated_database_factory: Callable[[str], PostgresDatabase]) -> PostgresDatabase:
    return migrated_database_factory("samlocal")


def _insert_task_instances(database: PostgresDatabase, *states: str, queue: str = "default") -> None:
    connection = database.connect()
    try:
        connection.run("SET session_replication_role = replica")  # FK triggers off: no DAG runs needed
        for state in states:
            connection.run(
                "INSERT INTO task_instance"
                " (id, task_id, dag_id, run_id, try_number, pool, pool_slots, state, queue) VALUES"
                " (CAST(:id AS uuid), :task, 'samlocal_dag', 'manual__1', 1, 'default_pool', 1,"
                " :state, :queue)",
                id=str(uuid.uuid4()),
                task=f"t_{uuid.uuid4().hex[:8]}",
                state=state,
                queue=queue,
            )
    finally:
        connection.close()


def _secret(moto: Moto, name: str, value: str) -> str:
    return str(moto.client("secretsmanager").create_secret(Name=name, SecretString=value)["ARN"])


def _db_secret(moto: Moto, database: PostgresDatabase) -> str:
    """The read-only credentials secret in the RDS-managed JSON form."""
    secret = {"username": database.user, "password": "", "host": database.host, "port": database.port}
    arn = moto.client("secretsmanager").create_secret(
        Name=f"db-{uuid.uuid4().hex[:8]}", SecretString=json.dumps(secret)
    )["ARN"]
    return str(arn)


def _db_variables(moto: Moto, database: PostgresDatabase) -> dict[str, str]:
    return {
        "DB_HOST": database.host,
        "DB_PORT": str(database.port),
        "DB_NAME": database.name,
        "DB_SECRET_ARN": _db_secret(moto, database),
        "DB_SSLMODE": "disable",  # the local server has no TLS; RDS forces it (the template says require)
    }


def test_every_sample_event_targets_a_function_of_the_template(translated: dict[str, Any]) -> None:
    # GIVEN events/ and the template THEN every event is a function's or a state machine's, and
    # every function has at least one sample event
    check_event_map(translated)


def test_bringup_validate_plans_a_bring_up_and_normalises_a_hibernate(sam: SamLocal, moto: Moto) -> None:
    # WHEN the validation function gets the sample bring-up and hibernate inputs
    bringup = sam.invoke("BringUpValidateFunction", "bringup_validate.json", COMMON, endpoint_url=moto.url)
    hibernate = sam.invoke(
        "BringUpValidateFunction", "hibernate_validate.json", COMMON, endpoint_url=moto.url
    )
    # THEN the bring-up is planned from the observed counts (defaults filled in)
    plan = bringup.payload["plan"]
    assert not plan["alreadyRunning"], plan
    assert {u["key"]: u["desired"] for u in plan["workerUpdates"]} == {"worker:default": 2, "worker:heavy": 3}
    assert bringup.payload["request"]["services"] == {
        "api-server": 1,
        "scheduler": 1,
        "dag-processor": 1,
        "triggerer": 1,
    }
    # AND the hibernate request comes back normalised
    assert hibernate.payload["request"]["drain"] == {"pollSeconds": 30, "maxPolls": 20}
    assert hibernate.payload["request"]["force"] is False


def test_health_gate_reports_an_unreachable_api_server_as_not_healthy_yet(sam: SamLocal, moto: Moto) -> None:
    # GIVEN an api-server URL where nothing listens (a bring-up's first polls)
    variables = {**COMMON, "API_SERVER_URL": f"http://127.0.0.1:{free_port()}"}
    # WHEN the gate runs with the sample event
    result = sam.invoke("HealthGateFunction", "health_gate.json", variables, endpoint_url=moto.url)
    # THEN it raises the typed error the state machine retries, saying why
    assert result.error_type == "NotHealthyYet", result.payload
    assert result.payload["errorMessage"]


def test_drain_check_counts_the_real_task_instances(
    sam: SamLocal, moto: Moto, airflow_db: PostgresDatabase
) -> None:
    # GIVEN one running and one queued task instance in the metadata database
    _insert_task_instances(airflow_db, "running", "queued", "success")
    try:
        # WHEN the drain check runs with the sample event
        result = sam.invoke(
            "DrainCheckFunction",
            "drain_check.json",
            {**COMMON, **_db_variables(moto, airflow_db)},
            endpoint_url=moto.url,
        )
    finally:
        connection = airflow_db.connect()
        connection.run("DELETE FROM task_instance WHERE dag_id = 'samlocal_dag'")
        connection.close()
    # THEN hibernate waits for them, and the counts are the database's
    assert (result.payload["action"], result.payload["running"], result.payload["queued"]) == ("wait", 1, 1)
    assert result.payload["reason"]


def test_autoscaler_scales_the_worker_service_from_the_queued_task(
    sam: SamLocal, moto: Moto, airflow_db: PostgresDatabase, redis_database: RedisDatabase
) -> None:
    # GIVEN the cluster with a running scheduler and a worker service at 0, the metadata
    # database and broker URLs as secrets, and one queued task on the default queue
    ecs = moto.client("ecs")
    cluster = f"samlocal-{uuid.uuid4().hex[:6]}"
    ecs.create_cluster(clusterName=cluster)
    ecs.register_task_definition(
        family="samlocal", containerDefinitions=[{"name": "c", "image": "x", "cpu": 256, "memory": 512}]
    )
    for service, count in (("airflow-dev-scheduler", 1), ("airflow-dev-worker-default", 0)):
        ecs.create_service(
            cluster=cluster, serviceName=service, taskDefinition="samlocal", desiredCount=count
        )
    variables = {
        **COMMON,
        "ENVIRONMENT_NAME": "airflow-dev",
        "CLUSTER_NAME": cluster,
        "SCHEDULER_SERVICE": "airflow-dev-scheduler",
        "WORKER_QUEUES": json.dumps(
            [
                {
                    "queue": "default",
                    "service": "airflow-dev-worker-default",
                    "concurrency": 16,
                    "min": 0,
                    "max": 4,
                    "capacity_provider": "FARGATE",
                }
            ]
        ),
        "METADATA_DB_SECRET_ARN": _secret(moto, f"{cluster}-db", airflow_db.dsn),
        "BROKER_URL_SECRET_ARN": _secret(moto, f"{cluster}-broker", redis_database.url),
    }
    _insert_task_instances(airflow_db, "queued")

    def desired() -> int:
        services = ecs.describe_services(cluster=cluster, services=["airflow-dev-worker-default"])["services"]
        return int(services[0]["desiredCount"])

    try:
        # WHEN the operator's dry run, then the schedule, invoke the autoscaler
        dry = sam.invoke("AutoscalerFunction", "autoscaler_dry_run.json", variables, endpoint_url=moto.url)
        after_dry = desired()
        scheduled = sam.invoke(
            "AutoscalerFunction", "autoscaler_schedule.json", variables, endpoint_url=moto.url
        )
    finally:
        connection = airflow_db.connect()
        connection.run("DELETE FROM task_instance WHERE dag_id = 'samlocal_dag'")
        connection.close()
    # THEN the dry run decides the scale-up and changes nothing
    assert dry.payload.get("dryRun") is True, dry.payload
    [decision] = dry.payload["decisions"]
    assert (decision["action"], decision["from"], decision["to"]) == ("scale_up", 0, 1), decision
    assert decision["applied"] is False
    assert after_dry == 0
    assert dry.payload["errors"] == []
    # AND the scheduled run applies it to the ECS service
    assert scheduled.payload["dryRun"] is False, scheduled.payload
    [decision] = scheduled.payload["decisions"]
    assert (decision["action"], decision["to"], decision["applied"]) == ("scale_up", 1, True), decision
    assert scheduled.payload["errors"] == []
    assert desired() == 1


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x.invalid"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x.invalid"}
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, env=env, capture_output=True, text=True
    ).stdout.strip()


def test_dag_sync_publishes_the_branch_tip_onto_the_mounted_file_system(
    sam: SamLocal,
    moto: Moto,
    airflow_db: PostgresDatabase,
    translated: dict[str, Any],
    tmp_path: Path,
) -> None:
    from airflow_control_plane.commands.bench_dagsync import serve_http

    # GIVEN a real repository served over Git smart HTTP, and the EFS mount (a host folder bound
    # at the template's LocalMountPath)
    origin = tmp_path / "origin"
    (origin / "dags").mkdir(parents=True)
    (origin / "dags" / "hello.py").write_text("HELLO = 1\n")
    _git(origin, "init", "-q", "-b", "main")
    _git(origin, "add", "-A")
    _git(origin, "commit", "-q", "-m", "first DAG")
    sha = _git(origin, "rev-parse", "HEAD")
    [mount_path] = function_mounts(translated, "DagSyncFunction")
    efs = tmp_path / "efs"
    efs.mkdir()
    with serve_http(origin) as url:
        variables = {
            **COMMON,
            "DAG_REPO_URL": url,
            "DAG_REPO_REF": "main",
            "DAGS_TARGET_DIR": mount_path,
            "SYNC_DEADLINE_SECONDS": "120",
            "GIT_TOKEN_SECRET_ARN": "",
            **_db_variables(moto, airflow_db),
        }
        # WHEN the schedule fires
        result = sam.invoke(
            "DagSyncFunction",
            "dag_sync_schedule.json",
            variables,
            endpoint_url=moto.url,
            mounts={str(efs): mount_path},
        )
    # THEN the commit is published as a release and `current` points at it, on the host's folder
    assert (result.payload["action"], result.payload["sha"]) == ("published", sha), result.payload
    assert (efs / "current" / "dags" / "hello.py").read_text() == "HELLO = 1\n"


def test_github_webhook_answers_each_sample_delivery(sam: SamLocal, moto: Moto) -> None:
    # GIVEN the webhook secret, the deliveries table and the sync function to hand off to (moto)
    secrets, dynamodb, lambdas = moto.client("secretsmanager"), moto.client("dynamodb"), moto.client("lambda")
    table = f"deliveries-{uuid.uuid4().hex[:6]}"
    dynamodb.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    role = moto.client("iam").create_role(
        RoleName=f"sync-{uuid.uuid4().hex[:6]}", AssumeRolePolicyDocument="{}"
    )["Role"]["Arn"]
    sync_function = lambdas.create_function(
        FunctionName=f"dag-sync-{uuid.uuid4().hex[:6]}",
        Runtime="python3.11",
        Role=role,
        Handler="app.lambda_handler",
        Code={"ZipFile": _zip({"app.py": "def lambda_handler(event, context):\n    return event\n"})},
    )["FunctionName"]
    variables = {
        **COMMON,
        "WEBHOOK_SECRET_ARN": secrets.create_secret(Name=f"{table}-hook", SecretString=EVENTS_SECRET)["ARN"],
        "DAG_REPO_URL": "https://github.com/example-org/dags.git",
        "DAG_REPO_REF": "main",
        "GITHUB_REPOSITORY": "example-org/dags",
        "DAG_SYNC_FUNCTION_NAME": sync_function,
        "DELIVERIES_TABLE": table,
    }
    # WHEN GitHub's ping, a push to the branch and a push to another branch arrive
    ping = sam.invoke("GithubWebhookFunction", "github_ping.json", variables, endpoint_url=moto.url)
    push = sam.invoke("GithubWebhookFunction", "github_push.json", variables, endpoint_url=moto.url)
    other = sam.invoke(
        "GithubWebhookFunction", "github_push_other_branch.json", variables, endpoint_url=moto.url
    )
    # THEN each answer says what was done, and only the push was handed off (and remembered)
    assert (ping.payload["statusCode"], ping.body()["action"]) == (200, "pong"), ping.payload
    assert push.payload["statusCode"] == 202, push.payload
    assert push.body()["sha"] == "2" * 40
    assert other.body()["action"] == "ignore", other.payload
    items = dynamodb.scan(TableName=table)["Items"]
    assert [item["pk"]["S"] for item in items] == [f"commit-{'2' * 40}"]


def _zip(files: dict[str, str]) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


@dataclass
class ResponseServer:
    """CloudFormation's pre-signed response URL, played by a local HTTPS server (PUTs recorded)."""

    url: str
    ca_dir: Path
    received: list[dict[str, Any]]


@pytest.fixture(scope="module")
def cfn_response_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ResponseServer]:
    import datetime
    import ipaddress
    import ssl
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    # A self-signed certificate for 127.0.0.1: the function trusts it through SSL_CERT_FILE.
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    ca_dir = tmp_path_factory.mktemp("cfn-ca")
    (ca_dir / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (ca_dir / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.append({"path": self.path, "body": json.loads(body)})
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ca_dir / "ca.pem", ca_dir / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ResponseServer(f"https://127.0.0.1:{server.server_port}", ca_dir, received)
    server.shutdown()
    server.server_close()


def _custom_resource_event(
    name: str, tmp_path: Path, response_url: str, properties: dict[str, Any]
) -> tuple[Path, dict[str, Any]]:
    event = load_event(name)
    event["ResponseURL"] = f"{response_url}/{event['LogicalResourceId']}?X-Amz-Signature=local"
    event["ResourceProperties"] = {**event["ResourceProperties"], **properties}  # type: ignore[dict-item]
    path = tmp_path / name
    path.write_text(json.dumps(event))
    return path, event


def test_fernet_key_custom_resource_writes_a_key_and_answers_cloudformation(
    sam: SamLocal, moto: Moto, cfn_response_server: ResponseServer, tmp_path: Path
) -> None:
    # GIVEN the stack's placeholder secret, and the sample Create with a local response URL
    secrets = moto.client("secretsmanager")
    arn = secrets.create_secret(Name=f"fernet-{uuid.uuid4().hex[:6]}", SecretString="placeholder")["ARN"]
    path, event = _custom_resource_event(
        "fernet_key_create.json", tmp_path, cfn_response_server.url, {"SecretArn": arn}
    )
    # WHEN CloudFormation's request reaches the function
    sam.invoke(
        "FernetKeyFunction",
        path,
        COMMON,
        endpoint_url=moto.url,
        mounts={str(cfn_response_server.ca_dir): "/etc/cfn-test-ca"},
        extra_env={"SSL_CERT_FILE": "/etc/cfn-test-ca/ca.pem"},
    )
    # THEN the secret holds a Fernet key, and CloudFormation got SUCCESS without the key in it
    value = secrets.get_secret_value(SecretId=arn)["SecretString"]
    from cryptography.fernet import Fernet

    Fernet(value.encode())  # raises on anything but a valid Fernet key
    [answer] = [r for r in cfn_response_server.received if r["body"]["RequestId"] == event["RequestId"]]
    assert answer["body"]["Status"] == "SUCCESS", answer
    assert value not in json.dumps(answer)


def test_service_counts_custom_resource_keeps_the_running_counts(
    sam: SamLocal, moto: Moto, cfn_response_server: ResponseServer, tmp_path: Path
) -> None:
    # GIVEN a cluster where the api-server runs 1, the scheduler 1 and the worker service 3,
    # and the dag-processor and triggerer services do not exist yet
    ecs = moto.client("ecs")
    cluster = f"counts-{uuid.uuid4().hex[:6]}"
    ecs.create_cluster(clusterName=cluster)
    ecs.register_task_definition(
        family="counts", containerDefinitions=[{"name": "c", "image": "x", "cpu": 256, "memory": 512}]
    )
    for service, count in (
        ("airflow-dev-api-server", 1),
        ("airflow-dev-scheduler", 1),
        ("airflow-dev-worker-default", 3),
    ):
        ecs.create_service(cluster=cluster, serviceName=service, taskDefinition="counts", desiredCount=count)
    path, event = _custom_resource_event(
        "service_counts_update.json", tmp_path, cfn_response_server.url, {"Cluster": cluster}
    )
    # WHEN the stack update's request reaches the function
    result = sam.invoke(
        "ServiceCountsFunction",
        path,
        COMMON,
        endpoint_url=moto.url,
        mounts={str(cfn_response_server.ca_dir): "/etc/cfn-test-ca"},
        extra_env={"SSL_CERT_FILE": "/etc/cfn-test-ca/ca.pem"},
    )
    # THEN every existing service keeps its count, new ones start at 0, and CloudFormation is told
    expected = {"ApiServer": "1", "Scheduler": "1", "DagProcessor": "0", "Triggerer": "0", "Worker1": "3"}
    assert (result.payload["Status"], result.payload["Data"]) == ("SUCCESS", expected), result.payload
    [answer] = [r for r in cfn_response_server.received if r["body"]["RequestId"] == event["RequestId"]]
    assert (answer["body"]["Status"], answer["body"]["Data"]) == ("SUCCESS", expected)
