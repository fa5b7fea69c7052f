"""statemachines/bringup.asl.json executed in moto's interpreter (see sfn_emulator.py).

Real handlers run behind the Lambda tasks: the validate Lambda is functions/bringup_validate,
the health gate is functions/health_gate polling a real local HTTP server. ECS, EventBridge
and SNS are moto; events and notifications are read back from SQS queues subscribed to them.
"""

from __future__ import annotations

import json

import pytest

from airflow_control_plane.bringup.steps import BRING_UP_ORDER
from tests.conftest import load_event
from tests.statemachines.conftest import executed_steps
from tests.statemachines.health_server import HEALTHY, HealthServer, with_status
from tests.statemachines.sfn_emulator import CAPACITY_REASON, WORKER_KEYS, Emulator

pytestmark = pytest.mark.statemachines

FILE = "bringup.asl.json"
FAST = {"settle": {"pollSeconds": 5, "maxPolls": 3}}
NOT_HEALTHY_RETRY_ATTEMPTS = 12  # the NotHealthyYet retrier's MaxAttempts in the definition


def _all_zero(emulator: Emulator) -> bool:
    return all(desired == 0 for desired, _ in emulator.service_counts().values())


@pytest.mark.usefixtures("api_server")
def test_happy_path_runs_every_step_in_order_and_announces_ready(emulator: Emulator) -> None:
    # GIVEN a hibernated environment (every service at 0) and the console sample input
    arn = emulator.create_state_machine(FILE)
    payload = {**load_event("bringup.json"), **FAST}

    # WHEN bring-up runs
    execution = emulator.run(arn, payload)

    # THEN it succeeds, visiting the steps in exactly the shared order
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    assert executed_steps(FILE, execution.entered_states) == [step.value for step in BRING_UP_ORDER]
    # AND the core services and every worker service run at the requested counts
    assert emulator.service_counts() == {
        "api-server": (1, 1),
        "scheduler": (1, 1),
        "dag-processor": (1, 1),
        "triggerer": (1, 1),
        "worker": (1, 1),
        "worker-reports": (1, 1),
        "worker-heavy": (1, 1),
    }
    # AND the one-off tasks were migrate, then create-user
    commands = emulator.one_off_commands()
    # (the container command is the image's role, see airflow_image/entrypoint.py)
    assert commands == [["db-migrate"], ["create-user"]]
    # AND one ready event and one notification were published
    events = emulator.events()
    assert [e["detail-type"] for e in events] == ["Airflow Environment Ready"]
    assert events[0]["detail"]["alreadyRunning"] is False
    notifications = emulator.notifications()
    assert [json.loads(n["Message"])["outcome"] for n in notifications] == ["ready"]


@pytest.mark.usefixtures("api_server")
def test_admin_password_never_travels_through_state_data(emulator: Emulator) -> None:
    # GIVEN the admin password lives only in Secrets Manager (the task definition's secret)
    secret = emulator.session.client("secretsmanager").get_secret_value(
        SecretId="airflow-test/admin-password"
    )
    arn = emulator.create_state_machine(FILE)

    # WHEN bring-up runs
    execution = emulator.run(arn, {**load_event("bringup.json"), **FAST})

    # THEN the secret's value appears nowhere in the execution history or output
    assert execution.status == "SUCCEEDED"
    recorded = json.dumps(execution.history, default=str) + json.dumps(execution.output)
    assert secret["SecretString"] not in recorded
    # AND the create-user task gets the user's fields as environment, the password only by reference
    overrides = emulator.one_off_overrides()[1]["containerOverrides"][0]
    env = {item["name"]: item["value"] for item in overrides["environment"]}
    assert env["AIRFLOW_ADMIN_USERNAME"] == "admin"
    assert env["AIRFLOW_ADMIN_EMAIL"] == "airflow-admin@example.com"
    assert env["AIRFLOW_ADMIN_RESET_PASSWORD"] == "false"
    assert "AIRFLOW_ADMIN_PASSWORD" not in env
    assert secret["SecretString"] not in json.dumps(overrides)
    # AND the image's create-user role reads the password from the task definition's secret
    assert overrides["command"] == ["create-user"]


@pytest.mark.usefixtures("api_server")
def test_minimal_input_uses_the_documented_defaults(emulator: Emulator) -> None:
    # GIVEN the minimal sample input (every field defaulted: one of each core service, no workers)
    arn = emulator.create_state_machine(FILE)

    # WHEN bring-up runs with {}
    execution = emulator.run(arn, load_event("bringup_minimal.json"))

    # THEN every core service runs once and the workers stay at 0 for the autoscaler
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    counts = emulator.service_counts()
    assert {k: v for k, v in counts.items() if not k.startswith("worker")} == dict.fromkeys(
        ("api-server", "scheduler", "dag-processor", "triggerer"), (1, 1)
    )
    assert [counts[k] for k in WORKER_KEYS] == [(0, 0)] * 3
    assert "StartWorkers" not in execution.entered_states


