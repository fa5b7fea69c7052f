"""``make up-containers`` (tests/containers/up.py) as a user runs it: a foreground process that
brings the template's containers up through the bring-up state machine, serves the UI, and on
Ctrl-C hibernates and leaves nothing running; run again, it resumes with the history kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from airflow_control_plane.poll import poll_until
from tests.conftest import PG_HOST, PG_PORT, PG_USER, REPO_ROOT, RedisDatabase
from tests.containers.docker import LABEL, docker
from tests.harness import request_json

pytestmark = pytest.mark.containers


class Command:
    """The command in the background, its output collected line by line."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.containers.up"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def said(self, text: str) -> str | None:
        return next((line for line in self.lines if text in line), None)

    def wait(self, timeout_s: float) -> int:
        code = self.process.wait(timeout=timeout_s)
        self._reader.join(10)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


def _api(url: str, path: str, body: object | None = None, token: str = "") -> dict[str, object]:
    return dict(request_json(url + path, method="GET" if body is None else "POST", body=body, token=token))


def _runs(database_url: str) -> list[str]:
    import pg8000.native

    name = database_url.rsplit("/", 1)[1]
    conn = pg8000.native.Connection(user=PG_USER, host=PG_HOST, port=PG_PORT, database=name)
    try:
        return [str(row[0]) for row in conn.run("SELECT run_id FROM dag_run WHERE dag_id = 'even_odd'")]
    finally:
        conn.close()


@pytest.fixture
def settings(
    image: str, tmp_path: Path, redis_database: RedisDatabase, pg_database_factory: object
) -> Iterator[dict[str, str]]:
    name = f"acp_up_{uuid.uuid4().hex[:8]}"
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_IMAGE": image,
            "AFCTL_CONTAINERS_STATE_DIR": str(tmp_path / "state"),
            "AFCTL_CONTAINERS_DATABASE_URL": f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}",
            "AFCTL_CONTAINERS_REDIS_URL": redis_database.url,
            "AFCTL_CONTAINERS_API_PORT": "0",  # never the user's 8080: a free port
            "AFCTL_CONTAINERS_AUTOSCALE_INTERVAL": "5",
        }
    )
    yield env
    import pg8000.native

    admin = pg8000.native.Connection(user=PG_USER, host=PG_HOST, port=PG_PORT, database="postgres")
    try:
        admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def _containers_left() -> list[str]:
    return docker("ps", "-a", "--filter", f"label={LABEL}", "--format", "{{.Names}}").split()


def _url(command: Command) -> str:
    line = command.said("ready in")
    assert line, command.lines[-20:]
    return line.split(": ", 2)[2].split(" ")[0]


@pytest.mark.timeout(1200)
def test_up_containers_serves_the_ui_hibernates_on_ctrl_c_and_resumes_with_history(
    settings: dict[str, str],
) -> None:
    before = set(_containers_left())
    # GIVEN the command running in the foreground, as `make up-containers` runs it
    first = Command(settings)
    try:
        poll_until(
            lambda: first.said("ready in") or first.process.poll() is not None,
            timeout_s=600,
            interval_s=2,
            what="the bring-up to report ready",
        )
        assert first.said("ready in"), first.lines[-30:]
        url = _url(first)
        # THEN the api-server container answers on the URL it printed, every component healthy
        health = _api(url, "/api/v2/monitor/health")
        assert {part["status"] for part in health.values() if isinstance(part, dict)} == {"healthy"}
        # AND the secrets' local values are kept for the next run, readable by the user only
        secrets = Path(settings["AFCTL_CONTAINERS_STATE_DIR"], "secrets.json")
        assert secrets.stat().st_mode & 0o777 == 0o600
        values_before = json.loads(secrets.read_text())
        # AND the admin signs in with the password kept there, and records a run (paused DAG)
        login = {"username": "admin", "password": values_before["AdminPasswordSecret"]}
        token = str(_api(url, "/auth/token", login)["access_token"])

        def parsed() -> bool:
            try:
                _api(url, "/api/v2/dags/even_odd", token=token)
            except urllib.error.HTTPError:
                return False
            return True

        poll_until(parsed, timeout_s=300, interval_s=3, what="even_odd to be parsed")
        run = _api(url, "/api/v2/dags/even_odd/dagRuns", {"logical_date": None}, token)

        # WHEN the user presses Ctrl-C
        first.process.send_signal(signal.SIGINT)
        code = first.wait(600)
    finally:
        first.kill()

    # THEN it hibernated through the state machine and left no container behind
    assert code == 0, first.lines[-30:]
    assert first.said("hibernated: every service at 0"), first.lines[-30:]
    assert first.said("no container of this environment is left")
    assert set(_containers_left()) == before

    # WHEN it runs again (here: bring up, then hibernate at once)
    second = Command(settings | {"AFCTL_CONTAINERS_EXIT_AFTER_READY": "1"})
    try:
        code = second.wait(900)
    finally:
        second.kill()

    # THEN it came up on the same database with the same secrets and went down again, the run
    # recorded before still there
    assert code == 0, second.lines[-30:]
    assert second.said("ready in"), second.lines[-30:]
    assert json.loads(secrets.read_text()) == values_before
    assert set(_containers_left()) == before
    assert str(run["dag_run_id"]) in _runs(settings["AFCTL_CONTAINERS_DATABASE_URL"])
