"""Least privilege, run for real: each role started with exactly the environment template.yaml
gives its container, and a DAG task on a worker that tries to reach the control secrets.

The image cannot be built here, so (as in test_image_worker_hooks.py) the image's ENV comes
from the Dockerfile and the role runs through airflow_image/entrypoint.py with the Airflow of
.venv. The container environment comes from the template through the same resolver the
container tests use (tests/containers/taskdefs.py): every `Environment` value with its
intrinsics resolved, and every `Secrets` name with the local value of its secret (generated,
or a connection URL pointed at the local PostgreSQL and Redis). Only the local differences
below are replaced (LOCAL_VALUES); a value that still names a cloud resource fails the test,
so the two cannot drift.

Local differences, each forced by this machine: remote logging is off (no S3 here), a worker
log-server port of its own (other test runs share the machine), and Redis and PostgreSQL on
127.0.0.1 without TLS.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import textwrap
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import pg8000.native
import pytest

from airflow_control_plane.bringup.drain import PostgresTaskInstanceCounter
from airflow_control_plane.scaling.demand import PgDemandReader
from tests.conftest import PG_HOST, PG_PORT, PG_USER, AirflowRuntime, PostgresDatabase, RedisDatabase
from tests.containers.taskdefs import (
    ContainerSpec,
    LocalBackends,
    container_specs,
    local_secret_values,
    resolve_secret,
    translated_template,
)
from tests.harness import free_port, wait_for
from tests.integration.test_image_worker_hooks import IMAGE_PACKAGE_PARENT, PACKAGE_PARENT, image_env
from tests.static.tools import load_template

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "airflow_image" / "entrypoint.py"
TEMPLATE = REPO / "template.yaml"
DAG_ID = "least_privilege_probe"
READY_WITHIN_S = 240
RUN_WITHIN_S = 300
STOP_WITHIN_S = 60
CLI_TIMEOUT_S = 240
# Host variables a container would have anyway (its OS), nothing Airflow- or AWS-specific.
HOST_KEEP = ("HOME", "LANG", "LC_ALL", "TMPDIR", "USER")
# Roles are global to the PostgreSQL server, which other test runs share: a name of our own.
READONLY_ROLE = f"acp_ro_{os.getpid()}_{secrets.token_hex(3)}"
CONTROL_SECRETS = (
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
)
_PLACEHOLDER = re.compile(r"<[A-Za-z0-9]+(?:\.[A-Za-z0-9.]+)?>")  # a cloud resource the resolver left
PARAMETERS = {"AirflowImageUri": "airflow-ecs:local"}


@cache
def translated() -> dict[str, Any]:
    return translated_template(TEMPLATE)


@cache
def template_specs() -> tuple[ContainerSpec, ...]:
    return tuple(container_specs(translated(), PARAMETERS))


def template_container(role: str) -> ContainerSpec:
    """The first container of template.yaml running ``role`` (the entrypoint's role)."""
    for spec in template_specs():
        if spec.command[:1] == (role,):
            return spec
    raise AssertionError(f"template.yaml has no {role} container")


def secret_values(db: PostgresDatabase, redis: RedisDatabase) -> dict[str, str]:
    """A local value for every secret of the template (by logical id), its URLs pointed here."""
    backends = LocalBackends(
        {
            "postgresql+psycopg2": db.sqlalchemy_url,
            "postgresql": db.dsn,
            "db+postgresql": "db+" + db.dsn,
            "redis": redis.url,
            "rediss": redis.url,  # no TLS on the local Redis
        }
    )
    return local_secret_values(translated(), backends, PARAMETERS)


@dataclass(frozen=True)
class Stack:
    runtime: AirflowRuntime
    db: PostgresDatabase
    redis: RedisDatabase
    dags: Path
    api_port: int
    secret_values: Mapping[str, str]  # every template secret's local value, by logical id

    @property
    def execution_api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/execution/"

    def with_database(self, db: PostgresDatabase) -> Stack:
        return replace(self, db=db, secret_values=secret_values(db, self.redis))

    def secrets_of(self, role: str) -> dict[str, str]:
        """What ECS injects as ``role``'s container secrets."""
        return {ref.name: resolve_secret(ref, self.secret_values) for ref in template_container(role).secrets}

    @property
    def control_secrets(self) -> dict[str, str]:
        """The values of the control secrets (as the scheduler gets them): the task must find none."""
        given = self.secrets_of("scheduler")
        return {name: given[name] for name in CONTROL_SECRETS}


def local_values(stack: Stack) -> dict[str, str]:
    """The local differences: what this machine cannot give as the cloud does."""
    return {
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": stack.execution_api,
        "AIRFLOW__CORE__DAGS_FOLDER": str(stack.dags),
        "AIRFLOW__LOGGING__REMOTE_LOGGING": "False",  # no S3 here
        "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": "s3://not-used-here/logs",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
        "AIRFLOW_READONLY_DB_USER": READONLY_ROLE,
        # The DAGs here are a plain folder (the release bundle is tested in test_dagsync_*):
        # Airflow's own default bundle over AIRFLOW__CORE__DAGS_FOLDER.
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
            [
                {
                    "name": "dags-folder",
                    "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                    "kwargs": {},
                }
            ]
        ),
        "AUTOSCALER_WAKEUP_FUNCTION": "",  # no Lambda here: the hook stays off
        # EcsExecutorEnabled is off by default (Celery alone): Airflow never reads these, but the
        # template gives the scheduler the executor's RunTask settings; here they name no cluster.
        "AIRFLOW__AWS_ECS_EXECUTOR__CLUSTER": "not-used-here",
        "AIRFLOW__AWS_ECS_EXECUTOR__SUBNETS": "subnet-not-used-here",
        "AIRFLOW__AWS_ECS_EXECUTOR__SECURITY_GROUPS": "sg-not-used-here",
    }


