"""statemachines/hibernate.asl.json executed in moto's interpreter (see sfn_emulator.py).

The drain-check Lambda is the real functions/drain_check handler; only its database
adapter is replaced by a scripted counter (the pg8000 adapter itself is tested against a
real Airflow schema in tests/integration/test_drain_check.py).
"""

from __future__ import annotations

import json

import pytest

from airflow_control_plane.bringup.drain import ActiveTaskInstances
from airflow_control_plane.bringup.steps import HIBERNATE_ORDER
from tests.conftest import load_event
from tests.statemachines.conftest import executed_steps
from tests.statemachines.sfn_emulator import Emulator, load_handler_module

pytestmark = pytest.mark.statemachines

FILE = "hibernate.asl.json"
# Three worker services (one per queue), each running: hibernate must stop every one.
RUNNING = {
    "api-server": 1,
    "scheduler": 1,
    "dag-processor": 1,
    "triggerer": 1,
    "worker": 2,
    "worker-reports": 1,
    "worker-heavy": 3,
}


class ScriptedCounter:
    """Answers the scripted counts in order (the last one repeats) and records each poll."""

    def __init__(self) -> None:
        self.script: list[ActiveTaskInstances] = [ActiveTaskInstances(0, 0)]
        self.polls = 0

    def count_active(self) -> ActiveTaskInstances:
        self.polls += 1
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]