def test_invalid_input_fails_at_once_and_changes_nothing(emulator: Emulator) -> None:
    # GIVEN the invalid sample input
    arn = emulator.create_state_machine(FILE)

    # WHEN bring-up runs
    execution = emulator.run(arn, load_event("bringup_invalid.json"))

    # THEN it fails as InvalidInput with a cause naming the problem, before anything changed
    assert execution.status == "FAILED"
    assert execution.error == "InvalidInput"
    assert "validate_input" in (execution.cause or "")
    assert "webserver" in (execution.cause or "")
    assert emulator.one_off_commands() == []
    assert _all_zero(emulator)
    # AND a bring-up failed event names the step
    events = emulator.events()
    assert [(e["detail-type"], e["detail"]["step"], e["detail"]["error"]) for e in events] == [
        ("Airflow Bring-up Failed", "validate_input", "InvalidInput")
    ]


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"workers": {"minimum": -1}}, "workers.minimum"),
        ({"services": {"webserver": 1}}, "webserver"),
        ({"settle": {"pollSeconds": 0}}, "settle.pollSeconds"),
        ({"adminUser": {"mode": "recreate"}}, "adminUser.mode"),
    ],
)
def test_each_invalid_field_is_named_in_the_failure(
    emulator: Emulator, payload: dict[str, object], needle: str
) -> None:
    # GIVEN one wrong field
    arn = emulator.create_state_machine(FILE)
    # WHEN bring-up runs
    execution = emulator.run(arn, payload)
    # THEN the failure names that field and nothing ran
    assert (execution.status, execution.error) == ("FAILED", "InvalidInput")
    assert needle in (execution.cause or "")
    assert emulator.one_off_commands() == []


@pytest.mark.usefixtures("api_server")
def test_failed_migration_never_starts_services(emulator: Emulator) -> None:
    # GIVEN the migration container exits with code 1 (runTask.sync itself still succeeds)
    emulator.exit_code_for("db-migrate", 1)
    arn = emulator.create_state_machine(FILE)

    # WHEN bring-up runs
    execution = emulator.run(arn, {**load_event("bringup.json"), **FAST})

    # THEN it fails as MigrationFailed naming the exit code, and no service was started
    assert (execution.status, execution.error) == ("FAILED", "MigrationFailed")
    assert "exited with code 1" in (execution.cause or "")
    assert _all_zero(emulator)
    assert "CreateAdminUser" not in execution.entered_states
    assert [e["detail"]["step"] for e in emulator.events()] == ["migrate_database"]
    assert [json.loads(n["Message"])["error"] for n in emulator.notifications()] == ["MigrationFailed"]


@pytest.mark.usefixtures("api_server")
def test_failed_admin_user_task_stops_before_services(emulator: Emulator) -> None:
    # GIVEN the create-user container exits with code 2
    emulator.exit_code_for("create-user", 2)
    arn = emulator.create_state_machine(FILE)

    # WHEN bring-up runs
    execution = emulator.run(arn, {**load_event("bringup.json"), **FAST})

    # THEN it fails as AdminUserFailed and no service was started
    assert (execution.status, execution.error) == ("FAILED", "AdminUserFailed")
    assert _all_zero(emulator)


@pytest.mark.usefixtures("api_server")
def test_capacity_failure_is_retried_with_backoff_then_succeeds(emulator: Emulator) -> None:
    # GIVEN RunTask answers once with a capacity failure and no task
    emulator.fail_next_run_tasks(1)
    arn = emulator.create_state_machine(FILE)

    # WHEN bring-up runs
    execution = emulator.run(arn, {**load_event("bringup.json"), **FAST})

    # THEN the migrate task failed once as ECS.AmazonECSException, was retried, and bring-up succeeded
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    failures = execution.failed_tasks()
    assert [f["error"] for f in failures] == ["ECS.AmazonECSException"]
    assert CAPACITY_REASON in failures[0]["cause"]
    assert execution.entered_states.count("MigrateDatabase") == 1  # a retry is not a new state entry
    assert emulator.one_off_commands()[0] == ["db-migrate"]
    # AND the retry waited at most the first interval (10 s, full jitter), as the definition asks
    retry_sleeps = [seconds for kind, seconds in emulator.faults.slept if kind == "retry"]
    assert len(retry_sleeps) == 1
    assert 0 <= retry_sleeps[0] <= 10


