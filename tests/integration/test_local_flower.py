"""Flower in the local runtime (AFCTL_FLOWER=true): the service spec `afctl up` writes for it,
run by the real supervisor as a real `airflow celery flower` against the real Redis, answers
401 without its credentials and 200 with them under /flower, holds its basic auth in its own
environment only (not on its command line, not in the shared environment), and stops at 0.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_control_plane.local import proc
from airflow_control_plane.local.airflow_env import FLOWER_SERVICE, STATE_MARKER_ENV, flower_spec
from airflow_control_plane.local.ecs import LocalEcs, ensure_supervisor
from airflow_control_plane.local.hibernate import sweep_strays
from airflow_control_plane.local.paths import StatePaths
from airflow_control_plane.local.secrets_store import load_or_create_flower_credentials
from airflow_control_plane.local.supervisor import dump_spec, load_spec
from airflow_control_plane.poll import poll_until
from tests.conftest import AirflowRuntime, RedisDatabase
from tests.integration.test_flower_auth import get
from tests.integration.test_image_roles_airflow import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def local_flower(
    airflow_runtime: AirflowRuntime, redis_database: RedisDatabase, tmp_path: Path
) -> Iterator[tuple[LocalEcs, StatePaths, int]]:
    paths = StatePaths(tmp_path / "state")
    paths.ensure()
    port = free_port()
    credentials = load_or_create_flower_credentials(paths.flower_credentials)
    spec = flower_spec(str(airflow_runtime.airflow), port, credentials.username, credentials.password)
    shared = {
        "PATH": f"{airflow_runtime.venv / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(paths.airflow_home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CELERY__BROKER_URL": redis_database.url,
        STATE_MARKER_ENV: str(paths.root),
    }
    dump_spec(paths.supervisor_spec, {FLOWER_SERVICE: spec}, shared, grace=5.0)
    ecs = ensure_supervisor(paths, shared)
    try:
        yield ecs, paths, port
    finally:
        ecs.shutdown(timeout_s=30)
        sweep_strays(str(paths.root), grace_s=2.0)


def test_afctl_flower_is_behind_basic_auth_and_stops_at_zero(
    local_flower: tuple[LocalEcs, StatePaths, int],
) -> None:
    ecs, paths, port = local_flower
    credentials = load_or_create_flower_credentials(paths.flower_credentials)
    # GIVEN the spec as written: the password only in Flower's own environment
    written = load_spec(paths.supervisor_spec)
    assert credentials.password not in str(written.env)
    assert dict(written.services[FLOWER_SERVICE].env) == {
        "AIRFLOW__CELERY__FLOWER_BASIC_AUTH": f"flower:{credentials.password}"
    }
    assert oct(paths.flower_credentials.stat().st_mode & 0o777) == "0o600"
    # WHEN bring-up raises it to one process
    ecs.set_desired_count(FLOWER_SERVICE, 1)
    base = f"http://127.0.0.1:{port}/flower"

    def healthy() -> bool | None:
        with contextlib.suppress(OSError):
            return True if get(f"{base}/healthcheck")[0] == 200 else None
        return None

    poll_until(healthy, timeout_s=120, interval_s=1.0, what="local flower healthcheck")
    # THEN it refuses anyone without the credentials and serves with them
    assert get(f"{base}/workers")[0] == 401
    assert get(f"{base}/workers", ("flower", "wrong"))[0] == 401
    assert get(f"{base}/workers", (credentials.username, credentials.password))[0] == 200
    # AND the password is not on its command line
    (pid,) = next(s for s in ecs.describe() if s.name == FLOWER_SERVICE).pids
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert "flower" in cmdline
    assert credentials.password not in cmdline
    # WHEN hibernate sets it to 0 THEN no Flower process is left
    ecs.set_desired_count(FLOWER_SERVICE, 0)
    poll_until(
        lambda: True if not proc.is_alive(pid) else None, timeout_s=60, interval_s=0.5, what="flower stopped"
    )
