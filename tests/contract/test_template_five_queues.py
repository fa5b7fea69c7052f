"""A stack with five worker queues passes every static check (SAM translation, cfn-lint,
checkov, the template rules and the worker-block drift check), as template.yaml does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_control_plane import worker_queues
from tests.static import tools

pytestmark = pytest.mark.contract

REPO_ROOT = Path(__file__).resolve().parents[2]
FIVE = {
    "queues": [
        {"id": "Worker1", "name": "default", "max": 4, "concurrency": 8, "capacity_provider": "FARGATE_SPOT"},
        {"name": "reports", "max": 2, "concurrency": 4},
        {"name": "heavy", "max": 3, "concurrency": 1, "cpu": 4096, "memory": 16384},
        {"name": "ml", "max": 1, "concurrency": 2, "cpu": 2048, "memory": 8192},
        {"name": "etl-nightly", "min": 1, "max": 6, "concurrency": 16, "capacity_provider": "FARGATE_SPOT"},
    ]
}


def test_a_five_queue_stack_passes_every_static_check(tmp_path: Path) -> None:
    # GIVEN template.yaml rendered for five queues, beside the code it points at
    for name in ("functions", "statemachines"):
        (tmp_path / name).symlink_to(REPO_ROOT / name)
    (tmp_path / "worker_queues.json").write_text(json.dumps(FIVE))
    template = tmp_path / "template-five-queues.yaml"
    template.write_text(
        worker_queues.render(
            (REPO_ROOT / "template.yaml").read_text(),
            worker_queues.load_queues(tmp_path / "worker_queues.json"),
        )
    )
    # WHEN every static check runs on it
    results = list(tools.run_all(template))
    # THEN all ran and passed
    assert [r.name for r in results] == [
        "SAM translation",
        "cfn-lint (translated)",
        "checkov (translated)",
        "template rules",
    ]
    assert [r.render() for r in results if not r.passed] == []
    translated = json.loads((tools.OUTPUT_DIR / "template-five-queues.translated.json").read_text())
    services = [lid for lid, r in translated["Resources"].items() if r["Type"] == "AWS::ECS::Service"]
    assert sum(lid.startswith("Worker") for lid in services) == 5
