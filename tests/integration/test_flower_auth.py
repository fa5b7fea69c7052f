"""Flower for real: the image entrypoint's ``flower`` role (``airflow celery flower`` of .venv)
against the real Redis, reachable only with its basic-auth credentials, under its path prefix.

One Flower process per module. The load balancer in front of it on AWS only routes the path
(template tests check the rule); what answers 401 or 200 is this process.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_control_plane.poll import poll_until
from tests.conftest import AirflowRuntime, RedisDatabase
from tests.integration.test_image_roles_airflow import ENTRYPOINT, free_port

pytestmark = pytest.mark.integration

PASSWORD = f"Flower-{secrets.token_hex(10)}"
STARTED_WITHIN_S = 120


@dataclass(frozen=True)
class RunningFlower:
    base: str  # http://127.0.0.1:<port>
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes]

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)  # noqa: S310 - a local http URL built here
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def flower(
    airflow_runtime: AirflowRuntime, redis_database: RedisDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningFlower]:
    home = tmp_path_factory.mktemp("flower-home")
    port = free_port()
    env = {
        "PATH": f"{airflow_runtime.venv / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CELERY__BROKER_URL": redis_database.url,
        # What the template injects from the Flower secret's two JSON keys.
        "AIRFLOW_FLOWER_USERNAME": "flower",
        "AIRFLOW_FLOWER_PASSWORD": PASSWORD,
        "AIRFLOW_FLOWER_HOSTNAME": "127.0.0.1",
        "AIRFLOW_FLOWER_PORT": str(port),
        "AIRFLOW_IMAGE_ROLE_FILE": str(home / "role"),
    }
    log = home / "flower.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(airflow_runtime.python), str(ENTRYPOINT), "flower"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = RunningFlower(f"http://127.0.0.1:{port}", env, log, process)

    def healthy() -> bool | None:
        assert process.poll() is None, f"flower exited early:\n{running.tail()}"
        with contextlib.suppress(OSError):
            status, _ = get(f"{running.base}/flower/healthcheck")
            return True if status == 200 else None
        return None

    try:
        poll_until(healthy, timeout_s=STARTED_WITHIN_S, interval_s=1.0, what="flower healthcheck")
        yield running
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.mark.parametrize("path", ["/flower/", "/flower/workers", "/flower/api/workers", "/flower/tasks"])
def test_flower_answers_401_without_or_with_wrong_credentials_and_200_with_them(
    flower: RunningFlower, path: str
) -> None:
    # GIVEN Flower started by the entrypoint with the secret's user and password
    url = flower.base + path
    # WHEN a page or the API is asked for without credentials, or with a wrong password
    anonymous, _ = get(url)
    wrong, _ = get(url, ("flower", PASSWORD + "x"))
    other_user, _ = get(url, ("admin", PASSWORD))
    # THEN Flower refuses; with the right credentials it serves the page
    assert (anonymous, wrong, other_user) == (401, 401, 401), flower.tail()
    status, body = get(url, ("flower", PASSWORD))
    assert status == 200, flower.tail()
    assert body


def test_flower_serves_only_under_its_prefix_and_reads_the_real_broker(flower: RunningFlower) -> None:
    # GIVEN the prefix /flower THEN the root path is not Flower's (the ALB routes only /flower*)
    status, _ = get(flower.base + "/workers", ("flower", PASSWORD))
    assert status == 404
    # AND the broker page lists the real Redis it reads (the db number of this run)
    status, body = get(flower.base + "/flower/broker", ("flower", PASSWORD))
    assert status == 200, flower.tail()
    assert b"redis" in body.lower()


def test_the_password_never_reaches_flowers_command_line_or_log(flower: RunningFlower) -> None:
    cmdline = Path(f"/proc/{flower.process.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert "airflow celery flower" in cmdline or "flower" in cmdline
    assert PASSWORD not in cmdline
    assert PASSWORD not in flower.log.read_text(errors="replace")


def test_the_entrypoint_health_check_passes_for_the_running_flower(flower: RunningFlower) -> None:
    result = subprocess.run(
        [str(Path(flower.env["PATH"].split(":")[0]) / "python"), str(ENTRYPOINT), "healthcheck", "flower"],
        env=flower.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
