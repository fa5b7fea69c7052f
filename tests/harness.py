"""The integration harness: one way to run `afctl` against a state folder, to wait, to call
Airflow's REST API, to make a DAG repository, and to start a Celery probe worker.

Every local-runtime test (tests/integration/test_local_*.py) and the Celery-hook tests use it.
Waits go through airflow_control_plane.poll.poll_until, so a timeout names what was awaited
and what was seen last. `afctl status` is read as JSON (`--json`), never scraped.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airflow_control_plane.local.bringup import BringUp, UpContext
from airflow_control_plane.local.ecs import LocalEcs
from airflow_control_plane.local.hibernate import sweep_strays
from airflow_control_plane.local.paths import StatePaths
from airflow_control_plane.local.protocol import ServiceState
from airflow_control_plane.local.settings import LocalSettings
from airflow_control_plane.poll import PollTimedOut, poll_until
from tests.conftest import AirflowRuntime, PostgresDatabase, RedisDatabase

UP_TIMEOUT_S = 480  # bring-up on two shared cores takes tens of seconds; generous on purpose
DOWN_TIMEOUT_S = 240
WAIT_INTERVAL_S = 1.0


def wait_for(
    check: Callable[[], object],
    timeout_s: float,
    what: str,
    *,
    interval_s: float = WAIT_INTERVAL_S,
    context: Callable[[], str] | None = None,
) -> float:
    """Poll ``check`` until it is truthy; fail the test naming ``what`` (and ``context()``, e.g.
    a log tail) on timeout. Returns the seconds waited."""
    started = time.monotonic()
    try:
        poll_until(lambda: bool(check()) or None, timeout_s=timeout_s, interval_s=interval_s, what=what)
    except PollTimedOut:
        extra = f":\n{context()}" if context is not None else ""
        pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}{extra}")
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server() -> Iterator[str]:
    """moto as an HTTP server on a free loopback port of its own, in this process (it shares
    moto's in-process backends), for code that calls AWS through an endpoint URL; its URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any AIRFLOW*/AFCTL_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AFCTL_"))}
    env.update(extra)
    return env


def folder_env(state: Path, **extra: str) -> dict[str, str]:
    """A state folder whose DAGs come from a folder (no git sync): the light environments."""
    return clean_env(AFCTL_STATE_DIR=str(state), AFCTL_DAGS_SOURCE="folder", **extra)


def validate_input(env: dict[str, str]) -> UpContext:
    """Run the bring-up's first step only (backing services, names, leases, port)."""
    context, _ = BringUp(LocalSettings.from_env(env), lambda _line: None, base_env=env).validate_input()
    return context


def run_afctl(
    afctl: Path, env: dict[str, str], *args: str, timeout: float = UP_TIMEOUT_S, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(afctl), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --- Airflow's REST API ---------------------------------------------------------------------


def request_json(
    url: str,
    *,
    method: str = "GET",
    body: object | None = None,
    token: str | None = None,
    timeout: float = 30,
) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(  # noqa: S310 - http on loopback
        url, data=None if body is None else json.dumps(body).encode(), headers=headers, method=method
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read())


def get_token(base_url: str, username: str, password: str) -> str:
    """A JWT from the FAB auth manager's token endpoint (HTTPError 401 on a wrong password)."""
    body = {"username": username, "password": password}
    return str(request_json(f"{base_url}/auth/token", method="POST", body=body)["access_token"])


def health(base_url: str) -> dict[str, Any]:
    data = request_json(f"{base_url}/api/v2/monitor/health", timeout=10)
    assert isinstance(data, dict)
    return data


@dataclass
class AirflowApi:
    """The public REST API as the environment's admin; the token is fetched on first use."""

    base_url: str
    username: str
    password: str
    _token: str | None = field(default=None, repr=False)

    def token(self) -> str:
        if self._token is None:
            self._token = get_token(self.base_url, self.username, self.password)
        return self._token

    def call(self, method: str, path: str, body: object | None = None) -> dict[str, Any]:
        data = request_json(f"{self.base_url}/api/v2{path}", method=method, body=body, token=self.token())
        assert isinstance(data, dict)
        return data

    def dag_ids(self) -> set[str]:
        """The DAGs Airflow lists (none while the api-server does not answer)."""
        try:
            dags = self.call("GET", "/dags?limit=100")["dags"]
        except (urllib.error.URLError, OSError):
            return set()
        assert isinstance(dags, list)
        return {str(d["dag_id"]) for d in dags}

    def has_dag(self, dag_id: str) -> bool:
        try:
            self.call("GET", f"/dags/{dag_id}")
        except urllib.error.HTTPError:
            return False
        return True

    def trigger(
        self, dag_id: str, conf: dict[str, Any] | None = None, *, parsed_within_s: float = 180
    ) -> str:
        """Wait for the DAG to be parsed, unpause it and start a run; return the run id."""
        wait_for(lambda: self.has_dag(dag_id), parsed_within_s, f"the DAG {dag_id} to be parsed")
        self.call("PATCH", f"/dags/{dag_id}", {"is_paused": False})
        body: dict[str, Any] = {"logical_date": None}
        if conf is not None:
            body["conf"] = conf
        return str(self.call("POST", f"/dags/{dag_id}/dagRuns", body)["dag_run_id"])


# --- a local environment --------------------------------------------------------------------


@dataclass
class LocalEnv:
    """One state folder, the environment `afctl` gets, and its metadata database."""

    afctl: Path
    state: Path
    env: dict[str, str]
    database: PostgresDatabase

    def run(
        self, *args: str, timeout: float = UP_TIMEOUT_S, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_afctl(self.afctl, self.env if env is None else env, *args, timeout=timeout)

    def status(self) -> dict[str, Any]:
        """`afctl status --json` (the shape README documents)."""
        out = self.run("status", "--json", timeout=60)
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert isinstance(report, dict)
        return report

    def services(self) -> dict[str, dict[str, Any]]:
        """Each service of the status report, by name."""
        return {s["name"]: s for s in self.status()["services"]}

    def pids(self) -> dict[str, list[int]]:
        return {name: s["pids"] for name, s in self.services().items()}

    def service(self, name: str) -> ServiceState:
        """One service as the supervisor describes it (cheaper than a status: no health call)."""
        return next(s for s in LocalEcs(self.paths).describe() if s.name == name)

    @property
    def paths(self) -> StatePaths:
        return StatePaths(self.state)

    @property
    def base_url(self) -> str:
        port = json.loads((self.state / "state.json").read_text())["api_port"]
        return f"http://127.0.0.1:{port}"

    def credentials(self) -> dict[str, str]:
        data = json.loads((self.state / "credentials.json").read_text())
        assert isinstance(data, dict)
        return data

    def api(self) -> AirflowApi:
        credentials = self.credentials()
        return AirflowApi(self.base_url, credentials["username"], credentials["password"])

    def query(self, sql: str, **params: Any) -> list[list[Any]]:
        conn = self.database.connect()
        try:
            return [list(r) for r in conn.run(sql, **params)]
        finally:
            conn.close()

    @property
    def dags_target(self) -> Path:
        return self.state / "dags"

    def live_release(self) -> str:
        return os.readlink(self.dags_target / "current").split("/")[-1]


def local_env_settings(
    state: Path, database: PostgresDatabase, redis: RedisDatabase, **extra: str
) -> dict[str, str]:
    return clean_env(
        AFCTL_STATE_DIR=str(state),
        AFCTL_DATABASE_URL=database.dsn,
        AFCTL_REDIS_URL=redis.url,
        AFCTL_STOP_GRACE="15",
        **extra,
    )


@contextmanager
def local_environment(
    runtime: AirflowRuntime, state: Path, database: PostgresDatabase, redis: RedisDatabase, **extra: str
) -> Iterator[LocalEnv]:
    """A local environment on its own database and the run's Redis db. Whatever the test did,
    it ends with `afctl down --force` and then kills any process still carrying the state
    folder's marker, so a failing test leaves nothing behind."""
    local = LocalEnv(runtime.afctl, state, local_env_settings(state, database, redis, **extra), database)
    try:
        yield local
    finally:
        local.run("down", "--force", timeout=DOWN_TIMEOUT_S)
        sweep_strays(str(state), grace_s=5.0)


# --- a DAG repository -----------------------------------------------------------------------


@dataclass(frozen=True)
class GitRepo:
    path: Path

    @classmethod
    def create(cls, path: Path) -> GitRepo:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, timeout=30)
        return cls(path)

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def git(self, *args: str) -> str:
        argv = ["git", "-C", str(self.path), "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
        return subprocess.run(argv, check=True, timeout=30, capture_output=True, text=True).stdout

    def commit(self, files: dict[str, str], message: str) -> str:
        for name, text in files.items():
            (self.path / name).parent.mkdir(parents=True, exist_ok=True)
            (self.path / name).write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD").strip()


# --- Celery probe workers -------------------------------------------------------------------


def run_python(
    runtime: AirflowRuntime,
    script: str,
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """Run a script with the Airflow runtime's interpreter (Airflow, Celery and the package)."""
    return subprocess.run(
        [str(runtime.python), "-c", script, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


CELERY_EXECUTOR_APP = (
    "from airflow.providers.celery.executors.celery_executor_utils import app\n"
    "from airflow_control_plane.scaling import celery_config as c\n"
)


def celery_executor_app(runtime: AirflowRuntime, env: dict[str, str], *fields: str) -> list[str]:
    """Build Airflow's Celery executor app (what the scheduler publishes with) in a fresh
    runtime process with ``env``, and return the printed ``fields`` (expressions over ``app``
    and the control plane's ``celery_config`` module, as ``c``)."""
    result = run_python(runtime, CELERY_EXECUTOR_APP + f"print({', '.join(fields)})\n", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split()[-len(fields) :]


def start_probe_worker(
    runtime: AirflowRuntime, folder: Path, env: dict[str, str], *, queue: str, log: Path, hostname: str = ""
) -> subprocess.Popen[bytes]:
    """A real Celery worker (concurrency 2) of the ``celery_probe`` module in ``folder``, in its
    own process group, logging to ``log``."""
    argv = [str(runtime.python), "-m", "celery", "-A", "celery_probe", "worker", "-Q", queue, "-c", "2"]
    if hostname:
        argv += ["--hostname", hostname]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"]
    with log.open("wb") as sink:
        return subprocess.Popen(
            argv, cwd=folder, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_process_group(process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """SIGTERM the process's group, SIGKILL what is left after ``timeout_s``."""
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def protection_puts(state: Any) -> list[bool]:
    """Every ProtectionEnabled value the agent stand-in was PUT, in order."""
    with state.lock:
        return [
            bool(body["ProtectionEnabled"]) for method, body in state.requests if method == "PUT" and body
        ]
