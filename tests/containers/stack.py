"""One stack of the template's containers on this host: what the container tests and
``make up-containers`` share.

:func:`build_stack` resolves the translated template's task definitions (tests/containers/
taskdefs.py) against local backing services, publishes the DAGs onto a folder that stands for
the EFS file system (as the DAG sync does, owned by the access point's POSIX user), and gives
each task the ports it would have on its own ENI without colliding on the shared host. It
starts nothing: :class:`tests.containers.docker.LocalEcs` runs the containers.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tests.conftest import REPO_ROOT, PostgresDatabase
from tests.containers.docker import LocalEcs, free_port
from tests.containers.taskdefs import (
    ContainerSpec,
    LocalBackends,
    container_specs,
    local_secret_values,
    service_hostnames,
)

AIRFLOW_UID = 50000


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


def publish_dags(afctl: Path, efs_root: Path, cache: Path) -> None:
    """Publish this checkout's committed dags/ onto the stand-in EFS as the DAG sync does,
    under the access point's root, owned by the access point's POSIX user."""
    sha = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    target = efs_root / "dags"
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            str(afctl),
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


def build_stack(
    *,
    image: str,
    translated: Mapping[str, Any],
    database: PostgresDatabase,
    redis_url: str,
    efs_root: Path,
    secret_values: Mapping[str, str] | None = None,
    api_port: int | None = None,
    parameters: Mapping[str, str] | None = None,
) -> Stack:
    """The template's containers against ``database`` and ``redis_url``, DAGs under
    ``efs_root`` (already published). ``secret_values`` (by secret logical id) are kept where
    given, so a stack built again reads what the last one wrote (the Fernet key above all).
    ``parameters`` are template parameters beside the image (``EcsExecutorEnabled``, ...)."""
    parameters = {**(parameters or {}), "AirflowImageUri": image}
    backends = LocalBackends(
        {
            "postgresql+psycopg2": database.sqlalchemy_url,
            "postgresql": database.dsn,
            "db+postgresql": "db+" + database.dsn,
            "redis": redis_url,
            "rediss": redis_url,
        }
    )
    secrets = local_secret_values(translated, backends, parameters)
    secrets.update({key: value for key, value in (secret_values or {}).items() if key in secrets})
    specs = list(container_specs(translated, parameters))
    # Host networking: ports each task would have on its own ENI must not collide here.
    overrides = {
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
    }
    # The api-server's port too: 8080 on a shared host is often taken (each task has its own
    # ENI on ECS); the Cloud Map URLs other tasks use follow it.
    port = api_port or free_port()
    overrides["AIRFLOW__API__PORT"] = str(port)
    hosts = service_hostnames(translated, parameters)
    ports = {p for spec in specs for p in spec.port_mappings}
    rewrites = {f"{host}:{p}": f"{host}:{port}" for host in hosts for p in ports}
    specs = [_rewrite(spec, rewrites) for spec in specs]
    password_ids = [
        ref.secret_id
        for spec in specs
        if spec.command[:1] == ("create-user",)
        for ref in spec.secrets
        if ref.name == "AIRFLOW_ADMIN_PASSWORD"
    ]
    return Stack(
        ecs=LocalEcs(secrets, efs_root, hosts, overrides),
        specs=specs,
        database=database,
        api_port=port,
        admin_password=secrets[password_ids[0]] if password_ids else "",
    )


def _rewrite(spec: ContainerSpec, rewrites: Mapping[str, str]) -> ContainerSpec:
    if not rewrites:
        return spec
    environment = {}
    for key, value in spec.environment.items():
        for old, new in rewrites.items():
            value = value.replace(old, new)
        environment[key] = value
    return replace(spec, environment=environment)
