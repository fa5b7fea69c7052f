"""The image's settings load the control plane's Celery hooks into real Airflow components.

Without Docker (tests/containers runs the built image), the tests take the image's `ENV` from
airflow_image/Dockerfile itself (they cannot drift from it) and run the script its ENTRYPOINT
runs, airflow_image/entrypoint.py, with the Airflow of .venv. The one image-only path,
PYTHONPATH=/opt/airflow-control-plane, is replaced by functions/common: the directory the
Dockerfile copies from. The ECS agent exists only inside ECS; its stand-in speaks the same
task-protection protocol (tests/contract/test_scaling_protection_agent.py).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import AirflowRuntime, PostgresDatabase, RedisDatabase
from tests.contract.test_scaling_protection_agent import AgentState, running_agent
from tests.harness import celery_executor_app, free_port, protection_puts, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "airflow_image" / "Dockerfile"
ENTRYPOINT = REPO / "airflow_image" / "entrypoint.py"
PACKAGE_PARENT = REPO / "functions" / "common"  # what `COPY functions/common/airflow_control_plane` copies
IMAGE_PACKAGE_PARENT = "/opt/airflow-control-plane"
READY_WITHIN_S = 180  # Airflow + Celery start-up on a shared 2-core machine
PROTECT_WITHIN_S = 120
STOP_WITHIN_S = 90


def image_env() -> dict[str, str]:
    """Every `ENV KEY=VALUE` of the Dockerfile (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(pair.split("=", 1) for pair in line[4:].split())
    return env


WORKER_FORBIDDEN = (
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
)


def worker_env(env: dict[str, str], broker: str) -> dict[str, str]:
    """A worker task's environment: no database or signing keys, a Redis result backend."""
    worker = {k: v for k, v in env.items() if k not in WORKER_FORBIDDEN}
    worker.update(
        AIRFLOW__CELERY__RESULT_BACKEND=broker,
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{free_port()}/execution/",
    )
    return worker


def container_env(runtime: AirflowRuntime, home: Path, db: PostgresDatabase, broker: str) -> dict[str, str]:
    """The host environment without Airflow or AWS settings, the image's ENV, then the task's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "ECS_", "AUTOSCALER_", "WORKER_PROTECTION_"))
    }
    image = image_env()
    assert image["PYTHONPATH"] == IMAGE_PACKAGE_PARENT, "the Dockerfile moved the package: update this test"
    env.update(image)
    env.update(
        PYTHONPATH=str(PACKAGE_PARENT),
        PATH=f"{runtime.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        AIRFLOW_HOME=str(home),
        AIRFLOW_IMAGE_ROLE_FILE=str(home / "role"),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=db.sqlalchemy_url,
        AIRFLOW__CORE__FERNET_KEY=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        AIRFLOW__API__SECRET_KEY=secrets.token_hex(16),
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
        AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
        AIRFLOW__CELERY__BROKER_URL=broker,
        AIRFLOW__CELERY__RESULT_BACKEND="db+" + db.sqlalchemy_url,
        AIRFLOW__CELERY__WORKER_CONCURRENCY="1",
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
        AWS_DEFAULT_REGION="us-east-1",
    )
    return env


def wait_logged(condition: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    """Wait, and on timeout show the worker's log tail."""
    wait_for(
        condition, timeout, what, interval_s=0.5, context=lambda: log.read_text(errors="replace")[-4000:]
    )


def agent_was_read(state: AgentState) -> bool:
    with state.lock:
        return any(method == "GET" for method, _ in state.requests)


def test_image_defaults_route_every_role_through_the_control_plane_celery_config() -> None:
    # GIVEN the Dockerfile WHEN its ENV is read
    env = image_env()
    # THEN every role (scheduler and workers alike) builds Celery from the control plane's module,
    # and the warm-shutdown setting the protection relies on is there
    assert env["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"] == (
        "airflow_control_plane.scaling.celery_config.CELERY_CONFIG"
    )
    assert env["DUMB_INIT_SETSID"] == "0"
    # AND the gating variables are NOT image defaults: ECS injects ECS_AGENT_URI, and only the
    # scheduler's task definition names the wake-up function
    assert not {"ECS_AGENT_URI", "AUTOSCALER_WAKEUP_FUNCTION"} & set(env)


def test_scheduler_side_app_installs_the_wakeup_hook_only(
    airflow_runtime: AirflowRuntime,
    migrated_database_factory: Callable[[str], PostgresDatabase],
    redis_database: RedisDatabase,
    tmp_path: Path,
) -> None:
    # GIVEN the image's settings, a wake-up function name (the scheduler's task definition) and
    # no ECS_AGENT_URI
    env = container_env(
        airflow_runtime, tmp_path, migrated_database_factory("hooks_sched"), redis_database.url
    )
    env["AUTOSCALER_WAKEUP_FUNCTION"] = "airflow-autoscaler"
    # WHEN Airflow builds its Celery executor app (what the scheduler publishes tasks with)
    queue, module_file, wakeup, protection = celery_executor_app(
        airflow_runtime,
        env,
        "app.conf.task_default_queue",
        "c.__file__",
        "c.WAKEUP_INSTALLED",
        "c.PROTECTION_INSTALLED",
    )
    # THEN the app is built from the control plane's module, taken from the copied package,
    # with the wake-up hook installed and no protection hook
    assert queue == "default"
    assert Path(module_file).is_relative_to(PACKAGE_PARENT)
    assert (wakeup, protection) == ("True", "False")


def test_on_the_sqs_broker_a_worker_takes_no_scale_in_protection(
    airflow_runtime: AirflowRuntime,
    migrated_database_factory: Callable[[str], PostgresDatabase],
    tmp_path: Path,
) -> None:
    # GIVEN the image's settings inside ECS (an agent URI) with the SQS broker and its transport
    # options as template.yaml sets them (nothing is contacted: the app is only built)
    env = container_env(airflow_runtime, tmp_path, migrated_database_factory("hooks_sqs"), "sqs://")
    env.update(
        ECS_AGENT_URI="http://127.0.0.1:9/api/task",
        AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__REGION="us-east-1",
        AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__QUEUE_NAME_PREFIX="airflow-dev-",
        AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT="43200",
    )
    # WHEN Airflow builds its Celery app (what a worker runs)
    transport, protection, skipped_for_sqs = celery_executor_app(
        airflow_runtime,
        env,
        "app.connection_for_write().transport.driver_type",
        "c.PROTECTION_INSTALLED",
        "'SQS' in c.PROTECTION_SKIPPED",
    )
    # THEN no protection hook is installed: nothing could ever release it (no remote control,
    # so no drain), and hibernate's lower desired count would not stop a protected worker
    assert (transport, protection, skipped_for_sqs) == ("sqs", "False", "True")


def test_worker_started_through_the_entrypoint_protects_its_task_from_start(
    airflow_runtime: AirflowRuntime,
    migrated_database_factory: Callable[[str], PostgresDatabase],
    redis_database: RedisDatabase,
    tmp_path: Path,
) -> None:
    redis_database.client().flushdb()
    queue = f"acp_hooks_{secrets.token_hex(4)}"
    database = migrated_database_factory("hooks_worker")
    env = worker_env(
        container_env(airflow_runtime, tmp_path, database, redis_database.url), redis_database.url
    )
    log = tmp_path / "worker.log"
    with running_agent() as (agent_uri, state):
        # GIVEN a worker container (the image's ENV, the entrypoint's celery-worker role) inside
        # an ECS task, i.e. with ECS_AGENT_URI pointing at the task's agent
        env.update(ECS_AGENT_URI=agent_uri, WORKER_PROTECTION_INTERVAL_SECONDS="0.5")
        with log.open("wb") as sink:
            worker = subprocess.Popen(
                [str(airflow_runtime.python), str(ENTRYPOINT), "celery-worker", "--queues", queue],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_logged(
                lambda: " ready." in log.read_text(errors="replace"), READY_WITHIN_S, "the worker", log
            )
            assert f"exec: airflow celery worker --queues {queue}" in log.read_text()
            # the worker protected its task at start (worker_init), before any task could reach
            # it, and the keeper (started on worker_ready) polls the agent
            wait_logged(lambda: agent_was_read(state), 30, "the keeper's first poll", log)
            assert protection_puts(state)[:1] == [True]
            # WHEN the scheduler side sends a workload to the worker's queue (a malformed one:
            # running a real task needs the whole stack, and the hook acts before the body runs)
            send = subprocess.run(
                [
                    str(airflow_runtime.python),
                    "-c",
                    "import sys\n"
                    "from airflow.providers.celery.executors.celery_executor_utils import app\n"
                    "app.send_task('execute_workload', args=['{}'], queue=sys.argv[1])\n",
                    queue,
                ],
                env={k: v for k, v in env.items() if k != "ECS_AGENT_URI"},
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            assert send.returncode == 0, send.stderr[-3000:]
            # THEN the task reaches the worker (it fails on its malformed input, before any
            # task_prerun), and the worker keeps its protection once idle again: only the
            # scaler's drain releases it
            wait_logged(lambda: "execute_workload" in log.read_text(errors="replace"), 300, "the task", log)
            time.sleep(1.5)  # three keeper intervals
            assert False not in protection_puts(state)
            assert state.enabled
            with state.lock:
                first = next(b for m, b in state.requests if m == "PUT" and b and b["ProtectionEnabled"])
            assert first["ExpiresInMinutes"] == 60  # the package default: the image sets none
            # AND SIGTERM to the worker (the entrypoint's process, now `airflow celery worker`)
            # is a warm shutdown
            assert worker.poll() is None, log.read_text(errors="replace")[-4000:]
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=STOP_WITHIN_S) == 0
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.wait(timeout=STOP_WITHIN_S)
            with contextlib.suppress(ProcessLookupError):  # anything left in the group
                os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)
