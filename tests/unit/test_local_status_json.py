"""`afctl status --json`: the documented shape (README, "afctl status --json"), and the same
figures as the printed table, for an environment that is not running."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from airflow_control_plane.cli import cli
from airflow_control_plane.local.airflow_env import ALL_SERVICES
from airflow_control_plane.local.status import STATUS_JSON_VERSION

pytestmark = pytest.mark.unit

TOP_LEVEL = {
    "version",
    "supervisor_running",
    "services",
    "base_url",
    "health",
    "components",
    "dag_source",
    "live_release",
    "last_sync",
    "last_refused_sync",
    "database",
    "broker",
    "last_scaling",
}
SERVICE_KEYS = {
    *("name", "desired", "running", "stopping", "steady", "restarts", "pids", "last_exit_code", "waiting")
}


def _status(state: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AFCTL_"))}
    env.update(AFCTL_STATE_DIR=str(state), AFCTL_DAGS_SOURCE="folder", AFCTL_DAGS_FOLDER=str(state))
    result = CliRunner().invoke(cli, ["status", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_status_json_has_the_documented_keys_and_the_tables_figures(tmp_path: Path) -> None:
    # GIVEN a hibernated environment: desired counts recorded, no supervisor
    state = tmp_path / "state"
    (state / "run").mkdir(parents=True)
    (state / "run" / "desired.json").write_text(json.dumps({"scheduler": 1, "worker": 2}))
    # WHEN its status is asked as JSON and as text
    report = json.loads(_status(state, "--json"))
    table = _status(state).splitlines()
    # THEN every documented key is there, and nothing else
    assert set(report) == TOP_LEVEL
    assert report["version"] == STATUS_JSON_VERSION
    assert report["supervisor_running"] is False
    assert report["health"] is None
    # AND every service is listed with the same keys, in the table's order and with its figures
    assert [s["name"] for s in report["services"]] == list(ALL_SERVICES)
    for service, line in zip(report["services"], table[1:], strict=False):
        assert set(service) == SERVICE_KEYS
        name, desired, running, _steady, restarts, pids = line.split()
        assert (service["name"], service["desired"], service["running"]) == (name, int(desired), int(running))
        assert (service["restarts"], service["pids"], pids) == (int(restarts), [], "-")
    counts = {s["name"]: s["desired"] for s in report["services"]}
    assert (counts["scheduler"], counts["worker"], counts["api-server"]) == (1, 2, 0)
