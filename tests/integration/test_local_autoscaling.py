"""The local worker autoscaler end to end: real `afctl up`, PostgreSQL, Redis, Airflow, Celery.

One environment for the module (autoscaling on, workers 0..3, concurrency 4, idle period 20 s,
evaluation every 3 s). The fixture always runs `afctl down --force` and then kills anything
still carrying the state folder's marker. Waits are bounded and generous (CPU is shared).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_control_plane.local import proc
from airflow_control_plane.local.autoscaler import hibernation_flag, read_decisions
from airflow_control_plane.local.ecs import LocalEcs
from airflow_control_plane.local.hibernate import sweep_strays
from airflow_control_plane.local.paths import StatePaths
from tests.conftest import AirflowRuntime, PostgresDatabase, RedisDatabase

pytestmark = pytest.mark.integration

UP_TIMEOUT_S = 480
DOWN_TIMEOUT_S = 240
IDLE_S = 20


@dataclass(frozen=True)
class Env:
    afctl: Path
    state: Path
    env: dict[str, str]
    database: PostgresDatabase

    def run(self, *args: str, timeout: float = UP_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.afctl), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    @property
    def paths(self) -> StatePaths:
        return StatePaths(self.state)

    def worker(self) -> tuple[int, int, tuple[int, ...]]:
        """(desired, running, pids) of the worker service."""
        state = next(s for s in LocalEcs(self.paths).describe() if s.name == "worker")
        return state.desired, state.running, state.pids

    @property
    def base_url(self) -> str:
        port = json.loads((self.state / "state.json").read_text())["api_port"]
        return f"http://127.0.0.1:{port}"

    def query(self, sql: str, **params: Any) -> list[list[Any]]:
        conn = self.database.connect()
        try:
            return [list(r) for r in conn.run(sql, **params)]
        finally:
            conn.close()


def _wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, every: float = 1.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every)


def _request(url: str, body: object | None, token: str | None, method: str) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(  # noqa: S310 - http on loopback
        url, data=None if body is None else json.dumps(body).encode(), headers=headers, method=method
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.loads(response.read())


def _token(env: Env) -> str:
    credentials = json.loads((env.state / "credentials.json").read_text())
    body = {"username": credentials["username"], "password": credentials["password"]}
    return str(_request(f"{env.base_url}/auth/token", body, None, "POST")["access_token"])


def _trigger(env: Env, token: str, dag_id: str, conf: dict[str, int]) -> str:
    api = f"{env.base_url}/api/v2"

    def parsed() -> bool:
        try:
            _request(f"{api}/dags/{dag_id}", None, token, "GET")
        except urllib.error.HTTPError:
            return False
        return True

    _wait_for(parsed, 180, f"the DAG {dag_id} to be parsed", every=2.0)
    _request(f"{api}/dags/{dag_id}", {"is_paused": False}, token, "PATCH")
    run = _request(f"{api}/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf}, token, "POST")
    return str(run["dag_run_id"])


def _run_state(env: Env, dag_id: str, run_id: str) -> str:
    rows = env.query("SELECT state FROM dag_run WHERE dag_id = :d AND run_id = :r", d=dag_id, r=run_id)
    return str(rows[0][0]) if rows else "missing"


@pytest.fixture(scope="module")
def autoscaled(
    airflow_runtime: AirflowRuntime,
    pg_database_factory: Callable[[str], PostgresDatabase],
    redis_database: RedisDatabase,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Env]:
    state = tmp_path_factory.mktemp("afscale")
    database = pg_database_factory("autoscale")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AFCTL_"))},
        "AFCTL_STATE_DIR": str(state),
        "AFCTL_DATABASE_URL": database.dsn,
        "AFCTL_REDIS_URL": redis_database.url,
        "AFCTL_STOP_GRACE": "15",
        "AFCTL_AUTOSCALE": "true",
        "AFCTL_AUTOSCALE_INTERVAL": "3",
        "AFCTL_AUTOSCALE_IDLE_SECONDS": str(IDLE_S),
        "AFCTL_WORKERS_MAX": "3",
        "AFCTL_WORKER_CONCURRENCY": "4",
    }
    local = Env(airflow_runtime.afctl, state, env, database)
    try:
        out = local.run("up")
        assert out.returncode == 0, f"afctl up failed:\n{out.stdout}\n{out.stderr}"
        yield local
    finally:
        local.run("down", "--force", timeout=DOWN_TIMEOUT_S)
        sweep_strays(str(state), grace_s=5.0)


def test_fanout_scales_workers_from_zero_to_several_and_back_to_zero(autoscaled: Env) -> None:
    # GIVEN a fresh environment with autoscaling on: no task, so no worker
    env = autoscaled
    _wait_for(lambda: env.worker()[:2] == (0, 0), 120, "the worker count to be 0 after up")
    token = _token(env)
    # WHEN the fanout DAG runs 12 mapped tasks of 8 s (concurrency 4, at most 3 workers)
    run_id = _trigger(env, token, "fanout", {"task_count": 12, "sleep_seconds": 8})
    peak = 0

    def finished() -> bool:
        nonlocal peak
        peak = max(peak, env.worker()[1])
        return _run_state(env, "fanout", run_id) in ("success", "failed")

    _wait_for(finished, 480, "the fanout run to finish")
    # THEN workers went from 0 to at least 2, and every task succeeded
    assert peak >= 2, f"peak worker count {peak}"
    states = env.query(
        "SELECT state, count(*) FROM task_instance WHERE dag_id = 'fanout' AND run_id = :r GROUP BY state",
        r=run_id,
    )
    assert dict((s, int(n)) for s, n in states) == {"success": 14}, states  # plan + 12 work + reduce
    # AND the wake-up from zero workers (plan was queued while none ran) is measured
    queued, started = env.query(
        "SELECT queued_dttm, start_date FROM task_instance WHERE dag_id = 'fanout' AND run_id = :r "
        "AND task_id = 'plan'",
        r=run_id,
    )[0]
    assert isinstance(queued, datetime)
    assert isinstance(started, datetime)
    print(f"wake-up from zero workers: {(started - queued).total_seconds():.1f} s (queued -> started)")
    # AND after the idle period the workers return to 0
    _wait_for(lambda: env.worker()[:2] == (0, 0), IDLE_S + 240, "the workers to scale back to 0")
    actions = [(d["action"], d["current"], d["target"]) for d in read_decisions(env.paths)]
    assert any(a == "scale_up" and c == 0 for a, c, _ in actions), actions
    assert any(a == "scale_down" and t == 0 for a, _, t in actions), actions


def _owner(worker_pids: tuple[int, ...], task_pid: int) -> int | None:
    return next((w for w in worker_pids if task_pid in proc.descendants(w)), None)


def test_a_long_task_keeps_its_worker_through_scale_down_evaluations(autoscaled: Env) -> None:
    # GIVEN no worker, then a long task (90 s) and a burst of short ones: several workers start
    env = autoscaled
    _wait_for(lambda: env.worker()[:2] == (0, 0), IDLE_S + 240, "the worker count to be 0")
    token = _token(env)
    long_run = _trigger(env, token, "long_running", {"duration_seconds": 90, "progress_seconds": 10})
    burst = _trigger(env, token, "fanout", {"task_count": 8, "sleep_seconds": 2})
    sql = "SELECT state, pid, try_number FROM task_instance WHERE dag_id = 'long_running' AND run_id = :r"

    def long_task() -> list[Any]:
        rows = env.query(sql, r=long_run)
        return rows[0] if rows else [None, None, None]

    _wait_for(lambda: long_task()[0] == "running" and long_task()[1] is not None, 300, "the long task")
    owner = _owner(env.worker()[2], int(long_task()[1]))
    assert owner is not None, "the long task runs under no local worker"
    since = datetime.now(UTC)
    peak = 0
    owner_alive: list[bool] = []

    # WHEN the burst finishes and the idle period passes while the long task still runs
    def done() -> bool:
        nonlocal peak
        _, running, pids = env.worker()
        peak = max(peak, running)
        state = long_task()[0]
        if state == "running":
            owner_alive.append(owner in pids)
        return state in ("success", "failed") and _run_state(env, "fanout", burst) in ("success", "failed")

    _wait_for(done, 480, "the long task and the burst to finish")
    # THEN the long task's worker was never stopped while it ran, and the task ran once
    assert owner_alive
    assert all(owner_alive), "the busy worker was stopped while its task ran"
    assert long_task()[0::2] == ["success", 1]
    assert peak >= 2, f"the burst never scaled beyond one worker (peak {peak})"
    # AND scale-down evaluations past the idle period happened while it ran (idle workers
    # stopped, or all kept because the busy one holds the highest slot), each keeping it
    during = [
        d
        for d in read_decisions(env.paths)
        if datetime.fromisoformat(d["at"]) >= since
        and (d["action"] == "scale_down" or "keeping" in d["reason"])
    ]
    assert during, "no scale-down evaluation passed the idle period while the long task ran"
    assert all(d["target"] >= 1 for d in during if d["running_workers"] and d["demand"] >= 1), during


def test_down_flags_hibernation_and_stops_the_autoscaler_before_the_scheduler(autoscaled: Env) -> None:
    # GIVEN the running environment with its autoscaler
    env = autoscaled
    ecs = LocalEcs(env.paths)
    assert next(s for s in ecs.describe() if s.name == "autoscaler").running == 1
    # WHEN it hibernates
    out = env.run("down", timeout=DOWN_TIMEOUT_S)
    assert out.returncode == 0, out.stdout + out.stderr
    # THEN the first step set the flag and stopped the autoscaler, and nothing is left
    first_step = next(line for line in out.stdout.splitlines() if "validate_input done" in line)
    assert "autoscaler stopped" in first_step, out.stdout
    assert hibernation_flag(env.paths).exists()
    assert not ecs.is_running()