def role_env(stack: Stack, role: str, home: Path) -> dict[str, str]:
    """Exactly what template.yaml gives ``role``'s container, with local values."""
    overrides = local_values(stack)
    env = {k: os.environ[k] for k in HOST_KEEP if k in os.environ}
    image = image_env()
    assert image["PYTHONPATH"] == IMAGE_PACKAGE_PARENT
    env.update(image, PYTHONPATH=str(PACKAGE_PARENT))
    for name, value in template_container(role).environment.items():
        env[name] = overrides.get(name, value)
        assert not _PLACEHOLDER.search(env[name]), f"{role}: {name}={value!r} names a cloud resource"
    env.update(stack.secrets_of(role))  # a secret with no local value raises TemplateError, naming it
    env.update(
        PATH=f"{stack.runtime.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        AIRFLOW_HOME=str(home),
        AIRFLOW_IMAGE_ROLE_FILE=str(home / "role"),
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
    )
    return env


def core_env(stack: Stack, home: Path) -> dict[str, str]:
    """The trusted components (api-server, scheduler, dag-processor): the full set of secrets.

    The default auth manager: the FAB one needs its own tables, and the UI is not under test.
    """
    env = role_env(stack, "scheduler", home)
    env.pop("AIRFLOW__CORE__AUTH_MANAGER", None)
    env.update(
        AIRFLOW__API__PORT=str(stack.api_port),
        AIRFLOW__API__WORKERS="1",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
    )
    return env


