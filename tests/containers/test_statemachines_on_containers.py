"""statemachines/bringup.asl.json and hibernate.asl.json drive the template's real containers.

One environment for the module (tests/containers/local_aws.py): the Step Functions emulator
runs the definitions unchanged, moto's ECS is bridged to Docker (tests/containers/ecs_bridge.py),
the health gate checks the real api-server container and the drain check reads the real
database. The tests run in order, each one a phase of one environment's life, so the module
brings the stack up only twice:

1. a migrate container that exits non-zero -> ``MigrationFailed``, nothing started;
2. an api-server whose health document never turns healthy -> ``HealthGateTimedOut``
   (a run is triggered on it, to be found again in 4);
3. hibernate -> the drain check reads the real database, no container keeps running;
4. a second bring-up -> ready, every service healthy under its own health check, the run
   from before still there;
5. the autoscaler Lambda (real database and Redis) starts worker containers from zero, the
   image's protection hook protects each through its agent endpoint, and even_odd and fanout
   succeed on them.

6. with an idle period of 0 s, the autoscaler drains the idle workers (cancel, confirm idle,
   release protection, lower the count) down to zero, while long_running, started on one of
   them, runs to success on its first try;
7. hibernate with long_running running: the drain check waits for it, the autoscaler's release
   drains the worker (it protects itself while it consumes), and no container is left.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_control_plane.poll import poll_until
from tests.containers.local_aws import (
    SERVICE_ROLES,
    BridgedEnvironment,
    bridged_environment,
    bringup_input,
    hibernate_input,
)
from tests.containers.stack import Stack
from tests.harness import get_token, request_json
from tests.statemachines.sfn_emulator import Execution

pytestmark = pytest.mark.containers

CORE = ("api-server", "scheduler", "dag-processor", "triggerer")


@pytest.fixture(scope="module")
def env(stack_factory: Callable[[], Stack]) -> Iterator[BridgedEnvironment]:
    with bridged_environment(stack_factory()) as environment:
        yield environment


@pytest.fixture(scope="module")
def history() -> dict[str, str]:
    """What one phase leaves for a later one to find (dag id -> run id)."""
    return {}


def _api(stack: Stack, path: str, body: object | None = None, method: str = "GET", token: str = "") -> Any:
    return request_json(stack.base_url + path, method=method, body=body, token=token)


def _token(stack: Stack) -> str:
    return get_token(stack.base_url, "admin", stack.admin_password)


def _lambda_outputs(execution: Execution) -> list[dict[str, Any]]:
    outputs = []
    for event in execution.history:
        if event["type"] == "TaskSucceeded":
            output = json.loads(event["taskSucceededEventDetails"].get("output") or "{}")
            if isinstance(output, dict) and isinstance(output.get("Payload"), dict):
                outputs.append(output["Payload"])
    return outputs


def _no_container_runs(env: BridgedEnvironment) -> None:
    poll_until(
        lambda: not env.bridge.running_containers(),
        timeout_s=240,
        interval_s=2,
        what=f"every container to stop (running: {env.bridge.running_containers()})",
    )


def test_migrate_container_exiting_non_zero_is_migration_failed_and_starts_nothing(
    env: BridgedEnvironment,
) -> None:
    # GIVEN the migrate container pointed at a database that does not exist
    missing = env.stack.database.sqlalchemy_url + "_missing"
    env.bridge.role_env["db-migrate"] = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": missing}
    try:
        # WHEN bring-up runs
        execution = env.bringup(bringup_input("test: migrate fails"))
    finally:
        env.bridge.role_env.pop("db-migrate")

    # THEN the real migrate container exited non-zero and the machine failed as MigrationFailed
    assert (execution.status, execution.error) == ("FAILED", "MigrationFailed"), execution.cause
    codes = env.bridge.one_off_exit_codes()
    assert len(codes) == 1
    assert codes[0] not in (0, None)
    assert f"exited with code {codes[0]}" in (execution.cause or "")
    # AND no service was started: no container runs, every service reads 0 of 0
    assert "CreateAdminUser" not in execution.entered_states
    assert env.bridge.running_containers() == []
    assert env.counts() == dict.fromkeys(SERVICE_ROLES, (0, 0))


def test_api_server_never_healthy_times_out_the_health_gate(
    env: BridgedEnvironment, history: dict[str, str]
) -> None:
    # GIVEN an api-server whose scheduler health threshold is 0 s: its health document can
    # never call the scheduler healthy (its own container check, an HTTP 200, still passes)
    env.bridge.role_env["api-server"] = {"AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "0"}
    env.emulator.set_time_scale("retry", 0.02)  # the gate's 12 retries, at 1/50 of their backoff
    try:
        # WHEN bring-up runs
        execution = env.bringup(bringup_input("test: gate times out"))
    finally:
        env.bridge.role_env.pop("api-server")
        env.emulator.set_time_scale("retry", 1.0)

    # THEN the migrate and create-user containers ran to exit 0, the services settled with
    # their containers healthy, and the real gate gave up: HealthGateTimedOut naming the scheduler
    assert (execution.status, execution.error) == ("FAILED", "HealthGateTimedOut"), execution.cause
    assert "scheduler is unhealthy" in (execution.cause or "")
    assert env.bridge.one_off_exit_codes()[-2:] == [0, 0]
    gate_attempts = sum(1 for kind, _ in env.emulator.faults.slept if kind == "retry")
    assert gate_attempts >= 12
    for key in CORE:
        (container,) = env.bridge.containers_of(env.service_name(key))
        assert container.health() == "healthy", (key, container.health_log())

    # AND the environment is usable underneath: a run of a paused DAG is recorded (for phase 4)
    token = _token(env.stack)

    def parsed() -> bool:
        try:
            _api(env.stack, "/api/v2/dags/even_odd", token=token)
        except urllib.error.HTTPError:
            return False
        return True

    poll_until(parsed, timeout_s=300, interval_s=3, what="even_odd to be parsed")
    run = _api(env.stack, "/api/v2/dags/even_odd/dagRuns", {"logical_date": None}, "POST", token)
    history["even_odd"] = str(run["dag_run_id"])


def test_hibernate_drains_from_the_real_database_and_leaves_no_container_running(
    env: BridgedEnvironment,
) -> None:
    # GIVEN the core services' containers running
    assert all(env.counts()[key] == (1, 1) for key in CORE), env.counts()

    # WHEN hibernate runs
    execution = env.hibernate(hibernate_input("test: evening"))

    # THEN it succeeds after the drain check counted the real database's task instances
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    drains = [o for o in _lambda_outputs(execution) if "action" in o]
    assert drains
    assert drains[-1]["action"] == "proceed"
    assert (drains[-1]["running"], drains[-1]["queued"]) == (0, 0)
    # AND every container stops, and DescribeServices says so
    _no_container_runs(env)
    assert env.counts() == dict.fromkeys(SERVICE_ROLES, (0, 0))


def test_second_bringup_is_ready_with_every_service_healthy_and_history_kept(
    env: BridgedEnvironment, history: dict[str, str]
) -> None:
    # GIVEN a hibernated environment with a run recorded before
    assert history.get("even_odd"), "phase 2 recorded no run"
    assert env.bridge.running_containers() == []
    before = len(env.bridge.one_off_exit_codes())

    # WHEN bring-up runs again
    execution = env.bringup(bringup_input("test: morning"))

    # THEN it is ready: migrate (a no-op now) and create-user (idempotent) exited 0
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    assert [e["detail-type"] for e in env.emulator.events()][-1] == "Airflow Environment Ready"
    assert env.bridge.one_off_exit_codes()[before:] == [0, 0]
    # AND each core service runs exactly one container, healthy under its own health check,
    # and DescribeServices reports just that
    assert {key: env.counts()[key] for key in CORE} == dict.fromkeys(CORE, (1, 1))
    for key in CORE:
        (container,) = env.bridge.containers_of(env.service_name(key))
        assert container.health() == "healthy", (key, container.health_log())
    # AND the real health gate saw every component healthy
    gates = [o for o in _lambda_outputs(execution) if "components" in o]
    assert gates
    assert set(gates[-1]["components"].values()) == {"healthy"}
    # AND the run from before hibernate is still there, read through the new api-server
    run = _api(env.stack, f"/api/v2/dags/even_odd/dagRuns/{history['even_odd']}", token=_token(env.stack))
    assert run["dag_run_id"] == history["even_odd"]
    assert env.stack.database.connect().run("SELECT count(*) FROM ab_user WHERE username = 'admin'") == [[1]]


def _run_state(env: BridgedEnvironment, dag_id: str, run_id: str) -> str:
    rows = env.stack.database.connect().run(
        "SELECT state FROM dag_run WHERE dag_id = :d AND run_id = :r", d=dag_id, r=run_id
    )
    return str(rows[0][0]) if rows else "missing"


@pytest.mark.timeout(900)
def test_autoscaler_lambda_starts_worker_containers_that_run_even_odd_and_fanout(
    env: BridgedEnvironment,
) -> None:
    # GIVEN the environment up with no worker, and a run of even_odd and of fanout queued
    assert env.counts()["worker"] == (0, 0)
    token = _token(env.stack)
    runs = {}
    # fanout over 12 items: more than one worker's concurrency (8), so the queue needs 2 workers
    confs: dict[str, dict[str, int]] = {"even_odd": {}, "fanout": {"task_count": 12, "sleep_seconds": 1}}
    for dag_id in ("even_odd", "fanout"):

        def parsed(dag_id: str = dag_id) -> bool:
            try:
                _api(env.stack, f"/api/v2/dags/{dag_id}", token=token)
            except urllib.error.HTTPError:
                return False
            return True

        poll_until(parsed, timeout_s=300, interval_s=3, what=f"{dag_id} to be parsed")
        _api(env.stack, f"/api/v2/dags/{dag_id}", {"is_paused": False}, "PATCH", token)
        body = {"logical_date": None, "conf": confs[dag_id]}
        run = _api(env.stack, f"/api/v2/dags/{dag_id}/dagRuns", body, "POST", token)
        runs[dag_id] = str(run["dag_run_id"])

    # WHEN the autoscaler Lambda's schedule ticks (every few seconds here, every minute on AWS)
    ticks: list[dict[str, Any]] = []

    def scaled_up() -> bool:
        ticks.append(env.autoscale())
        return env.counts()["worker"][0] >= 1

    poll_until(scaled_up, timeout_s=240, interval_s=5, what="the autoscaler to start a worker")

    # THEN it scaled the worker service up from 0 on the queue's demand, with its reason
    decision = ticks[-1]["decisions"][0]
    assert (decision["action"], decision["from"], decision["applied"]) == ("scale_up", 0, True), ticks[-1]
    assert ticks[-1]["errors"] == []
    # AND the bridge started that many worker containers of the template's worker task definition
    started = env.bridge.containers_of(env.service_name("worker"))
    assert len(started) == decision["to"]
    assert all(w.spec.command[0] == "celery-worker" for w in started)

    # AND both runs succeed on it while the schedule keeps ticking
    def finished() -> bool:
        env.autoscale()
        return all(_run_state(env, d, r) in ("success", "failed") for d, r in runs.items())

    poll_until(finished, timeout_s=600, interval_s=10, what="even_odd and fanout to finish")
    assert {d: _run_state(env, d, r) for d, r in runs.items()} == {"even_odd": "success", "fanout": "success"}
    hosts = env.stack.database.connect().run(
        "SELECT DISTINCT hostname FROM task_instance WHERE run_id IN (:a, :b)",
        a=runs["even_odd"],
        b=runs["fanout"],
    )
    assert hosts
    assert all(row[0] for row in hosts)
    # AND the image's protection hook protected each worker's task through its agent endpoint
    for worker in env.bridge.containers_of(env.service_name("worker")):
        requests = env.bridge.agent_of(worker).requests
        assert ("PUT", {"ProtectionEnabled": True, "ExpiresInMinutes": 60}) in requests, requests[-5:]


def _trigger(env: BridgedEnvironment, dag_id: str, conf: dict[str, Any]) -> str:
    token = _token(env.stack)
    _api(env.stack, f"/api/v2/dags/{dag_id}", {"is_paused": False}, "PATCH", token)
    body = {"logical_date": None, "conf": conf}
    run = _api(env.stack, f"/api/v2/dags/{dag_id}/dagRuns", body, "POST", token)
    return str(run["dag_run_id"])


def _task_instance(env: BridgedEnvironment, dag_id: str, run_id: str) -> tuple[str, int, str]:
    """(state, try_number, hostname) of the run's single task instance."""
    rows = env.stack.database.connect().run(
        "SELECT state, try_number, hostname FROM task_instance WHERE dag_id = :d AND run_id = :r",
        d=dag_id,
        r=run_id,
    )
    if not rows:
        return ("none", 0, "")
    (state, try_number, hostname) = rows[0]
    return (str(state), int(try_number or 0), str(hostname or ""))


