"""Every bring-up/hibernate handler sample event in events/ through its real handler.

The execution inputs (bringup*.json, hibernate*.json) run through the state machines in
tests/statemachines; here the Lambda events do, with in-memory adapters (no network).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest

from airflow_control_plane.bringup.drain import ActiveTaskInstances
from airflow_control_plane.errors import ConfigError, InvalidInputError
from airflow_control_plane.health import NotHealthyYet
from tests.conftest import function_app, load_event
from tests.statemachines.health_server import HEALTHY, with_status

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Context:
    function_name: str = "test"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:test"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"


def _handler_module(function_dir: str) -> ModuleType:
    return function_app(function_dir, f"lambda_app_{function_dir}", reuse=True)


@pytest.fixture(autouse=True)
def _powertools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


class StaticSource:
    def __init__(self, document: object) -> None:
        self.document = document

    def fetch(self) -> object:
        return self.document


class FixedCounter:
    def __init__(self, running: int, queued: int) -> None:
        self.counts = ActiveTaskInstances(running, queued)

    def count_active(self) -> ActiveTaskInstances:
        return self.counts


def test_validate_bringup_sample_event_plans_a_cold_start() -> None:
    # GIVEN the sample event of a hibernated environment asking for 2 workers
    app = _handler_module("bringup_validate")
    # WHEN handled
    result = app.lambda_handler(load_event("bringup_validate.json"), Context())
    # THEN the request is normalised and the plan raises everything
    assert result["request"]["workers"] == {"minimum": 2}
    assert result["request"]["services"] == {
        "api-server": 1,
        "scheduler": 1,
        "dag-processor": 1,
        "triggerer": 1,
    }
    plan = result["plan"]
    assert [u["serviceName"] for u in plan["coreUpdates"]] == [
        "airflow-dev-api-server",
        "airflow-dev-scheduler",
        "airflow-dev-dag-processor",
        "airflow-dev-triggerer",
    ]
    # AND every worker service is raised: to the request's minimum, or its own if higher
    assert plan["workerUpdates"] == [
        {"key": "worker:default", "serviceName": "airflow-dev-worker-default", "current": 0, "desired": 2},
        {"key": "worker:heavy", "serviceName": "airflow-dev-worker-heavy", "current": 0, "desired": 3},
    ]
    assert plan["createAdminUser"] is True


def test_validate_hibernate_sample_event() -> None:
    app = _handler_module("bringup_validate")
    result = app.lambda_handler(load_event("hibernate_validate.json"), Context())
    assert result == {
        "request": {"drain": {"pollSeconds": 30, "maxPolls": 20}, "force": False, "requestedBy": None}
    }


@pytest.mark.parametrize(
    "event",
    [
        {"machine": "shutdown", "request": {}},
        {"machine": "bringup", "request": {}, "serviceNames": "x", "observed": []},
        {"machine": "bringup", "request": {}, "serviceNames": {"api-server": "a"}, "observed": {}},
    ],
)
def test_validate_rejects_malformed_envelopes(event: dict[str, Any]) -> None:
    app = _handler_module("bringup_validate")
    with pytest.raises(InvalidInputError):
        app.lambda_handler(event, Context())


def test_health_gate_sample_event_healthy(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a healthy api-server
    app = _handler_module("health_gate")
    monkeypatch.setenv("API_SERVER_URL", "http://api-server.airflow.local:8080")
    monkeypatch.setattr(app, "build_source", lambda config: StaticSource(HEALTHY))
    # WHEN the sample event is handled THEN the verdict is returned
    result = app.lambda_handler(load_event("health_gate.json"), Context())
    assert result["healthy"] is True
    assert result["components"]["triggerer"] == "healthy"


def test_health_gate_sample_event_not_healthy_raises_the_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    app = _handler_module("health_gate")
    monkeypatch.setenv("API_SERVER_URL", "http://api-server.airflow.local:8080")
    monkeypatch.setattr(
        app, "build_source", lambda config: StaticSource(with_status("dag_processor", "unhealthy"))
    )
    with pytest.raises(NotHealthyYet, match="dag_processor is unhealthy"):
        app.lambda_handler(load_event("health_gate.json"), Context())


def test_health_gate_without_url_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    app = _handler_module("health_gate")
    monkeypatch.delenv("API_SERVER_URL", raising=False)
    with pytest.raises(ConfigError, match="API_SERVER_URL"):
        app.lambda_handler(load_event("health_gate.json"), Context())


@pytest.mark.parametrize(("running", "queued", "action"), [(0, 0, "proceed"), (2, 1, "wait")])
def test_drain_check_sample_event(
    monkeypatch: pytest.MonkeyPatch, running: int, queued: int, action: str
) -> None:
    # GIVEN the metadata database holds some active task instances
    app = _handler_module("drain_check")
    monkeypatch.setenv("DB_HOST", "metadata.airflow.internal")
    monkeypatch.setenv("DB_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:db")
    monkeypatch.setattr(app, "build_counter", lambda config: FixedCounter(running, queued))
    # WHEN the sample event (poll 1 of 20) is handled
    result = app.lambda_handler(load_event("drain_check.json"), Context())
    # THEN the decision carries the counts and a reason
    assert (result["action"], result["running"], result["queued"], result["attempt"]) == (
        action,
        running,
        queued,
        1,
    )
    assert result["reason"]


@pytest.mark.parametrize(
    "event", [{"attempt": 0, "maxPolls": 1}, {"attempt": 1}, {"attempt": 1, "maxPolls": 2, "force": 1}]
)
def test_drain_check_rejects_bad_events(monkeypatch: pytest.MonkeyPatch, event: dict[str, Any]) -> None:
    app = _handler_module("drain_check")
    monkeypatch.setattr(app, "build_counter", lambda config: FixedCounter(0, 0))
    with pytest.raises(InvalidInputError):
        app.lambda_handler(event, Context())


def test_drain_check_config_reads_secret_credentials() -> None:
    # GIVEN a secrets client holding an RDS-style secret
    app = _handler_module("drain_check")

    class Secrets:
        def get_secret_value(self, SecretId: str) -> dict[str, str]:
            assert SecretId == "arn:secret"
            return {"SecretString": '{"username": "airflow", "password": "pw"}'}

    class Broken:
        def get_secret_value(self, SecretId: str) -> dict[str, str]:
            return {"SecretString": "not json"}

    # THEN the credentials are read, and a malformed secret is a ConfigError naming it
    assert app._credentials("arn:secret", Secrets()) == ("airflow", "pw")
    with pytest.raises(ConfigError, match="arn:other"):
        app._credentials("arn:other", Broken())