def probe_dag(stack: Stack) -> str:
    """A DAG whose task looks for each control secret; it carries only their SHA-256 digests."""
    digests = sorted(hashlib.sha256(v.encode()).hexdigest() for v in stack.control_secrets.values())
    names = sorted(stack.control_secrets)
    return textwrap.dedent(
        f'''
        import hashlib
        import os
        from datetime import datetime

        from airflow.sdk import dag, task

        DIGESTS = {digests!r}
        NAMES = {names!r}
        SETTINGS = [("database", "sql_alchemy_conn"), ("core", "fernet_key"),
                    ("api_auth", "jwt_secret"), ("api", "secret_key")]


        def _digest(value):
            return hashlib.sha256(str(value).encode()).hexdigest()


        @dag(dag_id="{DAG_ID}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False)
        def probe():
            @task
            def try_to_read_the_control_secrets():
                found = [f"env {{k}}" for k, v in os.environ.items() if _digest(v) in DIGESTS]
                # The task's own environment is not all: every ancestor up to the worker's main
                # process (same user, so its /proc/<pid>/environ is readable) is searched too.
                pid, ancestors = os.getppid(), 0
                while pid > 1:
                    try:
                        with open(f"/proc/{{pid}}/environ", "rb") as handle:
                            entries = handle.read().split(b"\\0")
                        with open(f"/proc/{{pid}}/stat", "rb") as handle:
                            parent = int(handle.read().rsplit(b")", 1)[1].split()[1])
                    except OSError:
                        break
                    ancestors += 1
                    for entry in entries:
                        key, _, value = entry.decode(errors="replace").partition("=")
                        if _digest(value) in DIGESTS:
                            found.append(f"env {{key}} of ancestor process {{pid}}")
                    pid = parent
                print(f"searched the environment of {{ancestors}} ancestor processes")
                for name in NAMES:
                    print(f"{{name}} in the task's environment: {{os.environ.get(name, '(unset)')!r}}")
                from airflow.configuration import conf

                for section, key in SETTINGS:
                    if _digest(conf.get(section, key, fallback="")) in DIGESTS:
                        found.append(f"config [{{section}}] {{key}}")
                import sqlalchemy

                url = conf.get("database", "sql_alchemy_conn")
                try:
                    with sqlalchemy.create_engine(url).connect() as connection:
                        connection.execute(sqlalchemy.text("SELECT 1"))
                    found.append(f"a database at {{url}} is reachable")
                except Exception as exc:
                    print(f"database setting {{url!r}} is unusable, as it should be: {{exc}}")
                if found:
                    raise RuntimeError(f"control secrets reachable from a task: {{found}}")
                print("PROBE: no control secret reachable from the worker")

            try_to_read_the_control_secrets()


        probe()
        '''  # noqa: S608 - Python source, not SQL
    )


@pytest.fixture
def stack(
    airflow_runtime: AirflowRuntime,
    migrated_database_factory: Callable[[str], PostgresDatabase],
    redis_database: RedisDatabase,
    tmp_path: Path,
) -> Stack:
    redis_database.client().flushdb()
    dags = tmp_path / "dags"
    dags.mkdir()
    db = migrated_database_factory("least_priv")
    made = Stack(
        runtime=airflow_runtime,
        db=db,
        redis=redis_database,
        dags=dags,
        api_port=free_port(),
        secret_values=secret_values(db, redis_database),
    )
    (dags / "least_privilege_probe.py").write_text(probe_dag(made))
    return made


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[str, list[str], dict[str, str]], Path]]:
    """Start `entrypoint.py <args>` in its own process group; stop every group afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def run(name: str, args: list[str], env: dict[str, str]) -> Path:
        log = tmp_path / f"{name}.log"
        with log.open("wb") as sink:
            started.append(
                subprocess.Popen(
                    [str(Path(env["PATH"].split(os.pathsep)[0]) / "python"), str(ENTRYPOINT), *args],
                    env=env,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        return log

    yield run

    for process in reversed(started):
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_WITHIN_S)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def wait_logged(condition: Callable[[], bool], timeout: float, what: str, logs: list[Path]) -> None:
    """Wait; on timeout show each component's log tail."""

    def tails() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())

    wait_for(condition, timeout, what, context=tails)


def query(db: PostgresDatabase, sql: str, **params: object) -> list[list[Any]]:
    conn = db.connect()
    try:
        return list(conn.run(sql, **params))
    finally:
        conn.close()


def task_logs(home: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(home.rglob("*.log")))