@pytest.mark.timeout(900)
def test_scale_in_drains_the_idle_workers_to_zero_and_long_running_survives_it(
    env: BridgedEnvironment,
) -> None:
    # GIVEN the workers of the last phase still up, an idle period of 0 s (a worker with nothing
    # to do is drained at the next tick), and long_running (75 s) running on one of them
    env.set_queue_settings(idle_seconds=0)
    assert env.counts()["worker"][0] >= 1
    run_id = _trigger(env, "long_running", {"duration_seconds": 75, "progress_seconds": 15})
    ticks: list[dict[str, Any]] = []

    def running() -> bool:
        ticks.append(env.autoscale())
        return _task_instance(env, "long_running", run_id)[0] == "running"

    poll_until(running, timeout_s=300, interval_s=5, what="long_running to run on a worker")
    busy_host = _task_instance(env, "long_running", run_id)[2]

    # WHEN the autoscaler's schedule keeps ticking until the workers are at zero
    def at_zero() -> bool:
        ticks.append(env.autoscale())
        return env.counts()["worker"] == (0, 0)

    try:
        poll_until(at_zero, timeout_s=600, interval_s=5, what="the workers to scale in to zero")
    except TimeoutError as exc:
        reasons = [d["reason"] for tick in ticks[-6:] for d in tick["decisions"]]
        raise AssertionError(f"{exc}; the last decisions: {reasons}") from exc

    # THEN every worker was drained (cancel, confirm idle, release, lower the count) ...
    decisions = [d for tick in ticks for d in tick["decisions"]]
    drained = [d for d in decisions if d["action"] == "scale_down" and d["applied"]]
    assert drained, [d["reason"] for d in decisions][-5:]
    assert all(tick["errors"] == [] for tick in ticks), [t["errors"] for t in ticks if t["errors"]]
    released = [name for d in drained for name in d["drained"]]
    assert len(released) == len(set(released)) >= 1
    # ... the worker running long_running last of all, after its task ended
    state, try_number, _ = _task_instance(env, "long_running", run_id)
    assert (state, try_number) == ("success", 1), "long_running was interrupted by the scale-in"
    assert busy_host, "the task instance recorded no worker"
    # AND no worker container is left, and the drained workers had given up their protection
    _no_worker_runs(env)


