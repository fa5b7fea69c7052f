#!/usr/bin/env python3
"""Container entrypoint of the one Airflow image: the container command names the role.

    entrypoint.py api-server | scheduler | dag-processor | triggerer
    entrypoint.py celery-worker [--queues default,heavy]
    entrypoint.py flower                            (Celery monitoring, always behind basic auth)
    entrypoint.py ecs-task <command>                (one task instance run by the AwsEcsExecutor)
    entrypoint.py db-migrate | create-user          (one-off jobs, idempotent)
    entrypoint.py healthcheck [<role>]              (role defaults to the one this container runs)

Decide, then act: ``plan(role, args, env)`` is a pure function that returns a :class:`Plan`
(the commands to run to completion, the command to become, environment changes, whether the
role waits for migrations, and a human-readable reason); ``main()`` executes it. Long-running
roles end with ``os.execvpe`` so the Airflow process replaces this one and receives signals
from dumb-init directly (with ``DUMB_INIT_SETSID=0`` only that process gets SIGTERM, which
gives Celery its warm shutdown).

Standard library only: it runs before anything else in the image and must not depend on it.
Least privilege: a Celery worker runs DAG code, so it is refused when its environment carries
the metadata database, the Fernet key, the JWT secret, the API secret key or a database result
backend other than the results-only database (see :func:`results_database_problem`). It
reaches Airflow only through the api-server's Task Execution API and needs only the broker and
the result backend (Redis, or with the SQS broker the results-only database). It never waits
for migrations (it cannot read the schema), and its ``sql_alchemy_conn`` is pinned to a SQLite
path that cannot be opened, so any code that reaches for the database fails loudly instead of
creating a throw-away SQLite file.
Secrets: the admin password (``AIRFLOW_ADMIN_PASSWORD``) is never put on a command line, in a
plan, in a log line or in an error message; it reaches ``airflow users create`` on stdin and is
removed from the environment of every process this entrypoint starts.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

LONG_RUNNING_ROLES = ("api-server", "scheduler", "dag-processor", "triggerer", "celery-worker", "flower")
ONE_OFF_ROLES = ("db-migrate", "create-user")
# Run by the AwsEcsExecutor: the task definition's entry point ends in this role and the
# executor's container override supplies the command (the task instance to run).
ECS_TASK_ROLE = "ecs-task"
ROLES = (*LONG_RUNNING_ROLES, *ONE_OFF_ROLES, ECS_TASK_ROLE, "healthcheck")

FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
CELERY_APP = "airflow.providers.celery.executors.celery_executor.app"
JOB_TYPES = {"scheduler": "SchedulerJob", "triggerer": "TriggererJob", "dag-processor": "DagProcessorJob"}

PASSWORD_ENV = "AIRFLOW_ADMIN_PASSWORD"  # noqa: S105 - the variable name, not a password
# Variables no Airflow process needs; they are removed from every child's environment so a
# long-running component (or a task on a worker) can never read them.
SECRET_ENV_VARS = (PASSWORD_ENV,)
DATABASE_ENV_VARS = (
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_SECRET",
)

# What a worker (arbitrary DAG code) must never be given: the metadata database, the keys that
# decrypt connections (Fernet), mint API tokens (JWT) or sign UI sessions (API secret key).
WORKER_FORBIDDEN_ENV_VARS = (
    *DATABASE_ENV_VARS,
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__CORE__FERNET_KEY_CMD",
    "AIRFLOW__CORE__FERNET_KEY_SECRET",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API_AUTH__JWT_SECRET_CMD",
    "AIRFLOW__API_AUTH__JWT_SECRET_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__API__SECRET_KEY_CMD",
    "AIRFLOW__API__SECRET_KEY_SECRET",
)
RESULT_BACKEND_ENV = "AIRFLOW__CELERY__RESULT_BACKEND"
# Flower: never started without basic auth. Either the whole user:password value (Airflow's
# own setting) or a user and a password (from the Secrets Manager secret's JSON keys) that the
# entrypoint joins into it in the child's environment only.
FLOWER_BASIC_AUTH_ENV = "AIRFLOW__CELERY__FLOWER_BASIC_AUTH"
FLOWER_USER_ENV = "AIRFLOW_FLOWER_USERNAME"
FLOWER_PASSWORD_ENV = "AIRFLOW_FLOWER_PASSWORD"  # noqa: S105 - the variable name, not a password
DEFAULT_FLOWER_PORT = 5555
DEFAULT_FLOWER_URL_PREFIX = "/flower"
_URL_PREFIX = re.compile(r"/[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*")
# What the AwsEcsExecutor (apache-airflow-providers-amazon, Airflow 3) puts in the container
# override: the Task SDK runs one workload given as JSON (it carries the task's API token).
ECS_WORKLOAD_COMMAND = ("python", "-m", "airflow.sdk.execution_time.execute_workload", "--json-string")
EXECUTION_API_ENV = "AIRFLOW__CORE__EXECUTION_API_SERVER_URL"
# A SQLite file under /dev/null can never be created: anything on a worker that reaches for the
# metadata database fails at once ("unable to open database file") instead of silently writing
# an empty airflow.db that nothing else reads.
WORKER_NO_DATABASE_URL = "sqlite:////dev/null/no-metadata-database-on-workers"

# The read-only database role of the control plane's readers (autoscaler, drain check): made or
# updated by db-migrate, after the migration, when AIRFLOW_READONLY_DB_USER is set. Its password
# comes from the environment (a secret), never from the command line.
READONLY_USER_ENV = "AIRFLOW_READONLY_DB_USER"
READONLY_PASSWORD_ENV = "AIRFLOW_READONLY_DB_PASSWORD"  # noqa: S105 - the variable name
_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Runs with the image's Python (psycopg2 is in the Airflow lock) against the migrated database,
# as the migrating (owner) user. Idempotent: creates the role once, then resets its password and
# grants on every run. SELECT only, and read-only transactions by default.
READONLY_ROLE_SCRIPT = """
import os, urllib.parse
import psycopg2
from psycopg2 import sql
url = os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
parts = urllib.parse.urlsplit(url)
dsn = urllib.parse.urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, ""))
role, password = os.environ["AIRFLOW_READONLY_DB_USER"], os.environ["AIRFLOW_READONLY_DB_PASSWORD"]
with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
    if cur.fetchone() is None:
        cur.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    ident = sql.Identifier(role)
    # SUPERUSER and REPLICATION are off from CREATE ROLE and only a superuser can turn them on;
    # a CREATEROLE user (the RDS master) may not even name them: checked instead of set.
    limits = "LOGIN NOCREATEDB NOCREATEROLE"
    alter = sql.SQL("ALTER ROLE {} WITH " + limits + " PASSWORD {}")
    cur.execute(alter.format(ident, sql.Literal(password)))
    cur.execute("SELECT rolsuper OR rolreplication OR rolbypassrls FROM pg_roles WHERE rolname = %s", (role,))
    if cur.fetchone()[0]:
        raise SystemExit(f"read-only role {role!r} is a superuser, replication or BYPASSRLS role: refusing")
    cur.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(ident))
    cur.execute("SELECT current_database()")
    database = sql.Identifier(cur.fetchone()[0])
    cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, ident))
    cur.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(ident))
    cur.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(ident))
    later = sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {}")
    cur.execute(later.format(ident))
