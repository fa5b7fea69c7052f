"""The results-only database of the SQS broker option, run for real against PostgreSQL.

The migrate job runs airflow_image/entrypoint.py ``db-migrate`` (the Airflow of .venv) with the
environment template.yaml gives it with ``CeleryBroker=sqs``, as a migrating user like the RDS
master: a login role with CREATEDB and CREATEROLE that owns the metadata database, not a
superuser. Then a real Celery worker of the runtime environment consumes over SQS (moto's
server) with the result backend the template gives a worker, which the entrypoint accepts,
and stores its results in that database; a client reads them back.

Roles are global to the PostgreSQL server, which other test runs share: every role and
database here has a name of this run, in place of the template's fixed names, and is dropped
at the end. Local differences: PostgreSQL on 127.0.0.1 without TLS, trust authentication
(passwords are not checked, so privileges are proven, not passwords).

The machine's PostgreSQL is 15; RDS runs 17, where PostgreSQL 16 changed what a CREATEROLE
user may do with the roles it creates. The role steps of db-migrate also run against the
PostgreSQL 16 that pgserver (in the runtime environment) embeds, on a private server.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pg8000.native
import pytest

from airflow_control_plane.poll import poll_until
from airflow_control_plane.scaling.broker import kombu_sqs_queue_name
from tests.conftest import PG_HOST, PG_PORT, PG_USER, AirflowRuntime, load_module
from tests.containers.taskdefs import (
    ContainerSpec,
    LocalBackends,
    container_specs,
    local_secret_values,
    resolve_secret,
    translated_template,
)
from tests.harness import moto_server
from tests.integration.test_image_roles_airflow import ENTRYPOINT, run_entrypoint
from tests.integration.test_sqs_broker_celery import CREDENTIALS, _keys, sqs_app_settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PARAMETERS = {
    "AirflowImageUri": "airflow-ecs:local",
    "CeleryBroker": "sqs",
    "EnvironmentName": "airflow-test",
}
PREFIX = "airflow-results-test-"
QUEUE = "default"
TASKS = 4
RUN = f"{os.getpid()}_{secrets.token_hex(3)}"
MASTER = f"acp_master_{RUN}"
METADATA = f"acp_meta_{RUN}"
RESULTS = f"acp_results_{RUN}"
READONLY = f"acp_ro_{RUN}"
# Every generated secret of the template gets this value here, so the local URLs can carry it.
PASSWORD = secrets.token_hex(16)
HOST_KEEP = ("HOME", "LANG", "LC_ALL", "TMPDIR", "USER")
ep = load_module(ENTRYPOINT, "airflow_image_entrypoint", reuse=True)


@pytest.fixture(scope="module")
def sqs_endpoint() -> Iterator[str]:
    """moto's SQS on a free port of this module's own (another module's server may be running)."""
    with moto_server() as url:
        yield url


@cache
def translated() -> dict[str, Any]:
    return translated_template(REPO / "template.yaml")


def template_container(role: str) -> ContainerSpec:
    for spec in container_specs(translated(), PARAMETERS):
        if spec.command[:1] == (role,):
            return spec
    raise AssertionError(f"template.yaml has no {role} container")


def connect(user: str, database: str) -> pg8000.native.Connection:
    return pg8000.native.Connection(user=user, host=PG_HOST, port=PG_PORT, database=database)


@dataclass(frozen=True)
class Local:
    """The local values of the template's secrets (by logical id) and the run's names."""

    values: dict[str, str]
    results_url: str
    metadata_url: str


@pytest.fixture(scope="module")
def master_database() -> Iterator[None]:
    """The metadata database owned by a non-superuser migrating user, as on RDS."""
    admin = connect(PG_USER, "postgres")
    try:
        admin.run(f'CREATE ROLE "{MASTER}" LOGIN CREATEDB CREATEROLE')
        admin.run(f'CREATE DATABASE "{METADATA}" OWNER "{MASTER}"')
    finally:
        admin.close()
    yield
    admin = connect(PG_USER, "postgres")
    try:
        for database in (RESULTS, METADATA):
            admin.run(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for role in (RESULTS, READONLY, MASTER):
            admin.run(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        admin.close()


def local_values(sqs_endpoint: str) -> Local:
    port = sqs_endpoint.rsplit(":", 1)[1]
    metadata = f"postgresql+psycopg2://{MASTER}@{PG_HOST}:{PG_PORT}/{METADATA}"
    results = f"db+postgresql://{RESULTS}:{PASSWORD}@{PG_HOST}:{PG_PORT}/{RESULTS}"
    backends = LocalBackends(
        {
            "postgresql+psycopg2": metadata,
            "postgresql": f"postgresql://{MASTER}@{PG_HOST}:{PG_PORT}/{METADATA}",
            "db+postgresql": results,
            "sqs": f"sqs://testing:testing@127.0.0.1:{port}/",
        }
    )
    values = local_secret_values(translated(), backends, PARAMETERS, token=lambda n: PASSWORD[:n])
    return Local(values, results, metadata)


def container_env(role: str, local: Local, **overrides: str) -> dict[str, str]:
    """What template.yaml gives ``role``'s container with CeleryBroker=sqs, its secrets' local
    values, and ``overrides`` (the run's role and database names)."""
    spec = template_container(role)
    env = {k: os.environ[k] for k in HOST_KEEP if k in os.environ}
    env.update(spec.environment)
    env.update({ref.name: resolve_secret(ref, local.values) for ref in spec.secrets})
    env.update(overrides)
    return env


def refused(user: str, database: str) -> str:
    """The error PostgreSQL gives ``user`` connecting to ``database`` ("" when it connects)."""
    try:
        connect(user, database).close()
    except pg8000.native.DatabaseError as exc:
        return str(exc)
    return ""


@pytest.mark.usefixtures("master_database")
def test_db_migrate_makes_a_results_database_that_celery_on_sqs_uses_and_nothing_else(
    airflow_runtime: AirflowRuntime, sqs_endpoint: str, tmp_path: Path
) -> None:
    local = local_values(sqs_endpoint)
    # GIVEN the migrate job's environment from the template with CeleryBroker=sqs
    home = tmp_path / "migrate"
    home.mkdir()
    env = container_env(
        "db-migrate",
        local,
        AIRFLOW_READONLY_DB_USER=READONLY,
        AIRFLOW_CELERY_RESULTS_DATABASE=RESULTS,
        AIRFLOW__LOGGING__REMOTE_LOGGING="False",  # no S3 here
        AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER="s3://not-used-here/logs",
        AIRFLOW_HOME=str(home),
        AIRFLOW_IMAGE_ROLE_FILE=str(home / "role"),
        PATH=f"{airflow_runtime.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == local.metadata_url
    assert env["AIRFLOW_CELERY_RESULTS_DB_PASSWORD"] == PASSWORD
    # WHEN db-migrate runs twice (every bring-up runs it), as the non-superuser master
    for attempt in (1, 2):
        result = run_entrypoint(airflow_runtime, ["db-migrate"], env)
        assert result.returncode == 0, f"run {attempt}:\n{result.stderr[-4000:]}"
        # THEN it reports the results database, and no password shows in its output
        assert f"results database '{RESULTS}'" in result.stdout + result.stderr
        assert PASSWORD not in result.stdout + result.stderr
    # AND the role exists once, logs in, has no other power, and owns its database
    admin = connect(PG_USER, "postgres")
    try:
        (role,) = admin.run(
            "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication,"
            " EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.member = r.oid)"
            " FROM pg_roles r WHERE rolname = :r",
            r=RESULTS,
        )
        assert role == [True, False, False, False, False, False]
        (owner,) = admin.run(
            "SELECT r.rolname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname = :d",
            d=RESULTS,
        )
        assert owner == [RESULTS]
    finally:
        admin.close()
    # AND the results role cannot even connect to the metadata database ...
    assert "permission denied" in refused(RESULTS, METADATA)
    # ... while the roles that use it still can (its owner, the read-only role's explicit grant)
    for user in (MASTER, READONLY):
        conn = connect(user, METADATA)
        try:
            assert conn.run("SELECT count(*) FROM dag") == [[0]]
        finally:
            conn.close()
    # AND nobody but its owner connects to the results database
    assert "permission denied" in refused(READONLY, RESULTS)
    assert refused(RESULTS, RESULTS) == ""

    # GIVEN a worker's environment from the template, with the local SQS and results database
    worker = container_env(
        "celery-worker", local, AIRFLOW_CELERY_RESULTS_DATABASE=RESULTS, HOSTNAME="ip-10-0-1-7"
    )
    assert worker["AIRFLOW__CELERY__RESULT_BACKEND"] == local.results_url
    # THEN the image's entrypoint starts the worker with it ...
    plan = ep.plan("celery-worker", list(template_container("celery-worker").command[1:]), worker)
    assert f"results-only database '{RESULTS}'" in plan.reason
    # ... and refuses the metadata database as a result backend
    with pytest.raises(ep.PlanError, match="database result backend"):
        ep.plan(
            "celery-worker", [], {**worker, "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + local.metadata_url}
        )

    # WHEN a real Celery worker consumes over SQS with exactly that broker and result backend,
    # and a client publishes tasks and waits for their results
    results = run_celery_on_sqs(airflow_runtime, sqs_endpoint, worker, tmp_path)
    # THEN the client reads every result back from the results database
    assert results == [{"task": i, "squared": i * i} for i in range(TASKS)]
    # AND they are stored there, in tables Celery created as the results role
    conn = connect(RESULTS, RESULTS)
    try:
        assert conn.run("SELECT count(*), bool_and(status = 'SUCCESS') FROM celery_taskmeta") == [
            [TASKS, True]
        ]
        owners = conn.run("SELECT DISTINCT tableowner FROM pg_tables WHERE tablename LIKE 'celery_%'")
        assert owners == [[RESULTS]]
        # GIVEN two of those results done two days ago (Airflow runs no Celery beat to purge them)
        conn.run(
            "UPDATE celery_taskmeta SET date_done = date_done - interval '2 days'"
            " WHERE id IN (SELECT id FROM celery_taskmeta ORDER BY id LIMIT 2)"
        )
    finally:
        conn.close()
    # WHEN the next bring-up's db-migrate runs
    result = run_entrypoint(airflow_runtime, ["db-migrate"], env)
    assert result.returncode == 0, result.stderr[-4000:]
    # THEN it purged exactly the results older than the retention (24 h), as the results role
    said = result.stdout + result.stderr
    assert f"results database '{RESULTS}': purged 2 result(s) older than 24 h" in said
    conn = connect(RESULTS, RESULTS)
    try:
        assert conn.run("SELECT count(*) FROM celery_taskmeta") == [[TASKS - 2]]
    finally:
        conn.close()


def _app_module(workdir: Path, endpoint: str, broker: str, backend: str) -> None:
    (workdir / "results_app.py").write_text(
        "from celery import Celery\n\n"
        f'app = Celery("results_app", broker={broker!r}, backend={backend!r})\n'
        + sqs_app_settings(endpoint, PREFIX, QUEUE)
        + textwrap.dedent(
            """

            @app.task
            def square(i):
                return {"task": i, "squared": i * i}
            """
        )
    )


def run_celery_on_sqs(
    runtime: AirflowRuntime, endpoint: str, worker_env: dict[str, str], tmp_path: Path
) -> list[dict[str, int]]:
    import boto3

    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1", **_keys())
    sqs.create_queue(QueueName=kombu_sqs_queue_name(QUEUE, queue_name_prefix=PREFIX))
    workdir = tmp_path / "celery"
    workdir.mkdir()
    _app_module(
        workdir,
        endpoint,
        worker_env["AIRFLOW__CELERY__BROKER_URL"],
        worker_env["AIRFLOW__CELERY__RESULT_BACKEND"],
    )
    env = {**os.environ, **CREDENTIALS, "PYTHONPATH": str(workdir)}
    argv = [str(runtime.python), "-m", "celery", "-A", "results_app", "worker", "-Q", QUEUE, "-c", "2"]
    argv += ["--pool", "threads", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen([*argv, "--loglevel", "INFO"], cwd=workdir, env=env, stdout=log, stderr=log)
    try:
        client = (
            "import json\nfrom results_app import square\n"
            f"pending = [square.delay(i) for i in range({TASKS})]\n"
            "print(json.dumps([p.get(timeout=90) for p in pending]))\n"
        )
        out = subprocess.run(
            [str(runtime.python), "-c", client],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert out.returncode == 0, out.stderr[-3000:] + (tmp_path / "worker.log").read_text()[-3000:]
        results: list[dict[str, int]] = json.loads(out.stdout.strip().splitlines()[-1])
        poll_until(
            lambda: _depth(sqs) == 0, timeout_s=30, interval_s=0.5, what="every task message acknowledged"
        )
        return results
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()


def _depth(sqs: Any) -> int:
    url = sqs.get_queue_url(QueueName=kombu_sqs_queue_name(QUEUE, queue_name_prefix=PREFIX))["QueueUrl"]
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def test_the_templates_results_url_requires_tls_on_the_wire(airflow_runtime: AirflowRuntime) -> None:
    # GIVEN the result backend URL template.yaml builds with CeleryBroker=sqs, pointed at the
    # local server (ssl=off here), its query (sslmode) kept as it is
    condition, sqs, _redis = translated()["Resources"]["ResultBackendUrlSecret"]["Properties"][
        "SecretString"
    ]["Fn::If"]
    assert condition == "BrokerIsSqs"
    url = (
        sqs["Fn::Sub"]
        .replace(
            "{{resolve:secretsmanager:${ResultsDatabaseCredentialsSecret}:SecretString:password}}", PASSWORD
        )
        .replace("${Database.Endpoint.Address}", PG_HOST)
        .replace("${Database.Endpoint.Port}", str(PG_PORT))
    )
    assert "${" not in url
    assert url.endswith("?sslmode=require")
    # WHEN the runtime's Celery opens that result backend
    probe = (
        "import sys\nfrom celery import Celery\nprint(type(Celery(backend=sys.argv[1]).backend).__name__)\n"
    )
    result = subprocess.run(
        [str(airflow_runtime.python), "-c", probe, url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # THEN its database backend insists on TLS: the server without it is refused, before any login
    assert result.returncode != 0
    assert "server does not support SSL, but SSL was required" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


EMBEDDED_START = """
import json, sys
from pathlib import Path
from airflow_control_plane.local import backing

print(json.dumps({"url": backing.start_embedded_postgres(Path(sys.argv[1]), "postgres")}))
"""
EMBEDDED_STOP = """
import sys
from pathlib import Path
from airflow_control_plane.local import backing

print(backing.stop_embedded_postgres(Path(sys.argv[1])))
"""


def _runtime(runtime: AirflowRuntime, code: str, *args: str) -> str:
    result = subprocess.run(
        [str(runtime.python), "-c", code, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_the_role_steps_work_for_a_createrole_master_on_postgresql_16(
    airflow_runtime: AirflowRuntime, tmp_path: Path
) -> None:
    # GIVEN a private PostgreSQL 16 (pgserver) with a metadata database owned by a non-superuser
    # CREATEDB CREATEROLE user, as the RDS master is
    data = tmp_path / "pg16"
    url = json.loads(_runtime(airflow_runtime, EMBEDDED_START, str(data)))["url"]
    socket_dir = url.split("host=", 1)[1]
    try:

        def connect16(user: str, database: str) -> pg8000.native.Connection:
            return pg8000.native.Connection(
                user=user, unix_sock=f"{socket_dir}/.s.PGSQL.5432", database=database
            )

        admin = connect16("postgres", "postgres")
        try:
            assert str(admin.run("SHOW server_version")[0][0]).startswith("16.")
            admin.run("CREATE ROLE master LOGIN CREATEDB CREATEROLE")
            admin.run("CREATE DATABASE metadata OWNER master")
        finally:
            admin.close()
        env = {
            **{k: os.environ[k] for k in HOST_KEEP if k in os.environ},
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://master@/metadata?host={socket_dir}",
            "AIRFLOW_READONLY_DB_USER": "airflow_readonly",
            "AIRFLOW_READONLY_DB_PASSWORD": PASSWORD,
            "AIRFLOW_CELERY_RESULTS_DATABASE": "celery_results",
            "AIRFLOW_CELERY_RESULTS_DB_PASSWORD": PASSWORD,
        }
        # WHEN db-migrate's steps after the migration (read-only role, results database) run
        # twice, as the plan gives them, with the runtime's Python
        steps = ep.plan("db-migrate", [], env).steps[1:]
        assert len(steps) == 2
        for _attempt in (1, 2):
            for step in steps:
                result = subprocess.run(
                    [str(airflow_runtime.python), *step.argv[1:]],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
                assert result.returncode == 0, result.stderr[-3000:]
        # THEN the results role is confined as on the machine's PostgreSQL 15
        for user, database, allowed in (
            ("celery_results", "metadata", False),
            ("celery_results", "celery_results", True),
            ("airflow_readonly", "metadata", True),
            ("airflow_readonly", "celery_results", False),
            ("master", "metadata", True),
        ):
            try:
                connect16(user, database).close()
                error = ""
            except (pg8000.native.DatabaseError, pg8000.native.InterfaceError) as exc:
                error = _messages(exc)
            assert (error == "") is allowed, (user, database, error)
            assert allowed or "permission denied" in error
    finally:
        assert _runtime(airflow_runtime, EMBEDDED_STOP, str(data)) == "True"


def _messages(exc: BaseException) -> str:
    """An error and every error it was raised while handling: over a unix socket pg8000 reports
    the server's refusal as the context of a broken pipe."""
    found: list[str] = []
    current: BaseException | None = exc
    while current is not None:
        found.append(str(current))
        current = current.__context__
    return " / ".join(found)
