#!/usr/bin/env python3
"""Container entrypoint of the one Airflow image: the container command names the role.

    entrypoint.py api-server | scheduler | dag-processor | triggerer
    entrypoint.py celery-worker [--queues default,heavy]
    entrypoint.py db-migrate | create-user          (one-off jobs, idempotent)
    entrypoint.py healthcheck [<role>]              (role defaults to the one this container runs)

Decide, then act: ``plan(role, args, env)`` is a pure function that returns a :class:`Plan`
(the commands to run to completion, the command to become, environment changes, whether the
role waits for migrations, and a human-readable reason); ``main()`` executes it. Long-running
roles end with ``os.execvpe`` so the Airflow process replaces this one and receives signals
from dumb-init directly (with ``DUMB_INIT_SETSID=0`` only that process gets SIGTERM, which
gives Celery its warm shutdown).

Standard library only: it runs before anything else in the image and must not depend on it.
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

LONG_RUNNING_ROLES = ("api-server", "scheduler", "dag-processor", "triggerer", "celery-worker")
ONE_OFF_ROLES = ("db-migrate", "create-user")
ROLES = (*LONG_RUNNING_ROLES, *ONE_OFF_ROLES, "healthcheck")

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

DEFAULT_MIGRATION_WAIT_TIMEOUT_S = 300  # the migrate job runs first; 5 min absorbs a slow RDS start
DEFAULT_API_PORT = 8080
DEFAULT_ROLE_FILE = "/tmp/airflow-container-role"  # noqa: S108 - container-local, written by us only
HEALTHCHECK_TIMEOUT_S = 60.0
TASK_ID_ENV = "ECS_TASK_ID"  # set by main() from the ECS task metadata (or by hand)
HTTP_HEALTH_TIMEOUT_S = 10.0

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_QUEUES = re.compile(r"^[A-Za-z0-9_.:-]+(,[A-Za-z0-9_.:-]+)*$")
_USERNAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")
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


Step = Command | HttpCheck


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


# --- the decision -------------------------------------------------------------------------------


def plan(role: str, args: Sequence[str], env: Mapping[str, str]) -> Plan:
    """Decide what the container does for ``role``; raise PlanError on bad input."""
    if role not in ROLES:
        raise PlanError(f"unknown role {role!r}; the roles are: {', '.join(ROLES)}")
    if role == "healthcheck":
        return _plan_healthcheck(args, env)
    _require_database(env)
    if role == "db-migrate":
        _no_args(role, args)
        return _one_off(
            role,
            env,
            (Command(("airflow", "db", "migrate")),),
            "one-off: migrate the metadata database to this image's Airflow version "
            "(idempotent: an up-to-date database is left as it is)",
        )
    if role == "create-user":
        _no_args(role, args)
        return _plan_create_user(env)
    return _plan_long_running(role, args, env)


def _plan_long_running(role: str, args: Sequence[str], env: Mapping[str, str]) -> Plan:
    warnings: tuple[str, ...] = ()
    if role == "celery-worker":
        exec_argv = ("airflow", "celery", "worker", *_worker_queue_args(args, env), *_worker_name_args(env))
        if env.get("DUMB_INIT_SETSID") != "0":
            warnings = (
                "DUMB_INIT_SETSID is not 0: under dumb-init SIGTERM would reach the task processes "
                "too and kill running tasks instead of a warm shutdown",
            )
    else:
        _no_args(role, args)
        exec_argv = ("airflow", role)
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
        exec_argv=exec_argv,
        wait_for_migrations=wait,
        role_file=_role_file(env),
        warnings=warnings,
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
    if not _QUEUES.match(queues):
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


def _plan_create_user(env: Mapping[str, str]) -> Plan:
    auth_manager = env.get("AIRFLOW__CORE__AUTH_MANAGER", "").strip()
    if auth_manager != FAB_AUTH_MANAGER:
        raise PlanError(
            "create-user needs the FAB auth manager: set "
            f"AIRFLOW__CORE__AUTH_MANAGER={FAB_AUTH_MANAGER} (got {auth_manager or 'nothing'})"
        )
    _check_password(env)
    username = env.get("AIRFLOW_ADMIN_USERNAME", "").strip() or "admin"
    if not _USERNAME.match(username):
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
        ping = ("celery", "--app", CELERY_APP, "inspect", "ping", "-d", node)
        step = Command(ping, timeout_s=HEALTHCHECK_TIMEOUT_S)
        reason = f"celery-worker: {node} answers a ping through the broker"
    elif target in JOB_TYPES:
        check = ("airflow", "jobs", "check", "--job-type", JOB_TYPES[target], "--local")
        step = Command(check, timeout_s=HEALTHCHECK_TIMEOUT_S)
        reason = f"{target}: this host's {JOB_TYPES[target]} heartbeats in the metadata database"
    else:
        raise PlanError(
            f"healthcheck: unknown role {target!r}; the roles are: {', '.join(LONG_RUNNING_ROLES)}"
        )
    return Plan(role="healthcheck", reason=reason, steps=(step,))


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
one-off jobs (idempotent):
  db-migrate | create-user
health (0 = healthy, 1 = unhealthy; ROLE defaults to the role this container runs):
  healthcheck [ROLE]
"""


def _say(message: str) -> None:
    print(f"entrypoint: {message}", file=sys.stderr, flush=True)


def _child_env(p: Plan, env: Mapping[str, str]) -> dict[str, str]:
    child = {k: v for k, v in env.items() if k not in p.env_unset}
    child.update(p.env_set)
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


def execute(p: Plan, env: Mapping[str, str]) -> int:
    """Apply a plan: run its steps in order, then become its exec command. Returns an exit code."""
    _say(f"{p.role}: {p.reason}")
    for warning in p.warnings:
        _say(f"warning: {warning}")
    _record_role(p)
    child_env = _child_env(p, env)
    for step in p.steps:
        _say(f"running: {step.describe()}")
        code = _run_command(step, env, child_env) if isinstance(step, Command) else _run_http(step)
        if code != 0:
            _say(f"{p.role}: failed: `{step.describe()}` exited with code {code}")
            return code if code > 0 else 1
    if p.exec_argv is None:
        _say(f"{p.role}: done")
        return 0
    _say(f"exec: {shlex.join(p.exec_argv)}")
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
