"""Evaluation of /api/v2/monitor/health documents (pure)."""

from __future__ import annotations

import pytest

from airflow_control_plane.errors import ConfigError, TransientError
from airflow_control_plane.health import (
    REQUIRED_COMPONENTS,
    HttpHealthSource,
    NotHealthyYet,
    check_health,
    evaluate_health,
)
from tests.statemachines.health_server import HEALTHY, with_status

pytestmark = pytest.mark.unit


class StaticSource:
    def __init__(self, document: object) -> None:
        self.document = document

    def fetch(self) -> object:
        return self.document


def test_all_healthy_is_healthy() -> None:
    verdict = evaluate_health(HEALTHY)
    assert verdict.healthy is True
    assert verdict.components == dict.fromkeys(REQUIRED_COMPONENTS, "healthy")
    assert verdict.reason.startswith("healthy")


@pytest.mark.parametrize("component", REQUIRED_COMPONENTS)
def test_each_unhealthy_component_is_named(component: str) -> None:
    # GIVEN one component unhealthy WHEN judged THEN not healthy, naming it and only it
    verdict = evaluate_health(with_status(component, "unhealthy"))
    assert verdict.healthy is False
    assert verdict.reason == f"not healthy: {component} is unhealthy"


def test_missing_and_null_components_are_named() -> None:
    # GIVEN the triggerer absent and the dag processor with a null status (never heartbeated)
    document = with_status("triggerer", None)
    document["dag_processor"] = {"status": None, "latest_dag_processor_heartbeat": None}
    verdict = evaluate_health(document)
    # THEN both are named
    assert verdict.healthy is False
    assert "dag_processor is not started" in verdict.reason
    assert "triggerer is missing" in verdict.reason
    assert "scheduler" not in verdict.reason


@pytest.mark.parametrize("document", [None, [], "healthy", 42])
def test_non_objects_are_not_healthy(document: object) -> None:
    assert evaluate_health(document).healthy is False


def test_check_health_raises_not_healthy_yet_with_the_reason() -> None:
    with pytest.raises(NotHealthyYet, match="scheduler is unhealthy"):
        check_health(StaticSource(with_status("scheduler", "unhealthy")))
    assert check_health(StaticSource(HEALTHY)).healthy is True


def test_not_healthy_yet_is_transient_and_keeps_its_name() -> None:
    # The state machine routes on the class name: it must stay "NotHealthyYet".
    assert issubclass(NotHealthyYet, TransientError)
    assert NotHealthyYet.__name__ == "NotHealthyYet"


@pytest.mark.parametrize(("url", "timeout"), [("api-server:8080", 5.0), ("http://x", 0.0)])
def test_http_source_refuses_bad_settings(url: str, timeout: float) -> None:
    with pytest.raises(ConfigError):
        HttpHealthSource(url, timeout_seconds=timeout)
