"""The template's task definitions run as containers of the built image, as ECS runs them.

GIVEN the image built from airflow_image/Dockerfile and every task definition of the
translated template (command, environment, secrets, EFS mount, stop timeout, health check,
CPU share), WHEN the one-off jobs and every service run as containers, THEN the jobs exit 0,
every service turns healthy under its own health check on its own CPU share, a DAG runs on the
worker container, and stopping the worker with its stop timeout during a task is a warm
shutdown that lets the task succeed on its first try.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.containers.conftest import Stack
from tests.containers.docker import RunningContainer
from tests.harness import request_json

pytestmark = pytest.mark.containers

ONE_OFF_TIMEOUT_S = 600


def _request(url: str, body: object | None, token: str | None, method: str) -> Any:
    return request_json(url, method=method, body=body, token=token)


def _wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, every: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every)


class Running:
    """The stack brought up once for this module, with what each step produced."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.one_off: dict[str, list[tuple[int, str]]] = {}
        self.services: dict[str, RunningContainer] = {}

    def run_one_off(self, role: str) -> tuple[int, str]:
        spec = self.stack.spec(role)
        runs = self.one_off.setdefault(role, [])
        container = self.stack.ecs.run(spec, suffix=f"-{len(runs)}")
        code = container.wait_exit(ONE_OFF_TIMEOUT_S)
        runs.append((code, container.logs()))
        return runs[-1]

    def token(self) -> str:
        body = {"username": "admin", "password": self.stack.admin_password}
        return str(_request(f"{self.stack.base_url}/auth/token", body, None, "POST")["access_token"])

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        token = self.token()
        api = f"{self.stack.base_url}/api/v2"

        def parsed() -> bool:
            try:
                _request(f"{api}/dags/{dag_id}", None, token, "GET")
            except urllib.error.HTTPError:
                return False
            return True

        _wait_for(parsed, 300, f"the DAG {dag_id} to be parsed")
        _request(f"{api}/dags/{dag_id}", {"is_paused": False}, token, "PATCH")
        run = _request(f"{api}/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf}, token, "POST")
        return str(run["dag_run_id"])

    def query(self, sql: str, **params: Any) -> list[list[Any]]:
        connection = self.stack.database.connect()
        try:
            return list(connection.run(sql, **params))
        finally:
            connection.close()

    def run_state(self, dag_id: str, run_id: str) -> str:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id = :d AND run_id = :r", d=dag_id, r=run_id)
        return str(rows[0][0]) if rows else "missing"


@pytest.fixture(scope="module")
def running(stack_factory: Callable[[], Stack]) -> Iterator[Running]:
    stack = stack_factory()
    result = Running(stack)
    code, logs = result.run_one_off("db-migrate")
    assert code == 0, f"db-migrate exited {code}:\n{logs[-4000:]}"
    for _ in range(2):
        result.run_one_off("create-user")
    # Every long-running task definition (those with a health check), started together as
    # bring-up starts the services.
    for spec in stack.specs:
        if spec.health is not None:
            result.services[spec.family] = stack.ecs.run(spec)
    return result


def test_db_migrate_exits_zero(running: Running) -> None:
    assert [code for code, _ in running.one_off["db-migrate"]] == [0]
    assert running.query("SELECT count(*) FROM alembic_version")[0][0] == 1


def test_create_user_twice_succeeds_and_never_logs_the_password(running: Running) -> None:
    runs = running.one_off["create-user"]
    assert [code for code, _ in runs] == [0, 0], [logs[-2000:] for _, logs in runs]
    assert running.stack.admin_password
    for _, logs in runs:
        assert running.stack.admin_password not in logs
    assert running.query("SELECT count(*) FROM ab_user WHERE username = 'admin'")[0][0] == 1


def test_every_service_turns_healthy_under_its_own_check_and_cpu_share(running: Running) -> None:
    assert {s.command[0] for s in running.stack.specs if s.health} >= {
        "api-server",
        "scheduler",
        "dag-processor",
        "triggerer",
        "celery-worker",
    }
    for family, container in running.services.items():
        health = container.spec.health
        assert health is not None
        # The check runs at its interval; a check that cannot finish within its timeout on the
        # task's CPU share never turns the container healthy.
        container.wait_healthy(health.start_period + 3 * health.interval + 60)
        inspected = container.inspect()
        host_config = inspected["HostConfig"]
        assert isinstance(host_config, dict)
        assert host_config["NanoCpus"] == int(container.spec.cpus * 1e9), family


_FIND_CHECKS = (
    "import os\n"
    "for pid in os.listdir('/proc'):\n"
    "    if not pid.isdigit() or int(pid) == os.getpid():\n"
    "        continue\n"
    "    try:\n"
    "        cmd = open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\\0', b' ').decode()\n"
    "    except OSError:\n"
    "        continue\n"
    "    if any(w in cmd for w in ('healthcheck', 'jobs check', 'inspect ping')):\n"
    "        print(pid, cmd[:200])\n"
)


def _check_processes(container: RunningContainer) -> list[str]:
    found = container.exec("python", "-c", _FIND_CHECKS)
    assert found.returncode == 0, found.stderr
    return found.stdout.splitlines()


def _killed_at_timeout(container: RunningContainer, after_s: float, *argv: str, env: dict[str, str]) -> int:
    """Start the check as the runtime does and SIGKILL that one process, as the runtime does at
    its timeout (--foreground: GNU timeout would otherwise kill the whole process group).
    An empty value in ``env`` unsets that variable."""
    flags = [f"--env={k}={v}" for k, v in env.items() if v]
    unset = [arg for k, v in env.items() if not v for arg in ("-u", k)]
    killer = ("timeout", "--foreground", "-s", "KILL", str(after_s))
    proc = subprocess.run(
        ["docker", "exec", *flags, container.name, "env", *unset, *killer, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # 0/1: the check finished on its own before the kill; 137: killed.
    assert proc.returncode in (0, 1, 137), (container.name, proc.returncode, proc.stderr[-500:])
    return proc.returncode


def test_health_checks_leave_no_process_behind_when_killed_at_their_timeout(running: Running) -> None:
    """The container runtime kills only the check process it started when the check times
    out; nothing that process started may keep running (and costing the task's CPU)."""
    for container in running.services.values():
        health = container.spec.health
        assert health is not None
        argv = health.command[1:]
        variants: list[dict[str, str]] = [{}]
        if container.spec.command[0] in ("scheduler", "triggerer", "dag-processor", "celery-worker"):
            # The fallback that starts Airflow's own CLI (database/broker URL from a command).
            variants.append(
                {
                    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "",
                    # Airflow runs it while it loads its configuration: a command that takes
                    # a minute holds the CLI mid-run, whatever the CPU, when the kill comes.
                    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD": "sleep 60",
                    "AIRFLOW__CELERY__BROKER_URL": "",
                }
            )
        for env in variants:
            code = _killed_at_timeout(container, 3, *argv, env=env)
            if env:  # the CLI is still loading its configuration: the kill hits it mid-run
                assert code == 137, (container.name, code)
            time.sleep(2)
            processes = _check_processes(container)
            # Airflow's/Celery's CLI runs only under a check; its check was killed, so any
            # still running is an orphan. Of the entrypoint itself, only the runtime's own
            # periodic check may be running right now.
            orphans = [p for p in processes if "jobs check" in p or "inspect ping" in p]
            assert not orphans, (container.name, env, orphans)
            assert len(processes) <= 1, (container.name, env, processes)


def test_even_odd_runs_on_the_worker_container(running: Running) -> None:
    worker = next(c for c in running.services.values() if c.spec.command[0] == "celery-worker")
    worker.wait_healthy(600)
    run_id = running.trigger("even_odd", {})
    _wait_for(
        lambda: running.run_state("even_odd", run_id) in ("success", "failed"), 600, "even_odd to finish"
    )
    assert running.run_state("even_odd", run_id) == "success"
    hostnames = running.query(
        "SELECT DISTINCT hostname FROM task_instance WHERE dag_id = 'even_odd' AND run_id = :r", r=run_id
    )
    assert hostnames
    assert all(row[0] for row in hostnames)


def test_stopping_the_worker_with_its_stop_timeout_is_a_warm_shutdown(running: Running) -> None:
    worker = next(c for c in running.services.values() if c.spec.command[0] == "celery-worker")
    stop_timeout = worker.spec.stop_timeout
    assert stop_timeout is not None, "the worker task definition sets no StopTimeout (ECS default 30 s)"
    worker.wait_healthy(600)
    duration = max(10, stop_timeout // 3)
    run_id = running.trigger("long_running", {"duration_seconds": duration, "progress_seconds": 5})

    def task_running() -> bool:
        rows = running.query(
            "SELECT state FROM task_instance WHERE dag_id = 'long_running' AND run_id = :r", r=run_id
        )
        return bool(rows) and rows[0][0] == "running"

    _wait_for(task_running, 600, "long_running's task to run on the worker")
    started = time.monotonic()
    from tests.containers.docker import docker

    docker("stop", "-t", str(stop_timeout), worker.name, timeout=stop_timeout + 60)
    stopped_after = time.monotonic() - started
    state = worker.state()
    assert state["ExitCode"] == 0, (state, worker.logs()[-4000:])
    assert stopped_after < stop_timeout, f"the worker was killed at the stop timeout ({stopped_after:.0f} s)"
    rows = running.query(
        "SELECT state, try_number FROM task_instance WHERE dag_id = 'long_running' AND run_id = :r", r=run_id
    )
    assert rows == [["success", 1]], rows
