"""Fixtures for the container tests: the built image and the template's task definitions.

The image is built by `make containers-test` (.ci/containers-test.sh) before pytest runs; these
tests never build it. Without a Docker engine or the image they are skipped, except when
AFCTL_REQUIRE_CONTAINERS=1 (set by the gate), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, AirflowRuntime, PostgresDatabase, RedisDatabase
from tests.containers.docker import LocalEcs, docker, engine_available, free_port
from tests.containers.taskdefs import (
    ContainerSpec,
    LocalBackends,
    container_specs,
    local_secret_values,
    service_hostnames,
    translated_template,
)

IMAGE = os.environ.get("AIRFLOW_TEST_IMAGE", "airflow-ecs:3.3.2")
REQUIRED = os.environ.get("AFCTL_REQUIRE_CONTAINERS", "") == "1"
AIRFLOW_UID = 50000


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (AFCTL_REQUIRE_CONTAINERS=1: `make containers-test` builds it)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def image() -> str:
    if shutil.which("docker") is None or not engine_available():
        _unavailable("no Docker engine answers")
    if (
        subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, check=False).returncode
        != 0
    ):
        _unavailable(f"the image {IMAGE} is not built")
    return IMAGE


@pytest.fixture(scope="session")
def translated() -> dict[str, Any]:
    return translated_template(REPO_ROOT / "template.yaml")


@dataclass
class Stack:
    ecs: LocalEcs
    specs: list[ContainerSpec]
    database: PostgresDatabase
    api_port: int
    admin_password: str

    def spec(self, role: str) -> ContainerSpec:
        """The first container whose command starts with ``role`` (the entrypoint's role)."""
        for spec in self.specs:
            if spec.command and spec.command[0] == role:
                return spec
        raise LookupError(f"no task definition runs {role!r}; commands: {[s.command for s in self.specs]}")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


def publish_dags(airflow_runtime: AirflowRuntime, efs_root: Path, cache: Path) -> None:
    """Publish this checkout's committed dags/ onto the stand-in EFS as the DAG sync does,
    under the access point's root, owned by the access point's POSIX user."""
    sha = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    target = efs_root / "dags"
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            str(airflow_runtime.afctl),
            "sync",
            "--repo",
            f"file://{REPO_ROOT}",
            "--ref",
            sha,
            "--subdir",
            "dags",
            "--target",
            str(target),
            "--cache-dir",
            str(cache),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if os.geteuid() == 0:
        for path in [efs_root, *efs_root.rglob("*")]:
            os.lchown(path, AIRFLOW_UID, 0)


@pytest.fixture(scope="module")
def stack_factory(
    image: str,
    translated: dict[str, Any],
    airflow_runtime: AirflowRuntime,
    pg_database_factory: Callable[[str], PostgresDatabase],
    redis_database: RedisDatabase,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], Stack]]:
    """Build stacks (fresh database each, the run's Redis db flushed); remove every container at the end."""
    created: list[Stack] = []

    def create() -> Stack:
        database = pg_database_factory("ctr")
        redis_database.client().flushdb()
        parameters = {"AirflowImageUri": image}
        backends = LocalBackends(
            {
                "postgresql+psycopg2": database.sqlalchemy_url,
                "postgresql": database.dsn,
                "db+postgresql": "db+" + database.dsn,
                "redis": redis_database.url,
                "rediss": redis_database.url,
            }
        )
        secrets = local_secret_values(translated, backends, parameters)
        specs = list(container_specs(translated, parameters))
        efs_root = tmp_path_factory.mktemp("efs")
        efs_root.chmod(0o755)
        publish_dags(airflow_runtime, efs_root, tmp_path_factory.mktemp("dagsync-cache"))
        # Host networking: ports each task would have on its own ENI must not collide here.
        overrides = {
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        }
        # The api-server's port too: 8080 on a shared host is often taken (each task has its
        # own ENI on ECS); the Cloud Map URLs other tasks use follow it.
        api_port = free_port()
        overrides["AIRFLOW__API__PORT"] = str(api_port)
        hosts = service_hostnames(translated, parameters)
        ports = {port for spec in specs for port in spec.port_mappings}
        rewrites = {f"{host}:{port}": f"{host}:{api_port}" for host in hosts for port in ports}
        specs = [_rewrite(spec, rewrites) for spec in specs]
        password_ids = [
            ref.secret_id
            for spec in specs
            if spec.command[:1] == ("create-user",)
            for ref in spec.secrets
            if ref.name == "AIRFLOW_ADMIN_PASSWORD"
        ]
        stack = Stack(
            ecs=LocalEcs(secrets, efs_root, hosts, overrides),
            specs=specs,
            database=database,
            api_port=api_port,
            admin_password=secrets[password_ids[0]] if password_ids else "",
        )
        created.append(stack)
        return stack

    yield create
    for stack in created:
        stack.ecs.cleanup()


def _rewrite(spec: ContainerSpec, rewrites: dict[str, str]) -> ContainerSpec:
    if not rewrites:
        return spec
    from dataclasses import replace

    environment = {}
    for key, value in spec.environment.items():
        for old, new in rewrites.items():
            value = value.replace(old, new)
        environment[key] = value
    return replace(spec, environment=environment)


__all__ = ["Stack", "docker"]