@pytest.mark.timeout(900)
def test_hibernate_waits_for_long_running_then_releases_and_stops_every_worker(
    env: BridgedEnvironment,
) -> None:
    # GIVEN long_running (45 s) running on a worker the autoscaler started from zero; the
    # worker protects itself while it consumes
    assert env.counts()["worker"] == (0, 0)
    run_id = _trigger(env, "long_running", {"duration_seconds": 45, "progress_seconds": 15})

    def running() -> bool:
        env.autoscale()
        return _task_instance(env, "long_running", run_id)[0] == "running"

    poll_until(running, timeout_s=300, interval_s=5, what="long_running to run on a worker")
    (worker,) = env.bridge.containers_of(env.service_name("worker"))
    assert env.bridge.agent_of(worker).enabled, "the worker did not protect itself"

    # WHEN hibernate runs (its drain check polls every 5 s, up to 36 times)
    payload = hibernate_input("test: evening with a task running")
    payload["drain"] = {"pollSeconds": 5, "maxPolls": 36}
    execution = env.hibernate(payload)

    # THEN it waited for the task: long_running succeeded on its first try
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    assert _task_instance(env, "long_running", run_id)[:2] == ("success", 1)
    drains = [o for o in _lambda_outputs(execution) if "action" in o]
    assert drains[0]["action"] == "wait"
    assert drains[-1]["action"] == "proceed"
    # AND it then drained the worker through the autoscaler: released, counted down to 0 (a
    # worker whose Celery task had not yet ended when asked is kept, and asked again)
    releases = [o for o in _lambda_outputs(execution) if "released" in o]
    assert releases
    (queue,) = releases[-1]["released"]
    assert (len(queue["drained"]), queue["kept"], queue["desired"]) == (1, [], 0), releases
    assert all(r["errors"] == [] for r in releases), releases
    for earlier in releases[:-1]:
        assert all("during the drain" in why for q in earlier["released"] for why in q["kept"]), earlier
    # AND no container is left running, and every service reads 0 of 0
    _no_container_runs(env)
    assert env.counts() == dict.fromkeys(SERVICE_ROLES, (0, 0))


def _no_worker_runs(env: BridgedEnvironment) -> None:
    poll_until(
        lambda: not env.bridge.containers_of(env.service_name("worker")),
        timeout_s=240,
        interval_s=2,
        what="every worker container to stop",
    )
