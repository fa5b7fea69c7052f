"""The local runtime with real processes: `afctl up` / `status` / `down` against real Airflow
(from the runtime venv), PostgreSQL and Redis; and the supervisor (the local ECS) against
plain processes, including one that ignores SIGTERM.

One Airflow environment is brought up for the module (bring-up takes tens of seconds on two
shared cores); the tests run in file order against it and the last one takes it down. The
fixture always tears down and then kills any process still carrying the state folder's
marker, so a failing test leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from airflow_control_plane.local import proc
from airflow_control_plane.local.airflow_env import STATE_MARKER_ENV, ServiceSpec
from airflow_control_plane.local.airflow_jobs import WarmCli
from airflow_control_plane.local.ecs import LocalEcs, ensure_supervisor
from airflow_control_plane.local.hibernate import sweep_strays
from airflow_control_plane.local.paths import StatePaths
from airflow_control_plane.local.supervisor import dump_spec
from tests.conftest import AirflowRuntime, PostgresDatabase, RedisDatabase
from tests.harness import (
    DOWN_TIMEOUT_S,
    UP_TIMEOUT_S,
    LocalEnv,
    clean_env,
    free_port,
    get_token,
    health,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def local_env(local_environments: Callable[..., AbstractContextManager[LocalEnv]]) -> Iterator[LocalEnv]:
    # a fixed worker here; test_local_autoscaling.py covers the autoscaler (0 -> N -> 0)
    with local_environments("local", AFCTL_AUTOSCALE="false") as local:
        yield local


@pytest.fixture(scope="module")
def first_up(local_env: LocalEnv) -> subprocess.CompletedProcess[str]:
    out = local_env.run("up")
    assert out.returncode == 0, f"afctl up failed:\n{out.stdout}\n{out.stderr}"
    return out


def test_up_runs_the_steps_in_order_and_airflow_is_healthy(
    local_env: LocalEnv, first_up: subprocess.CompletedProcess[str]
) -> None:
    # GIVEN a fresh state folder, a fresh database and a claimed Redis db (fixture)
    # WHEN `afctl up` ran
    steps = re.findall(r"^\[\d/8\] (\w+) done in ([\d.]+) s", first_up.stdout, flags=re.MULTILINE)
    print("\n".join(f"{name:<28} {seconds:>6} s" for name, seconds in steps))
    # THEN every bring-up step ran, in the shared order, and the health endpoint is all healthy
    from airflow_control_plane.bringup.steps import BRING_UP_ORDER

    assert [name for name, _ in steps] == [s.value for s in BRING_UP_ORDER]
    document = health(local_env.base_url)
    for component in ("metadatabase", "scheduler", "dag_processor", "triggerer"):
        entry = document[component]
        assert isinstance(entry, dict)
        assert entry["status"] == "healthy", document
    # AND `afctl status --json` reports the same: healthy, each component named
    report = local_env.status()
    assert report["health"]["healthy"] is True, report
    assert {report["components"][c] for c in ("metadatabase", "scheduler", "dag_processor", "triggerer")} == {
        "healthy"
    }


def test_the_admin_obtains_an_api_token_and_the_password_is_not_in_logs(
    local_env: LocalEnv, first_up: subprocess.CompletedProcess[str]
) -> None:
    # GIVEN the generated credentials stored under the state folder
    credentials_file = local_env.state / "credentials.json"
    credentials = local_env.credentials()
    # THEN the file is private, the password was shown once at the end of `up`
    assert stat.S_IMODE(credentials_file.stat().st_mode) == 0o600
    assert credentials["password"] in first_up.stdout
    # AND the admin can obtain a JWT from the FAB auth manager's token endpoint
    token = get_token(local_env.base_url, credentials["username"], credentials["password"])
    assert token.count(".") == 2
    # AND a wrong password is refused
    with pytest.raises(urllib.error.HTTPError) as refused:
        get_token(local_env.base_url, credentials["username"], credentials["password"] + "x")
    assert refused.value.code == 401
    # AND the password appears in no log file of the local runtime
    for log in (local_env.state / "logs").glob("*.log"):
        assert credentials["password"] not in log.read_text(errors="replace"), log


def test_status_shows_desired_and_running_counts(local_env: LocalEnv, first_up: object) -> None:
    # WHEN the operator asks for the status
    rows = local_env.services()
    # THEN every core service and the worker run at their desired count of 1
    for service in ("api-server", "scheduler", "dag-processor", "triggerer", "worker"):
        assert rows[service]["desired"] == 1, rows
        assert rows[service]["running"] == 1, rows


def test_a_dag_run_completes_on_the_celery_worker(local_env: LocalEnv, first_up: object) -> None:
    # GIVEN the admin's token and the sample DAG even_odd from the repository's dags/ folder
    api = local_env.api()
    # WHEN it is parsed, unpaused and triggered through the REST API
    run_id = urllib.parse.quote(api.trigger("even_odd", parsed_within_s=120), safe="")
    # THEN the scheduler queues it, the Celery worker runs the tasks through the api-server's
    # execution API (same JWT secret everywhere) and the run succeeds
    states: list[object] = []

    def finished() -> bool:
        states.append(api.call("GET", f"/dags/even_odd/dagRuns/{run_id}")["state"])
        return states[-1] in ("success", "failed")

    wait_for(finished, 240, "the even_odd run to finish")
    assert states[-1] == "success", states


def test_up_twice_is_safe_and_skips_the_one_off_jobs(local_env: LocalEnv, first_up: object) -> None:
    # GIVEN a running environment and its process ids
    before = local_env.pids()
    # WHEN `up` runs again
    started = time.monotonic()
    out = local_env.run("up")
    elapsed = time.monotonic() - started
    print(f"second up: {elapsed:.1f} s")
    # THEN it succeeds, skips migrate and admin creation, and restarts nothing
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"migrate_database done in [\d.]+ s: skipped", out.stdout), out.stdout
    assert re.search(r"create_admin_user done in [\d.]+ s: skipped", out.stdout), out.stdout
    assert "password:" not in out.stdout  # shown once only
    assert local_env.pids() == before


def test_a_port_change_on_the_running_environment_is_refused_and_nothing_recorded(
    local_env: LocalEnv, first_up: object
) -> None:
    # GIVEN a running environment on its recorded port
    before_state = (local_env.state / "state.json").read_text()
    old_url = local_env.base_url
    pids = local_env.pids()
    # WHEN `up` runs again asking for another port
    out = local_env.run("up", env={**local_env.env, "AFCTL_API_PORT": str(free_port())}, timeout=UP_TIMEOUT_S)
    # THEN it is refused at once, naming the change and how to apply it
    assert out.returncode == 2, out.stdout + out.stderr
    assert "api_port" in out.stderr
    assert "afctl down" in out.stderr
    # AND the state still records the port the api-server uses, which still answers
    assert (local_env.state / "state.json").read_text() == before_state
    metadatabase = health(old_url)["metadatabase"]
    assert isinstance(metadatabase, dict)
    assert metadatabase["status"] == "healthy"
    assert local_env.pids() == pids


def test_a_second_state_folder_on_the_same_database_is_refused_naming_the_owner(
    local_env: LocalEnv, first_up: object, tmp_path: Path
) -> None:
    # GIVEN the running environment's database and Redis, and another state folder
    other = {**local_env.env, "AFCTL_STATE_DIR": str(tmp_path / "other"), "AFCTL_DAGS_SOURCE": "folder"}
    # WHEN that second environment is brought up without asking to join
    out = local_env.run("up", env=other, timeout=120)
    # THEN it refuses before starting anything, naming the owner and the way to join
    assert out.returncode == 2, out.stdout + out.stderr
    assert str(local_env.state) in out.stderr
    assert "AFCTL_JOIN=1" in out.stderr
    assert not (tmp_path / "other" / "run" / "supervisor.pid").exists()


def test_a_killed_scheduler_is_restarted(local_env: LocalEnv, first_up: object) -> None:
    # GIVEN the scheduler's process
    (old_pid,) = local_env.pids()["scheduler"]
    # WHEN it is killed hard (as an OOM kill would)
    os.kill(old_pid, signal.SIGKILL)

    # THEN the supervisor starts a new scheduler process and the scheduler becomes healthy again
    def replaced() -> bool:
        row = local_env.services()["scheduler"]
        return row["running"] == 1 and row["pids"] not in ([], [old_pid])

    wait_for(replaced, 120, "a new scheduler process")
    assert not proc.is_alive(old_pid)

    def scheduler_healthy() -> bool:
        entry = health(local_env.base_url)["scheduler"]
        return isinstance(entry, dict) and entry["status"] == "healthy"

    wait_for(scheduler_healthy, 180, "the restarted scheduler to heartbeat")


def test_restart_replaces_one_services_processes_and_leaves_the_others(
    local_env: LocalEnv, first_up: object
) -> None:
    # GIVEN the running services' processes
    before = local_env.pids()
    # WHEN the triggerer is restarted
    out = local_env.run("restart", "triggerer", timeout=240)
    # THEN it runs again with a new process, and no other service was touched
    assert out.returncode == 0, out.stdout + out.stderr
    assert "triggerer: restarted" in out.stdout
    after = local_env.pids()
    assert after["triggerer"] not in ([], before["triggerer"])
    assert {k: v for k, v in after.items() if k != "triggerer"} == {
        k: v for k, v in before.items() if k != "triggerer"
    }
    # AND its log is readable through `afctl logs`
    logs = local_env.run("logs", "triggerer", "-n", "5", timeout=60)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.startswith("triggerer-0 | ")


def test_down_hibernates_in_order_and_leaves_no_process(local_env: LocalEnv, first_up: object) -> None:
    # GIVEN every process of the environment: the supervisor, everything below it (task and
    # parsing processes move to their own process groups), the service groups, marked ones
    ecs = LocalEcs(StatePaths(local_env.state))
    supervisor_pid = ecs.supervisor_pid()
    assert supervisor_pid is not None
    leaders = [pid for pids in local_env.pids().values() for pid in pids]
    members = {pid for leader in leaders for pid in proc.group_members(leader)}
    tree = set(proc.descendants(supervisor_pid))
    marked = set(proc.marked_processes(STATE_MARKER_ENV, str(local_env.state)))
    assert set(leaders) <= members
    assert set(leaders) <= tree
    # WHEN the environment hibernates
    out = local_env.run("down", timeout=DOWN_TIMEOUT_S)
    # THEN the steps ran in the shared order, and nothing is left: by pid, by group, by marker
    from airflow_control_plane.bringup.steps import HIBERNATE_ORDER

    steps = re.findall(r"^\[\d/8\] (\w+) done", out.stdout, flags=re.MULTILINE)
    assert out.returncode == 0, out.stdout + out.stderr
    assert steps == [s.value for s in HIBERNATE_ORDER]
    alive = [pid for pid in {supervisor_pid, *members, *tree, *marked} if proc.is_alive(pid)]
    assert alive == []
    assert all(proc.group_members(leader) == [] for leader in leaders)
    assert proc.marked_processes(STATE_MARKER_ENV, str(local_env.state)) == []
    # AND the api-server stopped on SIGTERM within the grace period (no SIGKILL)
    supervisor_log = (local_env.state / "logs" / "supervisor.log").read_text()
    assert not re.search(r"api-server\[0\] pid \d+ still running .* SIGKILL", supervisor_log), supervisor_log
    # AND status says so, with every desired count at 0
    report = local_env.status()
    assert report["supervisor_running"] is False
    rows = report["services"]
    assert all(row["desired"] == 0 and row["running"] == 0 for row in rows), rows
    # AND the metadata database is intact (the admin user is still there for the next `up`)
    conn = local_env.database.connect()
    try:
        assert conn.run("SELECT count(*) FROM ab_user")[0][0] == 1
    finally:
        conn.close()


# --- failure path: a failed migration starts nothing ------------------------------------------


def test_a_failed_migration_starts_no_service(
    pg_database_factory: Callable[[str], PostgresDatabase], redis_database: RedisDatabase, tmp_path: Path
) -> None:
    # GIVEN an `airflow` whose `db migrate` fails (exit code 3)
    fake = tmp_path / "airflow"
    fake.write_text("#!/bin/sh\necho 'migration exploded' >&2\nexit 3\n")
    fake.chmod(0o755)
    database = pg_database_factory("failmig")
    env = clean_env(
        AFCTL_STATE_DIR=str(tmp_path / "state"),
        AFCTL_DATABASE_URL=database.dsn,
        AFCTL_REDIS_URL=redis_database.url,
        AFCTL_AIRFLOW_BIN=str(fake),
    )
    # WHEN `afctl up` runs (in this interpreter: the fake stands in for Airflow)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "airflow_control_plane", "up"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        # The failed environment still holds the run's Redis db as its broker (its lease): let
        # it go, as a user would with `afctl down`, so later environments of the run may use it.
        down = subprocess.run(
            [sys.executable, "-m", "airflow_control_plane", "down"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert down.returncode == 0, down.stdout + down.stderr
    # THEN it fails with the exit code named, and no supervisor or service was started
    assert out.returncode == 2, out.stdout + out.stderr
    assert "exit code 3" in out.stderr
    assert "migration exploded" in out.stderr
    assert "start_core_services" not in out.stdout
    assert not (tmp_path / "state" / "run" / "supervisor.pid").exists()


# --- the supervisor against plain processes ------------------------------------------------------

_SLEEPER = "import time\nwhile True: time.sleep(1)\n"
_STUBBORN = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(1)\n"


@pytest.fixture
def plain_supervisor(tmp_path: Path) -> Iterator[LocalEcs]:
    paths = StatePaths(tmp_path / "s")
    paths.ensure()
    specs = {
        "sleeper": ServiceSpec("sleeper", (sys.executable, "-c", _SLEEPER)),
        "stubborn": ServiceSpec("stubborn", (sys.executable, "-c", _STUBBORN), max_count=1),
    }
    env = {**os.environ, STATE_MARKER_ENV: str(paths.root)}
    dump_spec(paths.supervisor_spec, specs, env, grace=2.0)
    ecs = ensure_supervisor(paths, env)
    try:
        yield ecs
    finally:
        ecs.shutdown(timeout_s=30)
        sweep_strays(str(paths.root), grace_s=2.0)


def _state(ecs: LocalEcs, name: str) -> tuple[int, tuple[int, ...], int]:
    s = next(s for s in ecs.describe() if s.name == name)
    return s.running, s.pids, s.stopping


def test_supervisor_scales_restarts_and_force_stops(plain_supervisor: LocalEcs) -> None:
    ecs = plain_supervisor
    # GIVEN two sleepers and one process that ignores SIGTERM
    ecs.set_desired_count("sleeper", 2)
    ecs.set_desired_count("stubborn", 1)
    wait_for(lambda: _state(ecs, "sleeper")[0] == 2 and _state(ecs, "stubborn")[0] == 1, 30, "processes")
    first, second = _state(ecs, "sleeper")[1]
    # WHEN one sleeper is killed
    os.kill(second, signal.SIGKILL)
    # THEN it is replaced (restart counted), the other keeps running
    wait_for(
        lambda: _state(ecs, "sleeper")[0] == 2 and second not in _state(ecs, "sleeper")[1], 30, "restart"
    )
    assert first in _state(ecs, "sleeper")[1]
    assert next(s for s in ecs.describe() if s.name == "sleeper").restarts == 1
    # WHEN the stubborn service is scaled to 0: SIGTERM is ignored, SIGKILL follows the 2 s grace
    stubborn_pid = _state(ecs, "stubborn")[1][0]
    ecs.set_desired_count("stubborn", 0)
    wait_for(lambda: not proc.is_alive(stubborn_pid), 30, "the stubborn process to be killed")
    # THEN bad requests are refused with a reason, and nothing changed
    with pytest.raises(Exception, match="at most 1"):
        ecs.set_desired_count("stubborn", 2)
    with pytest.raises(Exception, match="unknown service"):
        ecs.set_desired_count("nope", 1)
    assert _state(ecs, "sleeper")[0] == 2


def test_supervisor_shutdown_leaves_no_process(plain_supervisor: LocalEcs) -> None:
    ecs = plain_supervisor
    ecs.set_desired_count("sleeper", 2)
    ecs.set_desired_count("stubborn", 1)
    wait_for(lambda: _state(ecs, "sleeper")[0] == 2 and _state(ecs, "stubborn")[0] == 1, 30, "processes")
    pids = [*_state(ecs, "sleeper")[1], *_state(ecs, "stubborn")[1]]
    supervisor_pid = ecs.supervisor_pid()
    assert supervisor_pid is not None
    # WHEN the supervisor is shut down
    ecs.shutdown(timeout_s=30)
    # THEN the supervisor and every service process (even the one ignoring SIGTERM) are gone
    assert [p for p in (*pids, supervisor_pid) if proc.is_alive(p)] == []
    assert not ecs.is_running()


def test_the_pre_imported_cli_runs_each_command_in_a_fork_with_its_own_exit_code(
    airflow_runtime: AirflowRuntime, tmp_path: Path
) -> None:
    # GIVEN the pre-imported Airflow CLI of the runtime environment
    env = clean_env(AIRFLOW_HOME=str(tmp_path / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    cli = WarmCli(airflow_runtime.python, env=env, log_path=tmp_path / "warm.log", cwd=tmp_path)
    try:
        # WHEN it runs a command that succeeds, one that fails, and the first one again
        ok = cli.run(["version"], log_path=tmp_path / "version.log", timeout_s=180)
        bad = cli.run(["db", "--no-such-flag"], log_path=tmp_path / "bad.log", timeout_s=60)
        again = cli.run(["version"], log_path=tmp_path / "version.log", timeout_s=60)
    finally:
        cli.close()
    # THEN each reports its own exit code and output (a failure does not end the process)
    assert ok.exit_code == 0, ok.output
    assert ok.output.strip().startswith("3.3"), ok.output
    assert bad.exit_code == 2  # argparse's usage error, as from the plain `airflow` command
    assert "airflow db command error" in bad.output
    assert again.exit_code == 0, again.output
