"""HttpHealthSource against a real local HTTP server (tests/statemachines/health_server.py)."""

from __future__ import annotations

import socket

import pytest

from airflow_control_plane.health import HttpHealthSource, NotHealthyYet, check_health
from tests.statemachines.health_server import HEALTHY, Answer, health_server, with_status

pytestmark = pytest.mark.contract


def test_fetches_and_judges_a_healthy_document() -> None:
    # GIVEN an api-server answering healthy
    with health_server(HEALTHY) as server:
        # WHEN checked (base URL with a trailing slash)
        verdict = check_health(HttpHealthSource(server.url + "/", timeout_seconds=5))
    # THEN healthy, and the request went to the health path
    assert verdict.healthy is True
    assert server.paths == ["/api/v2/monitor/health"]


def test_unhealthy_component_raises_not_healthy_yet_naming_it() -> None:
    # GIVEN an api-server whose scheduler is unhealthy WHEN checked THEN NotHealthyYet names it
    with (
        health_server(with_status("scheduler", "unhealthy")) as server,
        pytest.raises(NotHealthyYet, match="scheduler is unhealthy"),
    ):
        check_health(HttpHealthSource(server.url, timeout_seconds=5))


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (Answer(status=503, body=b'{"detail": "starting"}'), "answered HTTP 503"),
        (Answer(status=200, body=b"<html>proxy</html>"), "not JSON"),
    ],
)
def test_error_answers_are_not_healthy_yet(answer: Answer, message: str) -> None:
    with health_server(answer) as server, pytest.raises(NotHealthyYet, match=message):
        HttpHealthSource(server.url, timeout_seconds=5).fetch()


def test_refused_connection_is_not_healthy_yet() -> None:
    # GIVEN a port nobody listens on (bound, then closed)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # WHEN fetched THEN not healthy yet, saying it is not reachable
    with pytest.raises(NotHealthyYet, match="not reachable"):
        HttpHealthSource(f"http://127.0.0.1:{port}", timeout_seconds=2).fetch()


def test_a_slow_answer_is_cut_by_the_timeout() -> None:
    # GIVEN an api-server that takes 5 s to answer
    # WHEN fetched with a 1 s timeout THEN not healthy yet (bounded, no hang)
    with (
        health_server(Answer(delay_seconds=5)) as server,
        pytest.raises(NotHealthyYet, match="not reachable"),
    ):
        HttpHealthSource(server.url, timeout_seconds=1).fetch()
