"""ServiceCounts (functions/service_counts + airflow_control_plane.service_counts): the count a
deploy gives each ECS service is the one it runs at now, or 0 for a service not created yet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_control_plane.errors import InvalidInputError
from airflow_control_plane.service_counts import decide_counts, parse_services
from tests.conftest import load_module

pytestmark = pytest.mark.unit

APP = Path(__file__).resolve().parents[2] / "functions" / "service_counts" / "app.py"
SERVICES = {"ApiServer": "env-api-server", "Worker1": "env-worker-default", "Worker2": "env-worker-heavy"}


app = load_module(APP, "service_counts_app")


class FixedObserver:
    def __init__(self, counts: dict[str, int], fail: bool = False) -> None:
        self.counts = counts
        self.fail = fail
        self.asked: list[tuple[str, list[str]]] = []

    def desired_counts(self, cluster: str, names: list[str]) -> dict[str, int]:
        self.asked.append((cluster, names))
        if self.fail:
            raise RuntimeError("AccessDeniedException")
        return {n: c for n, c in self.counts.items() if n in names}


def event(request_type: str, **properties: Any) -> dict[str, Any]:
    return {
        "RequestType": request_type,
        "ResponseURL": "https://cloudformation-custom-resource-response.s3.amazonaws.com/x?sig=1",
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/airflow-dev/1",
        "RequestId": "req-1",
        "LogicalResourceId": "ServiceCounts",
        "ResourceProperties": {
            "ServiceToken": "arn:aws:lambda:x",
            "Cluster": "env",
            "Services": SERVICES,
            **properties,
        },
    }


def test_first_deploy_starts_nothing() -> None:
    # GIVEN no service exists yet WHEN the stack is created
    decision = decide_counts("Create", SERVICES, {})
    # THEN every service is declared at 0, and the reason says why
    assert decision.counts == {"ApiServer": 0, "Worker1": 0, "Worker2": 0}
    assert "not created yet" in decision.reason


def test_update_repeats_the_running_counts() -> None:
    # GIVEN a running environment: api-server 1, the autoscaler at 3 workers, a new queue slot
    observed = {"env-api-server": 1, "env-worker-default": 3}
    decision = decide_counts("Update", SERVICES, observed)
    # THEN the update declares what runs now; only the new service starts at 0
    assert decision.counts == {"ApiServer": 1, "Worker1": 3, "Worker2": 0}
    assert "Worker1=3" in decision.reason
    assert "Worker2" in decision.reason


def test_a_hibernated_environment_stays_hibernated() -> None:
    observed = dict.fromkeys(SERVICES.values(), 0)
    assert set(decide_counts("Update", SERVICES, observed).counts.values()) == {0}


def test_handler_answers_counts_as_attributes_and_reads_each_name_once() -> None:
    observer = FixedObserver({"env-api-server": 2, "env-worker-default": 1})
    body = app.handle(app.CountsRequest.parse(event("Update")), observer)
    assert body["Status"] == "SUCCESS"
    assert body["Data"] == {"ApiServer": "2", "Worker1": "1", "Worker2": "0"}
    assert observer.asked == [("env", sorted(SERVICES.values()))]


def test_delete_reads_nothing_and_succeeds() -> None:
    observer = FixedObserver({})
    body = app.handle(app.CountsRequest.parse(event("Delete")), observer)
    assert (body["Status"], body["Data"], observer.asked) == ("SUCCESS", {}, [])


def test_a_failed_read_fails_the_stack_operation_instead_of_guessing() -> None:
    # GIVEN ECS cannot be read WHEN an update asks for the counts
    body = app.handle(app.CountsRequest.parse(event("Update")), FixedObserver({}, fail=True))
    # THEN CloudFormation gets FAILED (it rolls back; no count is sent), never a guessed 0
    assert body["Status"] == "FAILED"
    assert "AccessDeniedException" in body["Reason"]
    assert body["Data"] == {}


@pytest.mark.parametrize(
    "properties",
    [{"Cluster": ""}, {"Services": {}}, {"Services": {"Api-Server": "x"}}, {"Services": {"Api": ""}}],
)
def test_bad_properties_fail_with_a_clear_reason(properties: dict[str, Any]) -> None:
    body = app.handle(app.CountsRequest.parse(event("Create", **properties)), FixedObserver({}))
    assert body["Status"] == "FAILED"
    assert "InvalidInputError" in body["Reason"]


def test_malformed_events_are_refused() -> None:
    with pytest.raises(InvalidInputError):
        app.CountsRequest.parse({**event("Create"), "ResponseURL": "http://plain"})
    with pytest.raises(InvalidInputError):
        app.CountsRequest.parse({**event("Create"), "RequestType": "Replace"})
    with pytest.raises(InvalidInputError):
        parse_services(["not", "a", "map"])
    with pytest.raises(InvalidInputError):
        decide_counts("Delete", SERVICES, {})