def test_a_task_on_a_worker_with_the_templates_environment_finds_no_control_secret(
    stack: Stack, start: Callable[[str, list[str], dict[str, str]], Path], tmp_path: Path
) -> None:
    core_home, worker_home = tmp_path / "core", tmp_path / "worker"
    core_home.mkdir()
    worker_home.mkdir()
    core = core_env(stack, core_home)
    # GIVEN the trusted components (api-server, scheduler, dag-processor) with every secret
    logs = [
        start("api-server", ["api-server"], {**core, "AIRFLOW_IMAGE_ROLE_FILE": str(core_home / "r1")}),
        start("scheduler", ["scheduler"], {**core, "AIRFLOW_IMAGE_ROLE_FILE": str(core_home / "r2")}),
        start("dag-processor", ["dag-processor"], {**core, "AIRFLOW_IMAGE_ROLE_FILE": str(core_home / "r3")}),
    ]
    # AND a worker with exactly the template's worker environment: no database, no Fernet key,
    # no JWT secret, no API secret key
    worker = role_env(stack, "celery-worker", worker_home)
    assert not set(stack.control_secrets) & set(worker)
    queue_args = ["--queues", "default"]
    logs.append(start("celery-worker", ["celery-worker", *queue_args], worker))
    wait_logged(lambda: " ready." in logs[-1].read_text(errors="replace"), READY_WITHIN_S, "the worker", logs)
    wait_logged(
        lambda: bool(query(stack.db, "SELECT 1 FROM dag WHERE dag_id = :d", d=DAG_ID)),
        READY_WITHIN_S,
        "the probe DAG to be parsed",
        logs,
    )

    # WHEN the probe DAG runs (its task looks for each secret in os.environ, in Airflow's
    # configuration, and tries the configured database)
    trigger = subprocess.run(
        [str(stack.runtime.airflow), "dags", "trigger", DAG_ID],
        env=core,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert trigger.returncode == 0, trigger.stderr[-3000:]

    def finished() -> bool:
        rows = query(stack.db, "SELECT state FROM dag_run WHERE dag_id = :d", d=DAG_ID)
        return bool(rows) and rows[0][0] in ("success", "failed")

    wait_logged(finished, RUN_WITHIN_S, "the probe run to finish", logs)
    states = query(stack.db, "SELECT state FROM task_instance WHERE dag_id = :d", d=DAG_ID)
    # THEN the task succeeded: it found none of them, and the database setting it sees is unusable
    assert states == [["success"]], (
        f"{states}\n--- worker task logs\n{task_logs(worker_home)}\n{task_logs(core_home)}"
    )
    run_logs = task_logs(worker_home) + task_logs(core_home)
    assert "PROBE: no control secret reachable from the worker" in run_logs
    assert "is unusable, as it should be" in run_logs
    assert re.search(r"searched the environment of [3-9] ancestor processes", run_logs), run_logs[-3000:]
    # AND the worker never created a SQLite database anywhere in its home
    assert not [p for p in worker_home.rglob("*") if p.suffix in (".db", ".sqlite")]


@pytest.mark.usefixtures("readonly_role_cleanup")
def test_one_off_jobs_run_with_only_their_template_secrets(
    stack: Stack, airflow_runtime: AirflowRuntime, pg_database_factory: object, tmp_path: Path
) -> None:
    assert callable(pg_database_factory)
    empty = pg_database_factory("least_priv_jobs")
    assert isinstance(empty, PostgresDatabase)
    jobs = stack.with_database(empty)
    migrate_env = role_env(jobs, "db-migrate", tmp_path / "migrate")
    user_env = role_env(jobs, "create-user", tmp_path / "user")
    # GIVEN the two one-off jobs' environments from the template
    # THEN neither holds a key it does not use
    unused = {"AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"}
    for env in (migrate_env, user_env):
        assert not unused & set(env)
    assert "AIRFLOW_ADMIN_PASSWORD" not in migrate_env
    # WHEN db-migrate and then create-user run with exactly those
    for name, env in (("db-migrate", migrate_env), ("create-user", user_env)):
        Path(env["AIRFLOW_HOME"]).mkdir()
        result = subprocess.run(
            [str(airflow_runtime.python), str(ENTRYPOINT), name],
            env=env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )
        # THEN both succeed
        assert result.returncode == 0, f"{name}:\n{result.stderr[-4000:]}"
    assert query(empty, "SELECT username FROM ab_user") == [["admin"]]


@pytest.fixture
def readonly_role_cleanup(pg_database_factory: object) -> Iterator[None]:
    yield
    admin = pg8000.native.Connection(user=PG_USER, host=PG_HOST, port=PG_PORT, database="postgres")
    try:
        databases = [r[0] for r in admin.run("SELECT datname FROM pg_database WHERE datname LIKE 'acp_%'")]
        for name in databases:
            with contextlib.suppress(pg8000.native.DatabaseError):
                conn = pg8000.native.Connection(user=PG_USER, host=PG_HOST, port=PG_PORT, database=name)
                try:
                    conn.run(f'DROP OWNED BY "{READONLY_ROLE}"')
                finally:
                    conn.close()
        admin.run(f'DROP ROLE IF EXISTS "{READONLY_ROLE}"')
    finally:
        admin.close()


@pytest.mark.usefixtures("readonly_role_cleanup")
def test_db_migrate_makes_a_select_only_role_the_control_plane_readers_can_use(
    stack: Stack, airflow_runtime: AirflowRuntime, pg_database_factory: object, tmp_path: Path
) -> None:
    assert callable(pg_database_factory)
    empty = pg_database_factory("least_priv_ro")
    assert isinstance(empty, PostgresDatabase)
    migrating = stack.with_database(empty)
    env = role_env(migrating, "db-migrate", tmp_path / "migrate")
    readonly_password = migrating.secrets_of("db-migrate")["AIRFLOW_READONLY_DB_PASSWORD"]
    Path(env["AIRFLOW_HOME"]).mkdir()
    # GIVEN db-migrate with the template's environment (the read-only role's name and password)
    # WHEN it runs twice (every bring-up runs it)
    for attempt in (1, 2):
        result = subprocess.run(
            [str(airflow_runtime.python), str(ENTRYPOINT), "db-migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )
        assert result.returncode == 0, f"run {attempt}:\n{result.stderr[-4000:]}"
        # THEN the password never shows in its output
        assert readonly_password not in result.stdout + result.stderr
    # AND the role exists once, with no power beyond logging in
    (flags,) = query(
        empty,
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolcanlogin FROM pg_roles WHERE rolname = :r",
        r=READONLY_ROLE,
    )
    assert flags == [False, False, False, True]

    # AND as that role the autoscaler's and the drain check's readers work (real queries) ...
    def connect() -> pg8000.native.Connection:
        return pg8000.native.Connection(user=READONLY_ROLE, host=PG_HOST, port=PG_PORT, database=empty.name)

    assert PgDemandReader(connect).task_counts() == {}
    assert PostgresTaskInstanceCounter(connect).count_active().total == 0
    # ... and every write is refused
    conn = connect()
    try:
        for statement in (
            "INSERT INTO log (dttm, event) VALUES (now(), 'forged')",
            "UPDATE dag SET is_paused = true",
            "DELETE FROM task_instance",
            "CREATE TABLE forged (x int)",
        ):
            with pytest.raises(pg8000.native.DatabaseError) as refused:
                conn.run(statement)
            assert "read-only transaction" in str(refused.value) or "permission denied" in str(refused.value)
        # AND it stays refused with the read-only default switched off (the grants are SELECT only)
        conn.run("SET default_transaction_read_only = off")
        with pytest.raises(pg8000.native.DatabaseError, match="permission denied"):
            conn.run("INSERT INTO log (dttm, event) VALUES (now(), 'forged')")
    finally:
        conn.close()


def test_celery_accepts_the_templates_tls_result_backend_url(airflow_runtime: AirflowRuntime) -> None:
    # GIVEN the result backend URL as template.yaml builds it with Redis (TLS, certificate
    # verified, db 1; the SQS broker's database URL: test_sqs_results_database.py)
    resources = load_template(TEMPLATE)["Resources"]
    condition, _sqs, redis = resources["ResultBackendUrlSecret"]["Properties"]["SecretString"]["Fn::If"]
    assert condition == "BrokerIsSqs"
    sub = redis["Fn::Sub"]
    url = (
        sub.replace("{{resolve:secretsmanager:${BrokerAuthTokenSecret}:SecretString}}", "token")
        .replace("${Broker.PrimaryEndPoint.Address}", "broker.example")
        .replace("${Broker.PrimaryEndPoint.Port}", "6379")
    )
    assert "${" not in url
    # WHEN the Celery of the runtime builds its Redis result backend from it
    probe = (
        "import sys, ssl\n"
        "from celery import Celery\n"
        "from celery.backends.redis import RedisBackend\n"
        "b = RedisBackend(app=Celery(), url=sys.argv[1])\n"
        "print(b.connparams['ssl_cert_reqs'] == ssl.CERT_REQUIRED, b.connparams['db'],"
        " b.connparams['connection_class'].__name__)\n"
    )
    result = subprocess.run(
        [str(airflow_runtime.python), "-c", probe, url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # THEN it is a TLS connection that verifies the certificate, on database 1 (not the broker's 0)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", "1", "SSLConnection"]