print(f"read-only role {role}: SELECT on every table of the public schema, read-only transactions")
"""

# The results-only database of the SQS broker option: Celery's result backend without Redis.
# One name for its login role and its database (AIRFLOW_CELERY_RESULTS_DATABASE, e.g.
# celery_results). db-migrate makes both, as the migrating (master) user, when the name and the
# password are set; workers and Flower take a `db+` result backend only when it logs in as that
# role to that database (results_database_problem).
RESULTS_DATABASE_ENV = "AIRFLOW_CELERY_RESULTS_DATABASE"
RESULTS_PASSWORD_ENV = "AIRFLOW_CELERY_RESULTS_DB_PASSWORD"  # noqa: S105 - the variable name
_RESULTS_SCHEMES = ("postgresql", "postgresql+psycopg", "postgresql+psycopg2")
# Runs with the image's Python against the migrated metadata database, as its migrating user
# (the RDS master: CREATEDB and CREATEROLE). Idempotent: creates the role and the database
# once, then resets the password, the owner and the privileges on every run, and checks the
# outcome instead of trusting it:
# - the role logs in and owns its database (Celery creates its two tables there on first use);
#   it is no superuser, creates no databases or roles, and is a member of no other role;
# - nobody but its owner (and the administrators) may connect to the results database;
# - CONNECT and TEMPORARY on the metadata database are revoked from PUBLIC, so the results
#   role cannot even open it. Who keeps connecting to the metadata database: its owner (the
#   master user every Airflow component logs in as) and the read-only role, which is granted
#   CONNECT explicitly above; RDS's own administrators are superusers.
# The master user is made a member of the role (PostgreSQL 16+ lets a CREATEROLE user give a
# database to a role only if it can SET ROLE to it); the membership goes that way only.
RESULTS_DATABASE_SCRIPT = """
import os, urllib.parse
import psycopg2
from psycopg2 import sql
url = os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
parts = urllib.parse.urlsplit(url)
dsn = urllib.parse.urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, ""))
name = os.environ["AIRFLOW_CELERY_RESULTS_DATABASE"]
password = os.environ["AIRFLOW_CELERY_RESULTS_DB_PASSWORD"]
ident = sql.Identifier(name)
conn = psycopg2.connect(dsn)
conn.autocommit = True  # CREATE DATABASE runs outside a transaction
with conn.cursor() as cur:
    cur.execute("SELECT current_database(), current_user")
    metadata, admin = cur.fetchone()
    if name in (metadata, admin):
        raise SystemExit(f"the results database {name!r} must not be the metadata database or its user")
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
    if cur.fetchone() is None:
        cur.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
    # SUPERUSER, REPLICATION and BYPASSRLS are off from CREATE ROLE and only a superuser can turn
    # them on (a CREATEROLE user may not even name them): checked below instead of set.
    limits = "LOGIN NOCREATEDB NOCREATEROLE"
    cur.execute(sql.SQL("ALTER ROLE {} WITH " + limits + " PASSWORD {}").format(ident, sql.Literal(password)))
    # SET (PostgreSQL 16+): a CREATEROLE user holds the roles it creates with ADMIN only.
    privilege = "SET" if conn.server_version >= 160000 else "MEMBER"
    cur.execute("SELECT pg_has_role(current_user, %s, %s)", (name, privilege))
    if not cur.fetchone()[0]:
        cur.execute(sql.SQL("GRANT {} TO {}").format(ident, sql.Identifier(admin)))
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
    if cur.fetchone() is None:
        cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(ident, ident))
    else:
        cur.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(ident, ident))
    cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(ident))
    meta = sql.Identifier(metadata)
    cur.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(meta))
    cur.execute(
        "SELECT r.rolsuper OR r.rolcreatedb OR r.rolcreaterole OR r.rolreplication OR r.rolbypassrls,"
        " EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.member = r.oid),"
        " has_database_privilege(r.oid, %s, 'CONNECT'),"
        " (SELECT d.datdba = r.oid FROM pg_database d WHERE d.datname = %s)"
        " FROM pg_roles r WHERE r.rolname = %s",
        (metadata, name, name),
    )
    powerful, member, reaches_metadata, owns = cur.fetchone()
conn.close()
if powerful or member or reaches_metadata or not owns:
    raise SystemExit(
        f"results role {name!r} is not confined: extra attributes={powerful}, member of a role={member}, "
        f"CONNECT on the metadata database={reaches_metadata}, owns {name!r}={owns}"
    )
print(f"results database {name!r}: owned by role {name!r}, which cannot connect to the metadata database")
# Purge: Celery keeps results until celery.backend_cleanup, which only Celery beat schedules
# and Airflow runs no beat. The executor reads a result only while its task is in flight, so
# results older than the retention (Celery's own result_expires default, 1 day) go here, at
# every bring-up, as the results role (the master may SET ROLE to it, see above).
raw = os.environ.get("AIRFLOW_CELERY_RESULTS_RETENTION_HOURS", "24")
if not raw.isdigit() or int(raw) < 1:
    raise SystemExit(f"AIRFLOW_CELERY_RESULTS_RETENTION_HOURS must be whole hours >= 1, got {raw!r}")
hours = int(raw)
parts = urllib.parse.urlsplit(dsn)
results_dsn = urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))
conn = psycopg2.connect(results_dsn)
conn.autocommit = True
purged = 0
with conn.cursor() as cur:
    cur.execute(sql.SQL("SET ROLE {}").format(ident))
    for table in ("celery_taskmeta", "celery_tasksetmeta"):
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        if cur.fetchone()[0]:
            cur.execute(
                # date_done is a UTC timestamp without a time zone (Celery's model)
                sql.SQL(
                    "DELETE FROM {} WHERE date_done < (now() AT TIME ZONE 'UTC') - make_interval(hours => %s)"
                ).format(
                    sql.Identifier(table)
                ),
                (hours,),
            )
            purged += cur.rowcount