@pytest.mark.usefixtures("api_server")
def test_capacity_failure_that_persists_fails_the_migration_step(emulator: Emulator) -> None:
    # GIVEN RunTask keeps answering with a capacity failure (more than the 4 retries)
    emulator.fail_next_run_tasks(10)
    arn = emulator.create_state_machine(FILE)

    # WHEN bring-up runs
    execution = emulator.run(arn, {**load_event("bringup.json"), **FAST})

    # THEN it fails with the ECS error after 1 + 4 attempts, naming the step, services untouched
    assert (execution.status, execution.error) == ("FAILED", "ECS.AmazonECSException")
    assert (execution.cause or "").startswith("migrate_database: ")
    assert len(execution.failed_tasks()) == 5
    assert _all_zero(emulator)


@pytest.mark.usefixtures("api_server")
def test_service_that_never_settles_fails_naming_it(emulator: Emulator) -> None:
    # GIVEN the scheduler's tasks never start
    emulator.stall_service("scheduler")
    arn = emulator.create_state_machine(FILE)

    # WHEN bring-up runs with at most 3 polls, 5 s apart
    execution = emulator.run(arn, {**load_event("bringup.json"), **FAST})

    # THEN it fails as ServicesDidNotSettle naming only the scheduler, after exactly 3 polls
    assert (execution.status, execution.error) == ("FAILED", "ServicesDidNotSettle")
    cause = execution.cause or ""
    assert "airflow-test-scheduler (running 0 of 1)" in cause
    assert "api-server" not in cause
    assert execution.entered_states.count("DescribeCoreServices") == 3
    assert [s for kind, s in emulator.faults.slept if kind == "wait"] == [5.0, 5.0]
    # AND the workers were not started
    assert emulator.service_counts()["worker"] == (0, 0)


def test_health_that_never_turns_healthy_fails_bounded_naming_the_component(
    emulator: Emulator, api_server: HealthServer
) -> None:
    # GIVEN the api-server answers, but the triggerer never turns healthy
    api_server.play(with_status("triggerer", "unhealthy"))
    arn = emulator.create_state_machine(FILE)

    # WHEN bring-up runs
    execution = emulator.run(arn, {**load_event("bringup.json"), **FAST})

    # THEN it fails as HealthGateTimedOut naming the triggerer, after the bounded retries
    assert (execution.status, execution.error) == ("FAILED", "HealthGateTimedOut")
    assert "triggerer is unhealthy" in (execution.cause or "")
    assert len(api_server.paths) == 1 + NOT_HEALTHY_RETRY_ATTEMPTS
    assert set(api_server.paths) == {"/api/v2/monitor/health"}
    # AND the workers were not started, the failure was published
    assert emulator.service_counts()["worker"] == (0, 0)
    assert [e["detail"]["step"] for e in emulator.events()] == ["health_gate"]


def test_health_gate_waits_through_start_up(emulator: Emulator, api_server: HealthServer) -> None:
    # GIVEN the api-server is unreachable-like (503), then the scheduler is starting, then healthy
    from tests.statemachines.health_server import Answer

    api_server.play(Answer(status=503, body=b"{}"), with_status("scheduler", None), HEALTHY)
    arn = emulator.create_state_machine(FILE)

    # WHEN bring-up runs
    execution = emulator.run(arn, {**load_event("bringup.json"), **FAST})

    # THEN it succeeds after two NotHealthyYet retries
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    assert [f["error"] for f in execution.failed_tasks()] == ["NotHealthyYet", "NotHealthyYet"]
    assert len(api_server.paths) == 3


@pytest.mark.usefixtures("api_server")
def test_bring_up_twice_is_safe_and_does_no_duplicate_work(emulator: Emulator) -> None:
    # GIVEN a first bring-up, after which the autoscaler raised the workers to 3
    arn = emulator.create_state_machine(FILE)
    payload = {**load_event("bringup.json"), **FAST}
    first = emulator.run(arn, payload)
    assert first.status == "SUCCEEDED", (first.error, first.cause)
    emulator.set_service_counts("worker", 3)
    emulator.events()  # consume the first run's event

    # WHEN bring-up runs again on the running environment
    second = emulator.run(arn, payload)

    # THEN it succeeds, only re-running the idempotent migration check
    assert second.status == "SUCCEEDED", (second.error, second.cause)
    assert second.output["alreadyRunning"] is True
    assert "CreateAdminUser" not in second.entered_states
    assert "SetDesiredCount" not in second.entered_states
    assert "StartWorkers" not in second.entered_states
    assert "SetWorkerCount" not in second.entered_states
    assert [c[:3] for c in emulator.one_off_commands()] == [
        ["db-migrate"],
        ["create-user"],
        ["db-migrate"],
    ]
    # AND no count was lowered: the autoscaler's 3 workers stay
    assert emulator.service_counts()["worker"] == (3, 3)
    assert second.transitions < first.transitions
    assert [e["detail"]["alreadyRunning"] for e in emulator.events()] == [True]