@pytest.fixture
def counter(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> ScriptedCounter:
    scripted = ScriptedCounter()
    module = load_handler_module("drain_check")
    monkeypatch.setenv("DB_HOST", "metadata.example.internal")
    monkeypatch.setenv("DB_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:db")
    monkeypatch.setattr(module, "build_counter", lambda config: scripted)
    emulator.register_lambda("drain-check", module.lambda_handler)
    for key, count in RUNNING.items():
        emulator.set_service_counts(key, count)
    return scripted


def test_hibernate_stops_scheduler_first_then_the_rest(emulator: Emulator, counter: ScriptedCounter) -> None:
    # GIVEN a running environment where two task instances finish during the drain
    counter.script = [ActiveTaskInstances(running=1, queued=1), ActiveTaskInstances(0, 0)]
    arn = emulator.create_state_machine(FILE)

    # WHEN hibernate runs with the sample input
    execution = emulator.run(arn, load_event("hibernate.json"))

    # THEN it succeeds in exactly the shared step order, polling twice with one wait between
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    assert executed_steps(FILE, execution.entered_states) == [step.value for step in HIBERNATE_ORDER]
    assert counter.polls == 2
    assert [s for kind, s in emulator.faults.slept if kind == "wait"] == [30.0]
    # AND every service, each of the three worker services included, is at zero
    assert emulator.service_counts() == dict.fromkeys(RUNNING, (0, 0))
    assert execution.entered_states.count("StopWorkerService") == 3
    # AND the hibernated event and notification were published
    assert [e["detail-type"] for e in emulator.events()] == ["Airflow Environment Hibernated"]
    assert [json.loads(n["Message"])["outcome"] for n in emulator.notifications()] == ["hibernated"]


def test_scheduler_is_stopped_before_the_first_drain_poll(
    emulator: Emulator, counter: ScriptedCounter
) -> None:
    # GIVEN a counter that records the scheduler's desired count when it is polled
    seen: list[tuple[int, int]] = []
    original = counter.count_active

    def spying() -> ActiveTaskInstances:
        seen.append((emulator.service_counts()["scheduler"][0], emulator.service_counts()["worker"][0]))
        return original()

    counter.count_active = spying  # type: ignore[method-assign]
    arn = emulator.create_state_machine(FILE)

    # WHEN hibernate runs
    execution = emulator.run(arn, {})

    # THEN at the drain poll the scheduler was already 0 and the workers still running
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    assert seen == [(0, 2)]


def test_drain_timeout_without_force_fails_and_keeps_workers(
    emulator: Emulator, counter: ScriptedCounter
) -> None:
    # GIVEN a task instance that keeps running
    counter.script = [ActiveTaskInstances(running=1, queued=0)]
    arn = emulator.create_state_machine(FILE)

    # WHEN hibernate runs with 3 polls and no force
    execution = emulator.run(arn, {"drain": {"pollSeconds": 5, "maxPolls": 3}})

    # THEN it fails as DrainTimedOut after 3 polls; only the scheduler was stopped
    assert (execution.status, execution.error) == ("FAILED", "DrainTimedOut")
    assert "1 running and 0 queued" in (execution.cause or "")
    assert counter.polls == 3
    counts = emulator.service_counts()
    assert counts["scheduler"] == (0, 0)
    assert {k: v for k, v in counts.items() if k != "scheduler"} == {
        k: (n, n) for k, n in RUNNING.items() if k != "scheduler"
    }
    assert [(e["detail-type"], e["detail"]["step"]) for e in emulator.events()] == [
        ("Airflow Hibernate Failed", "drain_tasks")
    ]


def test_force_stops_anyway_after_the_drain_window(emulator: Emulator, counter: ScriptedCounter) -> None:
    # GIVEN a task instance that keeps running
    counter.script = [ActiveTaskInstances(running=1, queued=2)]
    arn = emulator.create_state_machine(FILE)

    # WHEN hibernate runs with the force sample (one poll, force)
    execution = emulator.run(arn, load_event("hibernate_force.json"))

    # THEN it stops everything and says so
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    assert counter.polls == 1
    assert emulator.service_counts() == dict.fromkeys(RUNNING, (0, 0))
    assert "stopping anyway (force)" in execution.output["drain"]


def test_invalid_hibernate_input_changes_nothing(emulator: Emulator, counter: ScriptedCounter) -> None:
    # GIVEN a misspelt field
    arn = emulator.create_state_machine(FILE)

    # WHEN hibernate runs
    execution = emulator.run(arn, {"forse": True})

    # THEN it fails as InvalidInput naming the field, and nothing was stopped
    assert (execution.status, execution.error) == ("FAILED", "InvalidInput")
    assert "forse" in (execution.cause or "")
    assert counter.polls == 0
    assert emulator.service_counts() == {k: (n, n) for k, n in RUNNING.items()}


def test_database_outage_is_retried_then_fails_named(
    emulator: Emulator, counter: ScriptedCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the metadata database cannot be reached
    from airflow_control_plane.errors import TransientError

    def unreachable() -> ActiveTaskInstances:
        counter.polls += 1
        raise TransientError("cannot connect to the metadata database: timeout")

    monkeypatch.setattr(counter, "count_active", unreachable)
    arn = emulator.create_state_machine(FILE)

    # WHEN hibernate runs
    execution = emulator.run(arn, {})

    # THEN the drain check was retried (1 + 3 attempts) and the failure names the step; workers kept
    assert (execution.status, execution.error) == ("FAILED", "TransientError")
    assert (execution.cause or "").startswith("drain_tasks: ")
    assert counter.polls == 4
    assert emulator.service_counts()["worker"] == (2, 2)


def test_hibernate_twice_is_safe(emulator: Emulator, counter: ScriptedCounter) -> None:
    # GIVEN an environment hibernated once
    arn = emulator.create_state_machine(FILE)
    assert emulator.run(arn, {}).status == "SUCCEEDED"

    # WHEN hibernate runs again
    execution = emulator.run(arn, {})

    # THEN it succeeds, everything stays at zero, and it announces again
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    assert emulator.service_counts() == dict.fromkeys(RUNNING, (0, 0))
    assert [e["detail-type"] for e in emulator.events()] == ["Airflow Environment Hibernated"] * 2


def test_a_single_worker_service_is_stopped_too(emulator: Emulator, counter: ScriptedCounter) -> None:
    # GIVEN the default stack: one worker queue (the WorkerServices list has one entry)
    single = "[{'queue': 'default', 'serviceName': '" + emulator.service_names["worker"] + "', 'minimum': 0}]"
    arn = emulator.create_state_machine(FILE, {"WorkerServices": single})

    # WHEN hibernate runs
    execution = emulator.run(arn, load_event("hibernate.json"))

    # THEN that worker service is stopped (a one-element list is still a list to the Map)
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    assert emulator.service_counts()["worker"] == (0, 0)
    assert execution.entered_states.count("StopWorkerService") == 1
