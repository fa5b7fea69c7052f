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
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, AirflowRuntime, PostgresDatabase, RedisDatabase
from tests.containers.docker import docker, engine_available
from tests.containers.stack import Stack, build_stack, publish_dags
from tests.containers.taskdefs import translated_template

IMAGE = os.environ.get("AIRFLOW_TEST_IMAGE", "airflow-ecs:3.3.2")
REQUIRED = os.environ.get("AFCTL_REQUIRE_CONTAINERS", "") == "1"


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


@pytest.fixture(scope="module")
def stack_factory(
    image: str,
    translated: dict[str, Any],
    airflow_runtime: AirflowRuntime,
    pg_database_factory: Callable[[str], PostgresDatabase],
    redis_database: RedisDatabase,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Stack]]:
    """Build stacks (fresh database each, the run's Redis db flushed; template ``parameters``
    beside the image, if any); remove every container at the end."""
    created: list[Stack] = []

    def create(parameters: dict[str, str] | None = None) -> Stack:
        database = pg_database_factory("ctr")
        redis_database.client().flushdb()
        efs_root = tmp_path_factory.mktemp("efs")
        efs_root.chmod(0o755)
        publish_dags(airflow_runtime.afctl, efs_root, tmp_path_factory.mktemp("dagsync-cache"))
        stack = build_stack(
            image=image,
            translated=translated,
            database=database,
            redis_url=redis_database.url,
            efs_root=efs_root,
            parameters=parameters,
        )
        created.append(stack)
        return stack

    yield create
    for stack in created:
        stack.ecs.cleanup()


__all__ = ["Stack", "docker"]