@pytest.mark.usefixtures("api_server")
def test_update_mode_resets_the_password_even_when_running(emulator: Emulator) -> None:
    # GIVEN a running environment
    arn = emulator.create_state_machine(FILE)
    assert emulator.run(arn, FAST).status == "SUCCEEDED"

    # WHEN bring-up runs with adminUser.mode update
    execution = emulator.run(arn, {**FAST, "adminUser": {"mode": "update"}})

    # THEN the create-user task runs again asking the image to reset the password
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    assert "CreateAdminUser" in execution.entered_states
    last = emulator.one_off_overrides()[-1]["containerOverrides"][0]
    assert {"name": "AIRFLOW_ADMIN_RESET_PASSWORD", "value": "true"} in last["environment"]


def test_health_gate_played_by_results_queued_through_motos_api(emulator: Emulator) -> None:
    # GIVEN no handler behind the health-gate Lambda: moto's own queued results play it,
    # first the Lambda runtime's error document for NotHealthyYet, then a healthy verdict
    emulator.queue_lambda_results(
        [
            {
                "errorType": "NotHealthyYet",
                "errorMessage": "not healthy: scheduler is missing",
                "stackTrace": [],
            },
            {"healthy": True, "components": {}, "reason": "healthy"},
        ]
    )
    arn = emulator.create_state_machine(FILE)

    # WHEN bring-up runs
    execution = emulator.run(arn, FAST)

    # THEN the error was retried once and bring-up succeeded
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    assert [f["error"] for f in execution.failed_tasks()] == ["NotHealthyYet"]


@pytest.mark.usefixtures("api_server")
def test_migration_container_that_never_ran_is_a_failed_migration(emulator: Emulator) -> None:
    # GIVEN the migrate task stops without an exit code (its image could not be pulled)
    emulator.exit_code_for("db-migrate", None)
    arn = emulator.create_state_machine(FILE)

    # WHEN bring-up runs
    execution = emulator.run(arn, FAST)

    # THEN it is a MigrationFailed that says the container did not run, and why
    assert (execution.status, execution.error) == ("FAILED", "MigrationFailed")
    assert "none (the container did not run)" in (execution.cause or "")
    assert "CannotPullContainerError" in (execution.cause or "")
    assert _all_zero(emulator)


@pytest.mark.usefixtures("api_server")
def test_every_worker_service_is_started_to_its_own_minimum(emulator: Emulator) -> None:
    # GIVEN three worker services (one per queue) whose minimums are 0, 2 and 1, one of them
    # already raised to 3 by the autoscaler
    minimums = {"worker": 0, "worker-reports": 2, "worker-heavy": 1}
    arn = emulator.create_state_machine(FILE, {"WorkerServices": emulator.worker_services(minimums)})
    emulator.set_service_counts("worker-heavy", 3)

    # WHEN bring-up runs with the minimal input (no minimum requested)
    execution = emulator.run(arn, {**load_event("bringup_minimal.json"), **FAST})

    # THEN each worker service runs at its own minimum, and none is lowered
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    counts = emulator.service_counts()
    assert [counts[k] for k in WORKER_KEYS] == [(0, 0), (2, 2), (3, 3)]
    # AND only the one that had to change was updated; the ready event lists every worker service
    assert execution.entered_states.count("SetWorkerCount") == 1
    workers = emulator.events()[0]["detail"]["workers"]
    assert [w["desired"] for w in workers] == [0, 2, 3]


@pytest.mark.usefixtures("api_server")
def test_a_single_worker_service_is_started_to_its_minimum(emulator: Emulator) -> None:
    # GIVEN the default stack: one worker queue with a minimum of 1
    single = "[{'queue': 'default', 'serviceName': '" + emulator.service_names["worker"] + "', 'minimum': 1}]"
    arn = emulator.create_state_machine(FILE, {"WorkerServices": single})

    # WHEN bring-up runs with the minimal input
    execution = emulator.run(arn, {**load_event("bringup_minimal.json"), **FAST})

    # THEN that worker service runs at its minimum
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    assert emulator.service_counts()["worker"] == (1, 1)
    assert execution.entered_states.count("SetWorkerCount") == 1
