"""worker_queues.json -> the worker parts of template.yaml (airflow_control_plane.worker_queues)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from airflow_control_plane import worker_queues
from airflow_control_plane.errors import ConfigError
from airflow_control_plane.scaling.config import parse_queue_map
from tests.static.tools import load_template

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_TEXT = (REPO_ROOT / "template.yaml").read_text()
FIVE = {
    "queues": [
        {
            "id": "Worker1",
            "name": "default",
            "min": 1,
            "max": 4,
            "concurrency": 8,
            "capacity_provider": "FARGATE_SPOT",
        },
        {"name": "reports", "max": 2, "concurrency": 4},
        {"name": "heavy", "max": 3, "concurrency": 1, "cpu": 4096, "memory": 16384},
        {"name": "ml", "min": 0, "max": 1, "concurrency": 2, "cpu": 2048, "memory": 8192},
        {"name": "etl_nightly", "max": 6, "concurrency": 16, "capacity_provider": "FARGATE_SPOT"},
    ]
}


def rendered(tmp_path: Path, queues: dict[str, Any]) -> dict[str, Any]:
    path = tmp_path / "template.yaml"
    path.write_text(worker_queues.render(TEMPLATE_TEXT, worker_queues.parse_queues(json.dumps(queues))))
    return load_template(path)


def resolve_names(value: str, resources: dict[str, Any]) -> str:
    def name(match: re.Match[str]) -> str:
        return str(resources[match[1]]["Properties"]["ServiceName"]["Fn::Sub"]).replace(
            "${EnvironmentName}", "env"
        )

    return re.sub(r"\$\{(\w+)\.Name\}", name, value)


def test_the_committed_template_is_rendered_from_the_committed_queue_file() -> None:
    # GIVEN template.yaml and worker_queues.json as committed THEN rendering changes nothing
    assert worker_queues.drift(REPO_ROOT / "template.yaml", REPO_ROOT / "worker_queues.json") == []


def test_five_queues_give_five_services_each_with_its_settings(tmp_path: Path) -> None:
    # GIVEN the template rendered with five queues
    template = rendered(tmp_path, FIVE)
    resources = template["Resources"]
    services = {
        lid: r["Properties"]
        for lid, r in resources.items()
        if r["Type"] == "AWS::ECS::Service" and "Worker" in lid
    }
    # THEN there is one worker service per queue, named after it, with its capacity provider
    assert sorted(services) == sorted(
        [
            "Worker1Service",
            "WorkerReportsService",
            "WorkerHeavyService",
            "WorkerMlService",
            "WorkerEtlNightlyService",
        ]
    )
    assert services["WorkerEtlNightlyService"]["ServiceName"] == {
        "Fn::Sub": "${EnvironmentName}-worker-etl_nightly"
    }
    assert services["Worker1Service"]["CapacityProviderStrategy"][0]["CapacityProvider"] == "FARGATE_SPOT"
    assert services["WorkerMlService"]["CapacityProviderStrategy"][0]["CapacityProvider"] == "FARGATE"
    # AND the sizes: given ones literal, the others the WorkerCpu/WorkerMemory parameters
    heavy = resources["WorkerHeavyTaskDefinition"]["Properties"]
    assert (heavy["Cpu"], heavy["Memory"]) == (4096, 16384)
    assert resources["WorkerReportsTaskDefinition"]["Properties"]["Cpu"] == {"Ref": "WorkerCpu"}
    # AND the concurrency and the queue reach the worker container
    container = resources["WorkerEtlNightlyTaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "16"
    assert container["Command"] == ["celery-worker", "--queues", "etl_nightly"]
    # AND ServiceCounts gives every one its count
    counts = resources["ServiceCounts"]["Properties"]["Services"]
    assert {k for k in counts if k.startswith("Worker")} == {s.removesuffix("Service") for s in services}


def test_the_autoscaler_config_covers_all_five_queues(tmp_path: Path) -> None:
    # GIVEN the autoscaler's WORKER_QUEUES as the five-queue template composes it
    template = rendered(tmp_path, FIVE)
    env = template["Resources"]["AutoscalerFunction"]["Properties"]["Environment"]["Variables"]
    text = resolve_names(env["WORKER_QUEUES"]["Fn::Sub"], template["Resources"])
    # WHEN the autoscaler parses it (its own parser)
    queues = {q.queue: q for q in parse_queue_map(text)}
    # THEN every queue is there with its service, bounds, concurrency and capacity provider
    assert list(queues) == ["default", "reports", "heavy", "ml", "etl_nightly"]
    assert queues["etl_nightly"].service == "env-worker-etl_nightly"
    assert (queues["default"].min_workers, queues["default"].max_workers, queues["default"].concurrency) == (
        1,
        4,
        8,
    )
    assert queues["heavy"].concurrency == 1
    assert queues["etl_nightly"].capacity_provider == "FARGATE_SPOT"


def test_every_control_plane_grant_names_every_worker_service(tmp_path: Path) -> None:
    template = rendered(tmp_path, FIVE)
    text = json.dumps(template["Resources"]["AutoscalerRole"]) + json.dumps(
        template["Resources"]["StateMachineRole"]
    )
    for logical_id in ("Worker1", "WorkerReports", "WorkerHeavy", "WorkerMl", "WorkerEtlNightly"):
        # autoscaler: UpdateService + DescribeServices; state machines: one list for both
        assert text.count(f'{{"Ref": "{logical_id}Service"}}') == 3, logical_id


def test_a_resize_keeps_logical_ids_and_service_names(tmp_path: Path) -> None:
    # GIVEN the five queues, then the same queues with every setting changed
    before = rendered(tmp_path, FIVE)["Resources"]
    resized = {
        "queues": [
            {
                **q,
                "min": 0,
                "max": 9,
                "concurrency": 3,
                "capacity_provider": "FARGATE",
                "cpu": 512,
                "memory": 4096,
            }
            for q in FIVE["queues"]
        ]
    }
    after = rendered(tmp_path, resized)["Resources"]
    # THEN the same resources exist and every service keeps its name (an in-place update)
    assert sorted(before) == sorted(after)
    for lid, resource in before.items():
        if resource["Type"] == "AWS::ECS::Service":
            assert resource["Properties"]["ServiceName"] == after[lid]["Properties"]["ServiceName"]


def test_three_slot_stacks_keep_their_logical_ids_with_explicit_ids(tmp_path: Path) -> None:
    # GIVEN the upgrade path: the three former slots listed with ids Worker1..Worker3
    slots = {
        "queues": [{"id": f"Worker{n}", "name": name} for n, name in ((1, "default"), (2, "b"), (3, "c"))]
    }
    resources = rendered(tmp_path, slots)["Resources"]
    # THEN the resources keep the slot-era logical ids (no replacement on the upgrade)
    for n in (1, 2, 3):
        assert f"Worker{n}Service" in resources
        assert f"Worker{n}TaskDefinition" in resources


@pytest.mark.parametrize(
    ("queues", "message"),
    [
        ({"queues": []}, "at least one queue"),
        ({"queues": [{"name": "a"}, {"name": "a"}]}, "duplicate queue name"),
        ({"queues": [{"name": "a-b"}, {"name": "a_b"}]}, "duplicate queue logical_id"),
        ({"queues": [{"name": "a", "min": 3, "max": 2}]}, "min (3) is greater than max (2)"),
        ({"queues": [{"name": "a", "cpu": 4096, "memory": 2048}]}, "cannot run cpu 4096 with memory 2048"),
        ({"queues": [{"name": "a", "cpu": 1024}]}, "cpu and memory together"),
        ({"queues": [{"name": "a", "capacity_provider": "EC2"}]}, "capacity_provider"),
        ({"queues": [{"name": "Bad Name"}]}, "name must match"),
        ({"queues": [{"name": "a", "replicas": 2}]}, "unknown field"),
    ],
)
def test_bad_queue_lists_are_refused_with_a_reason(queues: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        worker_queues.parse_queues(json.dumps(queues))


def test_a_hand_edited_block_is_reported_as_drift(tmp_path: Path) -> None:
    # GIVEN the committed template with one generated line edited by hand
    (tmp_path / "worker_queues.json").write_text((REPO_ROOT / "worker_queues.json").read_text())
    edited = TEMPLATE_TEXT.replace("DefaultQueue: default", "DefaultQueue: other", 1)
    assert edited != TEMPLATE_TEXT
    (tmp_path / "template.yaml").write_text(edited)
    # THEN the drift check names it, and the command's --check exits 1
    assert worker_queues.drift(tmp_path / "template.yaml", tmp_path / "worker_queues.json")
    assert worker_queues.main(["--check", str(tmp_path / "template.yaml")]) == 1
    # AND rendering restores it
    assert worker_queues.main([str(tmp_path / "template.yaml")]) == 0
    assert (tmp_path / "template.yaml").read_text() == TEMPLATE_TEXT


def test_an_unclosed_block_is_an_error() -> None:
    with pytest.raises(ConfigError, match="never closed"):
        worker_queues.render(
            "  # generated:mappings >>>\n", worker_queues.parse_queues('{"queues": [{"name": "a"}]}')
        )
