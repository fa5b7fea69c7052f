"""Optional services (Flower) in the state machines: the AddOnServices substitution, as the
template composes it when FlowerEnabled, is started by bring-up with the workers and stopped
by hibernate with them; the default "[]" touches nothing (the other tests run with it).
"""

from __future__ import annotations

import pytest

from airflow_control_plane.bringup.drain import ActiveTaskInstances
from tests.conftest import load_event
from tests.statemachines.sfn_emulator import Emulator
from tests.statemachines.test_bringup import FAST
from tests.statemachines.test_hibernate import RUNNING, ScriptedCounter, counter  # noqa: F401 - fixture

pytestmark = pytest.mark.statemachines

FLOWER = "airflow-test-flower"


def add_flower(emulator: Emulator, desired: int = 0) -> str:
    """Create the Flower service in moto the way the template's FlowerService does; return the
    AddOnServices substitution the template composes for it."""
    emulator.ecs.create_service(
        cluster=emulator.cluster,
        serviceName=FLOWER,
        taskDefinition=emulator.substitutions["MigrateTaskDefinitionArn"],
        desiredCount=desired,
        launchType="FARGATE",
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": [emulator.substitutions["SubnetIds"]],
                "securityGroups": [emulator.substitutions["SecurityGroupId"]],
            }
        },
    )
    return "[{'serviceName': '" + FLOWER + "', 'desired': 1}]"


def flower_count(emulator: Emulator) -> int:
    (service,) = emulator.ecs.describe_services(cluster=emulator.cluster, services=[FLOWER])["services"]
    return int(service["desiredCount"])


@pytest.mark.usefixtures("api_server")
def test_bring_up_starts_flower_after_the_workers(emulator: Emulator) -> None:
    # GIVEN a hibernated stack with Flower enabled (its service at 0)
    arn = emulator.create_state_machine("bringup.asl.json", {"AddOnServices": add_flower(emulator)})
    # WHEN bring-up runs
    execution = emulator.run(arn, {**load_event("bringup_minimal.json"), **FAST})
    # THEN it succeeds with Flower at one task, set after the workers step was decided
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    assert flower_count(emulator) == 1
    states = execution.entered_states
    assert states.index("WorkersWanted") < states.index("SetAddOnCount") < states.index("PublishReady")


@pytest.mark.usefixtures("api_server")
def test_bring_up_without_optional_services_touches_nothing_more(emulator: Emulator) -> None:
    # GIVEN the default stack (AddOnServices "[]") WHEN bring-up runs
    arn = emulator.create_state_machine("bringup.asl.json")
    execution = emulator.run(arn, {**load_event("bringup_minimal.json"), **FAST})
    # THEN no optional service is updated
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    assert "SetAddOnCount" not in execution.entered_states


def test_hibernate_stops_flower_with_the_workers_after_the_drain(
    emulator: Emulator,
    counter: ScriptedCounter,  # noqa: F811 - the fixture imported above
) -> None:
    # GIVEN a running stack with Flower at one task and one task instance still running
    counter.script = [ActiveTaskInstances(running=1, queued=0), ActiveTaskInstances(0, 0)]
    arn = emulator.create_state_machine(
        "hibernate.asl.json", {"AddOnServices": add_flower(emulator, desired=1)}
    )
    # WHEN hibernate runs
    execution = emulator.run(arn, load_event("hibernate.json"))
    # THEN Flower is at 0 like every other service, stopped after the drain and the workers
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    assert flower_count(emulator) == 0
    assert emulator.service_counts() == dict.fromkeys(RUNNING, (0, 0))
    states = execution.entered_states
    assert states.index("Drained") < states.index("StopWorkerService") < states.index("StopAddOnService")
    assert states.index("StopAddOnService") < states.index("StopApiServer")