conn.close()
print(f"results database {name!r}: purged {purged} result(s) older than {hours} h")
"""

DEFAULT_MIGRATION_WAIT_TIMEOUT_S = 300  # the migrate job runs first; 5 min absorbs a slow RDS start
DEFAULT_API_PORT = 8080
DEFAULT_ROLE_FILE = "/tmp/airflow-container-role"  # noqa: S108 - container-local, written by us only
# The whole health check must finish well inside the container runtime's timeout (ECS: the
# task definition's HealthCheck.Timeout, 20 s in template.yaml), or the runtime kills it and
# counts a failure; tests/unit check that every task definition's timeout is above this.
HEALTHCHECK_TIMEOUT_S = 10.0
TASK_ID_ENV = "ECS_TASK_ID"  # set by main() from the ECS task metadata (or by hand)
HTTP_HEALTH_TIMEOUT_S = 10.0
# Airflow's defaults for how old a job's last heartbeat may be ([scheduler]
# scheduler_health_check_threshold, [triggerer] triggerer_health_check_threshold,
# [dag_processor] health_check_threshold), read from the same environment variables.
JOB_THRESHOLD_ENV = {
    "SchedulerJob": "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD",
    "TriggererJob": "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD",
    "DagProcessorJob": "AIRFLOW__DAG_PROCESSOR__HEALTH_CHECK_THRESHOLD",
}
DEFAULT_JOB_THRESHOLD_S = 30

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
# fullmatch, never `$`: `$` also matches before a trailing newline ("default\n").
_QUEUES = re.compile(r"[A-Za-z0-9_.:-]+(,[A-Za-z0-9_.:-]+)*")
_USERNAME = re.compile(r"[A-Za-z0-9_.@+-]{1,64}")
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class PlanError(ValueError):
    """Bad input (role, arguments or environment). Nothing has been run."""


@dataclass(frozen=True)
class Command:
    """Run a command to completion; a non-zero exit stops the plan.

    ``stdin_secret_env`` names an environment variable whose value is written to the
    command's stdin ``stdin_lines`` times (one line per prompt); the value itself never
    appears in the plan.
    """

    argv: tuple[str, ...]
    stdin_secret_env: str | None = None
    stdin_lines: int = 0
    timeout_s: float | None = None

    def describe(self) -> str:
        return shlex.join(self.argv)


@dataclass(frozen=True)
class HttpCheck:
    """GET a URL; anything but HTTP 200 within the timeout is a failure."""

    url: str
    timeout_s: float = HTTP_HEALTH_TIMEOUT_S

    def describe(self) -> str:
        return f"GET {self.url}"


@dataclass(frozen=True)
class JobHeartbeatCheck:
    """One query, in this process: is a ``job_type`` job of this host running with a heartbeat
    younger than ``threshold_s`` (the database's clock)? What ``airflow jobs check --local``
    answers, without starting Airflow (seconds of CPU, far beyond a 0.25 vCPU task's timeout)."""

    job_type: str
    threshold_s: int
    timeout_s: float = HEALTHCHECK_TIMEOUT_S

    def describe(self) -> str:
        return f"{self.job_type} heartbeat of this host within {self.threshold_s} s (metadata database)"


@dataclass(frozen=True)
class CeleryPing:
    """Ping one Celery worker through the broker, in this process, with a bare Celery app
    (no Airflow import: what `celery inspect ping -d` does at a fraction of its CPU)."""

    destination: str
    timeout_s: float = HEALTHCHECK_TIMEOUT_S

    def describe(self) -> str:
        return f"ping {self.destination} through the broker"


Step = Command | HttpCheck | JobHeartbeatCheck | CeleryPing


@dataclass(frozen=True)
class Plan:
    role: str
    reason: str
    steps: tuple[Step, ...] = ()
    exec_argv: tuple[str, ...] | None = None  # become this process (long-running roles)
    wait_for_migrations: bool = False
    env_set: tuple[tuple[str, str], ...] = ()
    env_unset: tuple[str, ...] = SECRET_ENV_VARS
    role_file: str | None = None  # where main() records the role for `healthcheck` without one
    warnings: tuple[str, ...] = ()
    # (user variable, password variable) joined into FLOWER_BASIC_AUTH_ENV in the child's
    # environment; the password never enters the plan.
    flower_auth_from: tuple[str, str] | None = None
    # What the log shows instead of exec_argv when the command carries a secret.
    exec_display: str | None = None


# --- the decision -------------------------------------------------------------------------------


def plan(role: str, args: Sequence[str], env: Mapping[str, str]) -> Plan:
    """Decide what the container does for ``role``; raise PlanError on bad input."""
    if role not in ROLES:
        raise PlanError(f"unknown role {role!r}; the roles are: {', '.join(ROLES)}")
    if role == "healthcheck":
        return _plan_healthcheck(args, env)
    if role == "celery-worker":
        return _plan_worker(args, env)
    if role == "flower":
        return _plan_flower(args, env)
    if role == ECS_TASK_ROLE:
        return _plan_ecs_task(args, env)
    _require_database(env)
    if role == "db-migrate":
        _no_args(role, args)
        return _plan_migrate(env)
    if role == "create-user":
        _no_args(role, args)
        return _plan_create_user(env)
    return _plan_long_running(role, args, env)


def _plan_long_running(role: str, args: Sequence[str], env: Mapping[str, str]) -> Plan:
    _no_args(role, args)
    wait = _bool(env, "AIRFLOW_WAIT_FOR_MIGRATIONS", default=True)
    steps: tuple[Step, ...] = ()
    reason = f"long-running: start the {role}"
    if wait:
        timeout = _int(env, "AIRFLOW_MIGRATION_WAIT_TIMEOUT", DEFAULT_MIGRATION_WAIT_TIMEOUT_S, minimum=0)
        steps = (Command(("airflow", "db", "check-migrations", "--migration-wait-timeout", str(timeout))),)
        reason += f" once the database schema is current (waiting up to {timeout} s)"
    else:
        reason += " without waiting for migrations (AIRFLOW_WAIT_FOR_MIGRATIONS is false)"
    return Plan(
        role=role,
        reason=reason,
        steps=steps,
        exec_argv=("airflow", role),
        wait_for_migrations=wait,
        role_file=_role_file(env),
    )


def _plan_worker(args: Sequence[str], env: Mapping[str, str]) -> Plan:
    """A worker runs DAG code: it gets the broker and the Task Execution API, nothing else."""
    _refuse_worker_secrets(env)
    exec_argv = ("airflow", "celery", "worker", *_worker_queue_args(args, env), *_worker_name_args(env))
    warnings: tuple[str, ...] = ()
    if env.get("DUMB_INIT_SETSID") != "0":
        warnings = (
            "DUMB_INIT_SETSID is not 0: under dumb-init SIGTERM would reach the task processes "
            "too and kill running tasks instead of a warm shutdown",
        )
    return Plan(
        role="celery-worker",
        reason=(
            "long-running: start the celery-worker (tasks reach Airflow through "
            f"{env[EXECUTION_API_ENV].strip()}; no metadata database, so no migration wait"
            + _results_note(env)
            + ")"
        ),
        exec_argv=exec_argv,
        wait_for_migrations=False,
        env_set=((DATABASE_ENV_VARS[0], WORKER_NO_DATABASE_URL),),
        role_file=_role_file(env),
        warnings=warnings,
    )


def _results_note(env: Mapping[str, str]) -> str:
    if env.get(RESULT_BACKEND_ENV, "").strip().lower().startswith("db+"):
        return f"; results in the results-only database {env[RESULTS_DATABASE_ENV].strip()!r}"
    return ""


def _refuse_worker_secrets(env: Mapping[str, str], role: str = "celery-worker") -> None:
    _refuse_forbidden(env, role, "runs DAG code")
    if not env.get(EXECUTION_API_ENV, "").strip():
        raise PlanError(
            f"{role} needs {EXECUTION_API_ENV} (the api-server's /execution/ URL, reachable from the task)"
        )


def _refuse_forbidden(env: Mapping[str, str], role: str, why: str) -> None:
    carried = [name for name in WORKER_FORBIDDEN_ENV_VARS if env.get(name, "").strip()]
    problem = results_database_problem(env)
    if problem is not None:
        carried.append(f"{RESULT_BACKEND_ENV} (a database result backend {problem})")
    if carried:
        # Names only: the values are secrets.
        raise PlanError(
            f"{role} {why} and must not carry "
            + ", ".join(carried)
            + ": it reaches Airflow through the Task Execution API or the broker only"
            + f" (use a Redis result backend, or the results-only database named by {RESULTS_DATABASE_ENV})"
        )


def results_database_problem(env: Mapping[str, str]) -> str | None:
    """Why a component that runs DAG code (or Flower) must not take this result backend; None
    when it may: any non-database backend, or the results-only database.

    The rule: a ``db+`` backend is accepted only when ``AIRFLOW_CELERY_RESULTS_DATABASE`` names
    the results-only database and the URL logs in as the role of that name to the database of
    that name (PostgreSQL). The worker cannot compare the URL with the metadata database's (it
    never holds that URL), so the safety comes from what that name stands for: db-migrate
    creates the role and the database under this one name, refuses a name equal to the
    metadata database or its user, and checks that the role is no member of another role and
    cannot connect to the metadata database. The metadata URL itself
    (``db+postgresql://airflow:...@host/airflow``, what a local runtime uses) names another
    user and database and is refused, as is any database backend when the variable is unset.
    Names are shown in the reason, never the password.
    """
    backend = env.get(RESULT_BACKEND_ENV, "").strip()
    if not backend.lower().startswith("db+"):
        return None
    name = env.get(RESULTS_DATABASE_ENV, "").strip()
    if not name:
        return f"while {RESULTS_DATABASE_ENV} names no results-only database"
    if not _ROLE_NAME.fullmatch(name):
        return f"while {RESULTS_DATABASE_ENV} is not a database name ({_ROLE_NAME.pattern})"
    try:
        parts = urllib.parse.urlsplit(backend[3:])
        user, database = urllib.parse.unquote(parts.username or ""), parts.path.lstrip("/")
    except ValueError:
        return "that is not a URL (value not shown)"
    if parts.scheme.lower() not in _RESULTS_SCHEMES:
        return f"of scheme {parts.scheme!r}, not PostgreSQL"
    if (user, database) != (name, name):
        return f"that logs in as {user!r} to {database!r}, not as {name!r} to its own database"
    return None


def _plan_flower(args: Sequence[str], env: Mapping[str, str]) -> Plan:
    """Flower watches Celery through the broker: no metadata database, no keys, and never open.

    Basic auth is mandatory: ``AIRFLOW__CELERY__FLOWER_BASIC_AUTH`` (user:password), or
    ``AIRFLOW_FLOWER_USERNAME`` and ``AIRFLOW_FLOWER_PASSWORD`` (the template injects both from
    one Secrets Manager secret). It serves under a path prefix (``AIRFLOW_FLOWER_URL_PREFIX``,
    default /flower) so the load balancer can route that path to it.
    """
    _no_args("flower", args)
    _refuse_forbidden(env, "flower", "only watches Celery")
    if not env.get("AIRFLOW__CELERY__BROKER_URL", "").strip():
        raise PlanError(
            "flower needs AIRFLOW__CELERY__BROKER_URL (it reads the workers' events from the broker)"
        )
    auth_from: tuple[str, str] | None = None
    if env.get(FLOWER_BASIC_AUTH_ENV, "").strip():
        _check_basic_auth(env[FLOWER_BASIC_AUTH_ENV].strip(), FLOWER_BASIC_AUTH_ENV)
        auth = f"basic auth from {FLOWER_BASIC_AUTH_ENV}"
    else:
        user = env.get(FLOWER_USER_ENV, "").strip()
        password = env.get(FLOWER_PASSWORD_ENV, "")
        if not user or not password:
            raise PlanError(
                f"flower is never started open: set {FLOWER_BASIC_AUTH_ENV} (user:password) or "
                f"{FLOWER_USER_ENV} and {FLOWER_PASSWORD_ENV} (inject them from Secrets Manager)"
            )
        if not _USERNAME.fullmatch(user):
            raise PlanError(f"{FLOWER_USER_ENV} must match {_USERNAME.pattern}, got {user!r}")
        _check_basic_auth(f"{user}:{password}", FLOWER_PASSWORD_ENV)
        auth_from = (FLOWER_USER_ENV, FLOWER_PASSWORD_ENV)
        auth = f"basic auth for user {user!r}"
    port = _int(env, "AIRFLOW_FLOWER_PORT", DEFAULT_FLOWER_PORT, minimum=1)
    if port > 65535:
        raise PlanError(f"AIRFLOW_FLOWER_PORT must be a TCP port, got {port}")
    prefix = _flower_url_prefix(env)
    exec_argv = (
        "airflow",
        "celery",
        "flower",
        "--hostname",
        env.get("AIRFLOW_FLOWER_HOSTNAME", "").strip() or "0.0.0.0",  # noqa: S104 - the ALB reaches the task's address
        "--port",
        str(port),
        "--url-prefix",
        prefix.strip("/"),
    )
    return Plan(
        role="flower",
        reason=f"long-running: start Flower on port {port} under {prefix} with {auth} "
        "(broker only, no database)",
        exec_argv=exec_argv,
        env_set=((DATABASE_ENV_VARS[0], WORKER_NO_DATABASE_URL),),
        env_unset=(*SECRET_ENV_VARS, FLOWER_PASSWORD_ENV),
        role_file=_role_file(env),
        flower_auth_from=auth_from,
    )


def _check_basic_auth(value: str, name: str) -> None:
    # Flower splits the setting on "," (several users) and each pair on the first ":".
    pairs = value.split(",")
    for pair in pairs:
        user, sep, password = pair.partition(":")
        if not sep or not user or not password or any(c.isspace() for c in pair):
            # The value is not shown: it holds a password.
            raise PlanError(
                f"{name}: basic auth must be user:password[,user2:password2] without spaces (value not shown)"
            )


def _flower_url_prefix(env: Mapping[str, str]) -> str:
    prefix = env.get("AIRFLOW_FLOWER_URL_PREFIX", "").strip() or DEFAULT_FLOWER_URL_PREFIX
    if not _URL_PREFIX.fullmatch(prefix):
        raise PlanError(
            f"AIRFLOW_FLOWER_URL_PREFIX must look like /flower (letters, digits, _ and -), got {prefix!r}"
        )
    return prefix


def _plan_ecs_task(args: Sequence[str], env: Mapping[str, str]) -> Plan:
    """One task instance in its own Fargate task, started by the AwsEcsExecutor.

    Like a Celery worker it runs DAG code, so it gets no database and no keys: the Task SDK
    reaches Airflow through the Task Execution API with the token inside the workload. The
    command is the one the executor passes (``python -m airflow.sdk.execution_time.execute_workload
    --json-string <workload>``); anything else is refused, so the task definition cannot be used
    to run an arbitrary program. The workload JSON is never logged (it carries the token).
    """
    _refuse_worker_secrets(env, ECS_TASK_ROLE)
    command = tuple(args)
    n = len(ECS_WORKLOAD_COMMAND)
    if command[:n] != ECS_WORKLOAD_COMMAND or len(command) != n + 1:
        shown = shlex.join(command[:n]) if command else "nothing"
        raise PlanError(
            f"{ECS_TASK_ROLE} runs only the AwsEcsExecutor's command "
            f"({shlex.join(ECS_WORKLOAD_COMMAND)} <workload JSON>), got {shown}"
        )
    try:
        workload = json.loads(command[n])
        ti = workload["ti"]
        what = f"{ti['dag_id']}.{ti['task_id']} (run {ti['run_id']}, try {ti['try_number']})"
    except (ValueError, KeyError, TypeError):
        raise PlanError(
            f"{ECS_TASK_ROLE}: the workload is not the executor's JSON (value not shown)"
        ) from None
    return Plan(
        role=ECS_TASK_ROLE,
        reason=f"one-off: run task instance {what} through {env[EXECUTION_API_ENV].strip()} "
        "(no metadata database)",
        exec_argv=command,
        env_set=((DATABASE_ENV_VARS[0], WORKER_NO_DATABASE_URL),),
        exec_display=shlex.join(ECS_WORKLOAD_COMMAND) + " <workload JSON, not shown>",
    )


def worker_node(env: Mapping[str, str]) -> str:
    """The worker's Celery node name. On ECS ``worker-<task id>@<host>`` (ECS_TASK_ID, read
    from the task metadata by ``main``), so the autoscaler maps a worker to the ECS task whose
    scale-in protection it releases after draining it; elsewhere Celery's own celery@<host>."""
    task_id = env.get(TASK_ID_ENV, "").strip()
    host = env.get("HOSTNAME", "").strip()
    return f"worker-{task_id}@{host}" if task_id else f"celery@{host}"


def _worker_name_args(env: Mapping[str, str]) -> tuple[str, ...]:
    task_id = env.get(TASK_ID_ENV, "").strip()
    if not task_id:
        return ()
    if not re.fullmatch(r"[A-Za-z0-9-]+", task_id):
        raise PlanError(f"{TASK_ID_ENV} must be an ECS task id, got {task_id!r}")
    return ("--celery-hostname", f"worker-{task_id}@%h")


def ecs_task_id(env: Mapping[str, str], *, timeout_s: float = 2.0) -> str | None:
    """The ECS task id from the task metadata endpoint v4 (``$ECS_CONTAINER_METADATA_URI_V4/task``
    answers ``{"TaskARN": "arn:aws:ecs:...:task/<cluster>/<id>", ...}``); None outside ECS."""
    base = env.get("ECS_CONTAINER_METADATA_URI_V4", "").strip()
    if not base.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(base.rstrip("/") + "/task", timeout=timeout_s) as answer:  # noqa: S310
            arn = str(json.loads(answer.read()).get("TaskARN", ""))
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return arn.rsplit("/", 1)[-1] or None


def _worker_queue_args(args: Sequence[str], env: Mapping[str, str]) -> tuple[str, ...]:
    queues = _parse_queues_option(args)
    if queues is None:
        queues = env.get("AIRFLOW_WORKER_QUEUES", "").strip() or None
    if queues is None:
        return ()
    if not _QUEUES.fullmatch(queues):
        raise PlanError(f"queues must be comma-separated names of [A-Za-z0-9_.:-], got {queues!r}")
    return ("--queues", queues)


def _parse_queues_option(args: Sequence[str]) -> str | None:
    if not args:
        return None
    first = args[0]
    if first.startswith("--queues="):
        rest, value = args[1:], first.split("=", 1)[1]
    elif first in ("--queues", "-q") and len(args) >= 2:
        rest, value = args[2:], args[1]
    else:
        raise PlanError(f"celery-worker takes only --queues Q1[,Q2...], got {shlex.join(args)!r}")
    if rest:
        raise PlanError(f"celery-worker takes only --queues Q1[,Q2...], got {shlex.join(args)!r}")
    return value


def _plan_migrate(env: Mapping[str, str]) -> Plan:
    steps: tuple[Step, ...] = (Command(("airflow", "db", "migrate")),)
    reason = (
        "one-off: migrate the metadata database to this image's Airflow version "
        "(idempotent: an up-to-date database is left as it is)"
    )
    role = env.get(READONLY_USER_ENV, "").strip()
    if role:
        if not _ROLE_NAME.fullmatch(role):
            raise PlanError(f"{READONLY_USER_ENV} must match {_ROLE_NAME.pattern}, got {role!r}")
        if not env.get(READONLY_PASSWORD_ENV):
            raise PlanError(
                f"{READONLY_USER_ENV} is set but {READONLY_PASSWORD_ENV} is not (inject it as a secret)"
            )
        steps += (Command(("python", "-c", READONLY_ROLE_SCRIPT)),)
        reason += f", then make or update the read-only role {role!r} (SELECT only)"
    results = env.get(RESULTS_DATABASE_ENV, "").strip()
    if results:
        if not _ROLE_NAME.fullmatch(results):
            raise PlanError(f"{RESULTS_DATABASE_ENV} must match {_ROLE_NAME.pattern}, got {results!r}")
        if results == role:
            raise PlanError(f"{RESULTS_DATABASE_ENV} must differ from {READONLY_USER_ENV} ({role!r})")
        if not env.get(RESULTS_PASSWORD_ENV):
            raise PlanError(
                f"{RESULTS_DATABASE_ENV} is set but {RESULTS_PASSWORD_ENV} is not (inject it as a secret)"
            )
        steps += (Command(("python", "-c", RESULTS_DATABASE_SCRIPT)),)
        reason += (
            f", then make or update the results-only database and role {results!r} "
            "(Celery results; no access to the metadata database)"
        )
    return _one_off("db-migrate", env, steps, reason)


def _plan_create_user(env: Mapping[str, str]) -> Plan:
    auth_manager = env.get("AIRFLOW__CORE__AUTH_MANAGER", "").strip()
    if auth_manager != FAB_AUTH_MANAGER:
        raise PlanError(
            "create-user needs the FAB auth manager: set "
            f"AIRFLOW__CORE__AUTH_MANAGER={FAB_AUTH_MANAGER} (got {auth_manager or 'nothing'})"
        )
    _check_password(env)
    username = env.get("AIRFLOW_ADMIN_USERNAME", "").strip() or "admin"
    if not _USERNAME.fullmatch(username):
        raise PlanError(f"AIRFLOW_ADMIN_USERNAME must match {_USERNAME.pattern}, got {username!r}")
    email = env.get("AIRFLOW_ADMIN_EMAIL", "").strip() or "admin@example.com"
    if "@" not in email or any(c.isspace() for c in email):
        raise PlanError(f"AIRFLOW_ADMIN_EMAIL is not an email address: {email!r}")
    create = (
        "airflow",
        "users",
        "create",
        "--username",
        username,
        "--email",
        email,
        "--firstname",
        env.get("AIRFLOW_ADMIN_FIRSTNAME", "").strip() or "Airflow",
        "--lastname",
        env.get("AIRFLOW_ADMIN_LASTNAME", "").strip() or "Admin",
        "--role",
        env.get("AIRFLOW_ADMIN_ROLE", "").strip() or "Admin",
    )
    # `airflow users create` (FAB 3.10.2) prompts "Password:" and "Repeat for confirmation:" when
    # --password is absent; with no terminal getpass reads both from stdin, so the password never
    # shows in `ps`, in Airflow's audit log of the command line, or in our own log lines.
    steps: list[Step] = [Command(create, stdin_secret_env=PASSWORD_ENV, stdin_lines=2)]
    reason = f"one-off: create the {username!r} user (FAB exits 0 and changes nothing when it exists)"
    if _bool(env, "AIRFLOW_ADMIN_RESET_PASSWORD", default=False):
        reset = ("airflow", "users", "reset-password", "--username", username)
        steps.append(Command(reset, stdin_secret_env=PASSWORD_ENV, stdin_lines=2))
        reason += ", then set its password from AIRFLOW_ADMIN_PASSWORD (AIRFLOW_ADMIN_RESET_PASSWORD)"
    return _one_off("create-user", env, tuple(steps), reason)


def _check_password(env: Mapping[str, str]) -> None:
    password = env.get(PASSWORD_ENV)
    if password is None or password == "":
        raise PlanError(
            f"{PASSWORD_ENV} is not set: inject the admin password from Secrets Manager "
            "(ECS container definition `secrets`)"
        )
    if "\n" in password or "\r" in password:
        raise PlanError(f"{PASSWORD_ENV} contains a line break, which the password prompt cannot take")


def _plan_healthcheck(args: Sequence[str], env: Mapping[str, str]) -> Plan:
    if len(args) != 1:
        raise PlanError(f"healthcheck takes one role, one of: {', '.join(LONG_RUNNING_ROLES)}")
    target = args[0]
    if target in ONE_OFF_ROLES:
        return Plan(role="healthcheck", reason=f"{target} is a one-off job: its exit code is its health")
    if target == "api-server":
        step: Step = HttpCheck(_api_health_url(env))
        reason = "api-server: its health endpoint answers 200"
    elif target == "celery-worker":
        hostname = env.get("HOSTNAME", "").strip()
        if not hostname:
            raise PlanError("healthcheck celery-worker needs HOSTNAME (the worker is celery@<hostname>)")
        node = worker_node(env)
        timeout = _healthcheck_timeout(env)
        if env.get("AIRFLOW__CELERY__BROKER_URL", "").strip():
            step = CeleryPing(node, timeout_s=timeout)
        else:  # broker URL from a _CMD/_SECRET setting: only Airflow can resolve it
            ping = ("celery", "--app", CELERY_APP, "inspect", "ping", "-d", node)
            step = Command(ping, timeout_s=timeout)
        reason = f"celery-worker: {node} answers a ping through the broker"
        # Like the worker itself: no database, and no SQLite file created by accident.
        return Plan(
            role="healthcheck",
            reason=reason,
            steps=(step,),
            env_set=((DATABASE_ENV_VARS[0], WORKER_NO_DATABASE_URL),),
        )
    elif target == "flower":
        port = _int(env, "AIRFLOW_FLOWER_PORT", DEFAULT_FLOWER_PORT, minimum=1)
        # Flower's /healthcheck answers "OK" without authentication (it reveals nothing else).
        step = HttpCheck(f"http://127.0.0.1:{port}{_flower_url_prefix(env)}/healthcheck")
        reason = "flower: its health check answers 200"
    elif target in JOB_TYPES:
        job_type = JOB_TYPES[target]
        timeout = _healthcheck_timeout(env)
        url = env.get(DATABASE_ENV_VARS[0], "").strip()
        if url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres"):
            threshold = _int(env, JOB_THRESHOLD_ENV[job_type], DEFAULT_JOB_THRESHOLD_S, minimum=1)
            step = JobHeartbeatCheck(job_type, threshold, timeout_s=timeout)
        else:  # another database or a _CMD/_SECRET URL: ask Airflow itself (seconds of CPU)
            check = ("airflow", "jobs", "check", "--job-type", job_type, "--local")
            step = Command(check, timeout_s=timeout)
        reason = f"{target}: this host's {job_type} heartbeats in the metadata database"
    else:
        raise PlanError(
            f"healthcheck: unknown role {target!r}; the roles are: {', '.join(LONG_RUNNING_ROLES)}"
        )
    return Plan(role="healthcheck", reason=reason, steps=(step,))


def _healthcheck_timeout(env: Mapping[str, str]) -> float:
    return float(_int(env, "AIRFLOW_HEALTHCHECK_TIMEOUT", int(HEALTHCHECK_TIMEOUT_S), minimum=1))


def _api_health_url(env: Mapping[str, str]) -> str:
    port = _int(env, "AIRFLOW__API__PORT", DEFAULT_API_PORT, minimum=1)
    if port > 65535:
        raise PlanError(f"AIRFLOW__API__PORT must be a TCP port, got {port}")
    # A base_url with a path (https://example.com/airflow) moves every route under that path.
    prefix = urllib.parse.urlsplit(env.get("AIRFLOW__API__BASE_URL", "").strip()).path.rstrip("/")
    return f"http://127.0.0.1:{port}{prefix}/api/v2/monitor/health"


# --- small readers -----------------------------------------------------------------------------


def _one_off(role: str, env: Mapping[str, str], steps: tuple[Step, ...], reason: str) -> Plan:
    return Plan(role=role, reason=reason, steps=steps, role_file=_role_file(env))


def _role_file(env: Mapping[str, str]) -> str:
    return env.get("AIRFLOW_IMAGE_ROLE_FILE", "").strip() or DEFAULT_ROLE_FILE


def _no_args(role: str, args: Sequence[str]) -> None:
    if args:
        raise PlanError(f"{role} takes no arguments, got {shlex.join(args)!r}")


def _require_database(env: Mapping[str, str]) -> None:
    present = [name for name in DATABASE_ENV_VARS if env.get(name, "").strip()]
    if not present:
        raise PlanError(
            f"no metadata database configured: set one of {', '.join(DATABASE_ENV_VARS)} "
            "(without it Airflow would silently use a throw-away SQLite file in the container)"
        )
    url = env.get(DATABASE_ENV_VARS[0], "").strip()
    if url and not _URL_SCHEME.match(url):
        # The value is not shown: a database URL may carry a password.
        raise PlanError(
            f"{DATABASE_ENV_VARS[0]} is not a database URL "
            "(expected e.g. postgresql+psycopg2://user@host:5432/airflow; value not shown)"
        )


def _bool(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise PlanError(f"{name} must be true or false, got {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise PlanError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise PlanError(f"{name} must be >= {minimum}, got {value}")
    return value


# --- acting on the plan --------------------------------------------------------------------------

USAGE = """usage: entrypoint.py ROLE [ARGS]

long-running roles (wait for migrations, then become the Airflow process):
  api-server | scheduler | dag-processor | triggerer
  celery-worker [--queues Q1,Q2]
  flower                 (needs basic auth: AIRFLOW__CELERY__FLOWER_BASIC_AUTH, or
                          AIRFLOW_FLOWER_USERNAME and AIRFLOW_FLOWER_PASSWORD)
one-off jobs (idempotent):
  db-migrate | create-user
  ecs-task COMMAND       (the AwsEcsExecutor's command for one task instance)
health (0 = healthy, 1 = unhealthy; ROLE defaults to the role this container runs):
  healthcheck [ROLE]
"""


def _say(message: str) -> None:
    print(f"entrypoint: {message}", file=sys.stderr, flush=True)


def _child_env(p: Plan, env: Mapping[str, str]) -> dict[str, str]:
    child = {k: v for k, v in env.items() if k not in p.env_unset}
    child.update(p.env_set)
    if p.flower_auth_from is not None:
        user_var, password_var = p.flower_auth_from
        child[FLOWER_BASIC_AUTH_ENV] = f"{env[user_var].strip()}:{env[password_var]}"
    return child


def _record_role(p: Plan) -> None:
    if p.role_file is None:
        return
    try:
        with open(p.role_file, "w", encoding="utf-8") as handle:
            handle.write(p.role + "\n")
    except OSError as exc:
        _say(f"warning: cannot record the role in {p.role_file} ({exc}); `healthcheck` needs a role argument")


def _task_id_file(env: Mapping[str, str]) -> str:
    return _role_file(env) + ".ecs-task-id"


def _record_task_id(env: Mapping[str, str], task_id: str) -> None:
    try:
        with open(_task_id_file(env), "w", encoding="utf-8") as handle:
            handle.write(task_id + "\n")
    except OSError as exc:
        _say(f"warning: cannot record the ECS task id ({exc}); the health check reads the metadata again")


def _recorded_task_id(env: Mapping[str, str]) -> str | None:
    try:
        with open(_task_id_file(env), encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def _recorded_role(env: Mapping[str, str]) -> str:
    path = _role_file(env)
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        raise PlanError(f"healthcheck: no role given and none recorded in {path}") from None


def _run_command(step: Command, env: Mapping[str, str], child_env: Mapping[str, str]) -> int:
    stdin = None
    if step.stdin_secret_env is not None:
        stdin = (env.get(step.stdin_secret_env, "") + "\n") * step.stdin_lines
    with subprocess.Popen(
        step.argv,
        env=dict(child_env),
        stdin=subprocess.PIPE if stdin is not None else None,
        text=True,
        # Without a controlling terminal, getpass reads the prompts' answers from stdin.
        start_new_session=stdin is not None,
        # A health check killed at its timeout by the container runtime must not leave its
        # command running (the runtime kills only the process it started).
        preexec_fn=_die_with_parent if step.timeout_s is not None else None,
    ) as child:
        # ECS stops a one-off with SIGTERM to this process; pass it on instead of orphaning the child.
        previous = signal.signal(signal.SIGTERM, _forward_to(child))
        try:
            child.communicate(stdin, timeout=step.timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            _say(f"{step.describe()} did not finish within {step.timeout_s:g} s")
            return 1
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        return child.returncode


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL me when my parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _forward_to(child: subprocess.Popen[str]) -> Callable[[int, FrameType | None], None]:
    def forward(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    return forward


def _run_http(step: HttpCheck) -> int:
    try:
        with urllib.request.urlopen(step.url, timeout=step.timeout_s) as response:  # noqa: S310 - local http URL we built
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        _say(f"{step.describe()} failed: {exc}")
        return 1
    if status != 200:
        _say(f"{step.describe()} answered HTTP {status}")
        return 1
    return 0


def _run_job_check(step: JobHeartbeatCheck, env: Mapping[str, str]) -> int:
    # psycopg2 is in the image (Airflow's PostgreSQL driver); imported only here, so the
    # entrypoint itself stays standard-library only.
    import psycopg2  # type: ignore[import-untyped,import-not-found,unused-ignore]

    scheme, rest = env[DATABASE_ENV_VARS[0]].strip().split("://", 1)
    dsn = "postgresql://" + rest
    hostname = _airflow_hostname()
    timeout_ms = int(step.timeout_s * 1000)
    try:
        connection = psycopg2.connect(
            dsn, connect_timeout=max(1, int(step.timeout_s / 2)), options=f"-c statement_timeout={timeout_ms}"
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM job WHERE job_type = %s AND hostname = %s AND state = 'running' "
                    "AND latest_heartbeat > now() - make_interval(secs => %s)",
                    (step.job_type, hostname, step.threshold_s),
                )
                (alive,) = cursor.fetchone()
        finally:
            connection.close()
    except psycopg2.Error as exc:
        _say(f"{step.describe()}: database error: {type(exc).__name__}: {str(exc).strip()[:300]}")
        return 1
    if alive < 1:
        _say(f"{step.describe()}: no live {step.job_type} of {hostname} (scheme {scheme})")
        return 1
    return 0


def _airflow_hostname() -> str:
    """The hostname Airflow records for its jobs (airflow.utils.net.getfqdn, its default
    [core] hostname_callable)."""
    name = socket.gethostname()
    try:
        addrs = socket.getaddrinfo(name, None, 0, socket.SOCK_DGRAM, 0, socket.AI_CANONNAME)
    except OSError:
        return name
    for addr in addrs:
        if addr[3]:
            return addr[3]
    return name


def _run_celery_ping(step: CeleryPing, env: Mapping[str, str]) -> int:
    from celery import Celery  # type: ignore[import-not-found,unused-ignore]  # in the image; no Airflow import

    app = Celery("healthcheck", broker=env["AIRFLOW__CELERY__BROKER_URL"].strip())
    app.conf.broker_connection_timeout = step.timeout_s / 2
    app.conf.broker_connection_retry_on_startup = False
    app.conf.broker_connection_max_retries = 0
    try:
        replies = app.control.ping(destination=[step.destination], timeout=step.timeout_s / 2)
    except Exception as exc:
        _say(f"{step.describe()}: {type(exc).__name__}: {str(exc)[:300]}")
        return 1
    finally:
        app.close()
    if not any(step.destination in reply for reply in replies):
        _say(f"{step.describe()}: no answer within {step.timeout_s / 2:g} s")
        return 1
    return 0


def _run_step(step: Step, env: Mapping[str, str], child_env: Mapping[str, str]) -> int:
    if isinstance(step, Command):
        return _run_command(step, env, child_env)
    if isinstance(step, HttpCheck):
        return _run_http(step)
    if isinstance(step, JobHeartbeatCheck):
        return _run_job_check(step, env)
    return _run_celery_ping(step, env)


def execute(p: Plan, env: Mapping[str, str]) -> int:
    """Apply a plan: run its steps in order, then become its exec command. Returns an exit code."""
    _say(f"{p.role}: {p.reason}")
    for warning in p.warnings:
        _say(f"warning: {warning}")
    _record_role(p)
    child_env = _child_env(p, env)
    for step in p.steps:
        _say(f"running: {step.describe()}")
        code = _run_step(step, env, child_env)
        if code != 0:
            _say(f"{p.role}: failed: `{step.describe()}` exited with code {code}")
            return code if code > 0 else 1
    if p.exec_argv is None:
        _say(f"{p.role}: done")
        return 0
    _say(f"exec: {p.exec_display or shlex.join(p.exec_argv)}")
    try:
        os.execvpe(p.exec_argv[0], list(p.exec_argv), child_env)  # noqa: S606 - argv list, no shell
    except OSError as exc:
        _say(f"{p.role}: cannot start {p.exec_argv[0]}: {exc}")
        return 127
    return 0  # pragma: no cover - execvpe does not return


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ if environ is None else environ)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    role, rest = args[0], args[1:]
    # Celery names a worker celery@<socket.gethostname()>; an exported HOSTNAME need not match it.
    env["HOSTNAME"] = socket.gethostname()
    if role in ("celery-worker", "healthcheck") and not env.get(TASK_ID_ENV):
        # The health check reads the id the worker started with, so a metadata hiccup can
        # never make it ping a different node name than the worker's.
        task_id = _recorded_task_id(env) if role == "healthcheck" else None
        task_id = task_id or ecs_task_id(env)
        if task_id:
            env[TASK_ID_ENV] = task_id
            if role == "celery-worker":
                _record_task_id(env, task_id)
    try:
        if role == "healthcheck" and not rest:
            rest = [_recorded_role(env)]
        decided = plan(role, rest, env)
    except PlanError as exc:
        _say(f"error: {exc}")
        return 1 if role == "healthcheck" else 2  # Docker reserves exit code 2 in health checks
    code = execute(decided, env)
    return min(code, 1) if role == "healthcheck" else code


if __name__ == "__main__":
    sys.exit(main())
