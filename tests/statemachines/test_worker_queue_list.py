"""Any number of worker queues: the WorkerServices substitution that template.yaml renders from
a queue list (airflow_control_plane.worker_queues), executed by both state machines.

Five queues: hibernate stops all five, bring-up starts all five. Twelve queues (sixteen
services with the core four): bring-up observes them in DescribeServices calls of at most 10,
the ECS limit the emulator enforces.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from airflow_control_plane import worker_queues
from tests.conftest import load_event
from tests.statemachines.sfn_emulator import DESCRIBE_SERVICES_LIMIT, Emulator, load_handler_module
from tests.static.tools import load_template

pytestmark = pytest.mark.statemachines

REPO_ROOT = Path(__file__).resolve().parents[2]
FAST = {"settle": {"pollSeconds": 5, "maxPolls": 3}}
FIVE = ["default", "reports", "heavy", "ml", "etl-nightly"]


def queue_list(names: list[str], minimums: dict[str, int] | None = None) -> str:
    entries = ", ".join(
        f'{{"name": "{n}", "min": {(minimums or {}).get(n, 0)}, "max": 6, "concurrency": 2}}' for n in names
    )
    return f'{{"queues": [{entries}]}}'


def rendered_worker_services(tmp_path: Path, queues_json: str, machine: str) -> str:
    """The machine's WorkerServices substitution from template.yaml rendered for these queues,
    with each ``${<Id>Service.Name}`` resolved to the service name the template gives it."""
    rendered = tmp_path / "template.yaml"
    rendered.write_text(
        worker_queues.render(
            (REPO_ROOT / "template.yaml").read_text(), worker_queues.parse_queues(queues_json)
        )
    )
    template = load_template(rendered)
    resources = template["Resources"]
    value = resources[machine]["Properties"]["DefinitionSubstitutions"]["WorkerServices"]["Fn::Sub"]

    def service_name(match: re.Match[str]) -> str:
        name = resources[match[1]]["Properties"]["ServiceName"]["Fn::Sub"]
        return str(name).replace("${EnvironmentName}", "airflow-test")

    return re.sub(r"\$\{(\w+)\.Name\}", service_name, value)


def ensure_worker_services(emulator: Emulator, names: list[str]) -> list[str]:
    keys = [f"worker-{n}" for n in names]
    emulator.add_worker_services([k for k in keys if k not in emulator.service_names])
    return keys


def test_hibernate_stops_all_five_worker_services(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # GIVEN a stack rendered with five worker queues, every service running
    keys = ensure_worker_services(emulator, FIVE)
    substitution = rendered_worker_services(tmp_path, queue_list(FIVE), "HibernateStateMachine")
    module = load_handler_module("drain_check")
    monkeypatch.setenv("DB_HOST", "metadata.example.internal")
    monkeypatch.setenv("DB_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:db")

    class Idle:
        def count_active(self) -> object:
            from airflow_control_plane.bringup.drain import ActiveTaskInstances

            return ActiveTaskInstances(0, 0)

    monkeypatch.setattr(module, "build_counter", lambda config: Idle())
    emulator.register_lambda("drain-check", module.lambda_handler)
    for key in ["api-server", "scheduler", "dag-processor", "triggerer", *keys]:
        emulator.set_service_counts(key, 2)
    arn = emulator.create_state_machine("hibernate.asl.json", {"WorkerServices": substitution})

    # WHEN hibernate runs
    execution = emulator.run(arn, load_event("hibernate.json"))

    # THEN all five worker services (and the core) are at zero, each stopped once
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    counts = emulator.service_counts()
    assert {k: counts[k] for k in keys} == dict.fromkeys(keys, (0, 0))
    assert execution.entered_states.count("StopWorkerService") == 5


@pytest.mark.usefixtures("api_server")
def test_bringup_starts_all_five_worker_services_to_their_minimums(
    emulator: Emulator, tmp_path: Path
) -> None:
    # GIVEN a hibernated stack rendered with five worker queues, minimums 1..5
    minimums = {name: i + 1 for i, name in enumerate(FIVE)}
    keys = ensure_worker_services(emulator, FIVE)
    substitution = rendered_worker_services(tmp_path, queue_list(FIVE, minimums), "BringUpStateMachine")
    arn = emulator.create_state_machine("bringup.asl.json", {"WorkerServices": substitution})

    # WHEN bring-up runs
    execution = emulator.run(arn, {**load_event("bringup_minimal.json"), **FAST})

    # THEN every one of the five runs at its own minimum
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    counts = emulator.service_counts()
    assert [counts[k] for k in keys] == [(m, m) for m in minimums.values()]


@pytest.mark.usefixtures("api_server")
def test_bringup_observes_sixteen_services_in_chunks_of_ten(emulator: Emulator, tmp_path: Path) -> None:
    # GIVEN twelve worker queues: with the four core services, more than one DescribeServices holds
    names = [*FIVE, *(f"q{i}" for i in range(7))]
    keys = ensure_worker_services(emulator, names)
    substitution = rendered_worker_services(
        tmp_path, queue_list(names, dict.fromkeys(names, 1)), "BringUpStateMachine"
    )
    arn = emulator.create_state_machine("bringup.asl.json", {"WorkerServices": substitution})

    # WHEN bring-up runs
    execution = emulator.run(arn, {**load_event("bringup_minimal.json"), **FAST})

    # THEN it succeeds (ECS would refuse one call with 16 names) and starts all twelve
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    assert max(emulator.faults.describe_services_sizes) <= DESCRIBE_SERVICES_LIMIT
    counts = emulator.service_counts()
    assert [counts[k] for k in keys] == [(1, 1)] * 12
