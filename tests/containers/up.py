"""``make up-containers``: the production image with the template's own task definitions and
state machines, on this machine's Docker, before anything is deployed.

What runs: the image built from airflow_image/ (``make image``), each container with the
command, environment, secrets (local values), DAGs volume, stop timeout, health check and CPU
of its task definition in the translated template.yaml; statemachines/bringup.asl.json to bring
it up (migrate, admin user, services in order, the real health gate) and
statemachines/hibernate.asl.json to take it down (the real drain check), both unchanged in the
Step Functions emulator with ECS bridged to Docker; the autoscaler Lambda on its schedule,
starting and draining worker containers. The same machinery as the container tests
(tests/containers/), so it needs the dev environment (``make venvs``) and a Docker engine.

What stays emulated: the AWS APIs (moto, in this process: Step Functions, ECS's bookkeeping,
Lambda, Secrets Manager, EventBridge). So the command stays in the foreground: Ctrl-C (or
SIGTERM) runs hibernate, which waits for running tasks as on AWS; a second Ctrl-C while it waits
hibernates with ``force`` (every container gets its stop timeout: a warm shutdown). Nothing is
left running after it returns.

State lives in ``.local/containers/`` (git-ignored; ``AFCTL_CONTAINERS_STATE_DIR`` moves it):
the secrets' local values (mode 0600; the Fernet key must stay the same for the database to
stay readable), the stand-in for the EFS file system, and the DAG sync's cache. The metadata
database (default ``airflow_containers``) and the Redis db number are kept between runs, so a
second ``make up-containers`` resumes with the history kept, as a second bring-up on AWS does.

Settings (environment): ``AIRFLOW_IMAGE`` (default ``airflow-ecs:3.3.2``),
``AFCTL_CONTAINERS_DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/
airflow_containers``; trust auth: no password travels), ``AFCTL_CONTAINERS_REDIS_URL``
(default: a free db number at 127.0.0.1:6379, claimed for the state folder as ``afctl up``
does), ``AFCTL_CONTAINERS_API_PORT`` (default 8080, or a free port when 8080 is taken),
``AFCTL_CONTAINERS_AUTOSCALE_INTERVAL`` (seconds, default 30; 60 on AWS),
``AFCTL_CONTAINERS_EXIT_AFTER_READY=1`` (bring up, then hibernate at once: a smoke test).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from airflow_control_plane.errors import ConfigError
from airflow_control_plane.local.backing import PostgresTarget, RedisTarget, ensure_database, tcp_reachable
from airflow_control_plane.local.lease import claim_redis_db
from tests.conftest import REPO_ROOT, RUNTIME_VENV, PostgresDatabase
from tests.containers.docker import engine_available, free_port
from tests.containers.local_aws import BridgedEnvironment, bridged_environment, bringup_input, hibernate_input
from tests.containers.stack import Stack, build_stack, publish_dags
from tests.containers.taskdefs import translated_template

DEFAULT_IMAGE = "airflow-ecs:3.3.2"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/airflow_containers"
STATE_DIR = Path(os.environ.get("AFCTL_CONTAINERS_STATE_DIR", REPO_ROOT / ".local" / "containers"))
PREFIX = "up-containers:"


def say(message: str) -> None:
    print(f"{PREFIX} {message}", flush=True)


class Stop:
    """Ctrl-C/SIGTERM: the first asks for hibernate, a second for a forced one."""

    def __init__(self) -> None:
        self.requests = 0
        self.event = threading.Event()

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requests += 1
        self.event.set()
        if self.requests > 1:
            say("asked again: the next hibernate is forced (containers get their stop timeout)")


def check_docker(image: str) -> None:
    if not engine_available():
        raise ConfigError("no Docker engine answers: start one (see README, `make up-containers`)")
    inspected = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    if inspected.returncode != 0:
        raise ConfigError(f"the image {image} is not built: `make image IMAGE={image}`")


def database() -> PostgresDatabase:
    target = PostgresTarget.parse(os.environ.get("AFCTL_CONTAINERS_DATABASE_URL", DEFAULT_DATABASE_URL))
    if target.password:
        raise ConfigError("AFCTL_CONTAINERS_DATABASE_URL: trust auth only here (no password in the URL)")
    if not tcp_reachable(target.host, target.port):
        raise ConfigError(f"PostgreSQL does not answer at {target.host}:{target.port}")
    if ensure_database(target):
        say(f"created the database {target.database}")
    return PostgresDatabase(target.host, target.port, target.user, target.database)


def redis_url() -> str:
    configured = os.environ.get("AFCTL_CONTAINERS_REDIS_URL")
    if configured:
        target = RedisTarget.parse(configured)
        url = configured
    else:
        url = claim_redis_db("127.0.0.1", 6379, STATE_DIR)
        target = RedisTarget.parse(url)
    if not tcp_reachable(target.host, target.port):
        raise ConfigError(f"Redis does not answer at {target.host}:{target.port}")
    return url


def saved_secrets() -> dict[str, str]:
    path = STATE_DIR / "secrets.json"
    if not path.exists():
        return {}
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path} is not JSON ({exc}); it holds the Fernet key: fix it, do not delete it"
        ) from None
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise ConfigError(f"{path} must map secret ids to strings")
    return dict(values)


def save_secrets(values: dict[str, str]) -> Path:
    path = STATE_DIR / "secrets.json"
    partial = path.with_suffix(".json.new")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(values, out, indent=1, sort_keys=True)
    partial.replace(path)
    return path


def build(image: str) -> Stack:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    efs_root = STATE_DIR / "efs"
    efs_root.mkdir(exist_ok=True)
    efs_root.chmod(0o755)
    publish_dags(RUNTIME_VENV / "bin" / "afctl", efs_root, STATE_DIR / "dagsync-cache")
    wanted = int(os.environ.get("AFCTL_CONTAINERS_API_PORT", "8080"))
    port = wanted if wanted and not tcp_reachable("127.0.0.1", wanted, timeout_s=0.2) else free_port()
    stack = build_stack(
        image=image,
        translated=translated_template(REPO_ROOT / "template.yaml"),
        database=database(),
        redis_url=redis_url(),
        efs_root=efs_root,
        secret_values=saved_secrets(),
        api_port=port,
    )
    save_secrets(dict(stack.ecs.secret_values))
    return stack


def _decisions(result: dict[str, Any]) -> list[str]:
    lines = [
        f"{d.get('queue', '?')}: {d['action']} {d['from']} -> {d['to']} ({d['reason']})"
        for d in result.get("decisions", [])
        if d.get("action") != "hold"
    ]
    lines.extend(f"error: {error}" for error in result.get("errors", []))
    return lines


def hibernate(env: BridgedEnvironment, stop: Stop) -> bool:
    while True:
        forced = stop.requests > 1
        say("hibernating" + (" (forced)" if forced else ": waiting for running tasks, as on AWS"))
        payload = hibernate_input("make up-containers") | {"force": forced}
        execution = env.hibernate(payload, timeout_s=1800)
        if execution.status == "SUCCEEDED":
            say("hibernated: every service at 0")
            return True
        say(f"hibernate {execution.status}: {execution.error}: {execution.cause}")
        if forced:
            return False
        say("tasks still run; Ctrl-C again to hibernate with force, or wait: retrying in 30 s")
        stop.event.clear()
        stop.event.wait(30)


def serve(env: BridgedEnvironment, stop: Stop, interval_s: float, exit_after_ready: bool) -> int:
    say("bring-up: statemachines/bringup.asl.json over the template's containers")
    started = time.monotonic()
    execution = env.bringup(bringup_input("make up-containers"))
    if execution.status != "SUCCEEDED":
        say(f"bring-up {execution.status}: {execution.error}: {execution.cause}")
        return 1
    say(f"ready in {time.monotonic() - started:.0f} s: {env.stack.base_url} (user admin)")
    say(f"admin password: the AdminPasswordSecret value in {STATE_DIR / 'secrets.json'}")
    if not exit_after_ready:
        say(f"the autoscaler runs every {interval_s:g} s; Ctrl-C hibernates")
    while not exit_after_ready and not stop.event.is_set():
        try:
            for line in _decisions(env.autoscale()):
                say(f"autoscaler: {line}")
        except Exception as exc:  # one failed tick is reported; the schedule goes on
            say(f"autoscaler tick failed: {exc}")
        stop.event.wait(interval_s)
    return 0 if hibernate(env, stop) else 1


def main() -> int:
    image = os.environ.get("AIRFLOW_IMAGE", DEFAULT_IMAGE)
    interval_s = float(os.environ.get("AFCTL_CONTAINERS_AUTOSCALE_INTERVAL", "30"))
    exit_after_ready = os.environ.get("AFCTL_CONTAINERS_EXIT_AFTER_READY", "") == "1"
    stop = Stop()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        check_docker(image)
        stack = build(image)
    except (ConfigError, subprocess.CalledProcessError) as exc:
        say(f"cannot start: {exc}")
        return 2
    try:
        with bridged_environment(stack) as env:
            code = serve(env, stop, interval_s, exit_after_ready)
            env.bridge.wait_stopped(300)
    finally:
        stack.ecs.cleanup()
    say("no container of this environment is left")
    return code


if __name__ == "__main__":
    sys.exit(main())
