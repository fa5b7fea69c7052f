"""The scheduler-side wake-up: which publishes wake the autoscaler, and how often."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_control_plane.scaling.request import parse_request
from airflow_control_plane.scaling.wakeup import LambdaWaker, WakeUpHook, install_wakeup_hook, should_wake

pytestmark = pytest.mark.unit


class RecordingWaker:
    def __init__(self, fail: bool = False) -> None:
        self.woken: list[str] = []
        self.fail = fail

    def wake(self, queue: str) -> None:
        if self.fail:
            raise ConnectionError("lambda endpoint unreachable")
        self.woken.append(queue)


def test_should_wake_rate_limits_per_queue() -> None:
    watched = frozenset({"etl", "default"})
    assert should_wake("etl", watched, {}, now=100.0, min_interval=30)
    assert not should_wake("etl", watched, {"etl": 80.0}, now=100.0, min_interval=30)
    assert should_wake("etl", watched, {"etl": 70.0}, now=100.0, min_interval=30)
    assert should_wake("default", watched, {"etl": 99.0}, now=100.0, min_interval=30)
    assert not should_wake("heavy", watched, {}, now=100.0, min_interval=30)


def test_a_burst_wakes_once_per_interval() -> None:
    # GIVEN a hook watching etl, 30 s apart at most
    clock = [0.0]
    waker = RecordingWaker()
    hook = WakeUpHook(waker, frozenset({"etl"}), min_interval=30, clock=lambda: clock[0])
    # WHEN the scheduler publishes 500 etl tasks within 10 s, then one more 40 s later
    for i in range(500):
        clock[0] = i * 0.02
        hook.on_publish("etl")
    clock[0] = 50.0
    hook.on_publish("etl")
    # THEN the autoscaler was woken twice
    assert waker.woken == ["etl", "etl"]


def test_a_failed_wake_up_never_breaks_publishing() -> None:
    hook = WakeUpHook(RecordingWaker(fail=True), frozenset({"etl"}))
    assert hook.on_publish("etl") is False


def test_lambda_waker_sends_an_async_wake_up_event_the_handler_accepts() -> None:
    class FakeLambda:
        def __init__(self) -> None:
            self.calls: list[dict[str, Any]] = []

        def invoke(self, **kwargs: Any) -> None:
            self.calls.append(kwargs)

    client = FakeLambda()
    LambdaWaker(client, "airflow-dev-autoscaler").wake("etl")
    call = client.calls[0]
    assert call["InvocationType"] == "Event"
    assert call["FunctionName"] == "airflow-dev-autoscaler"
    request = parse_request(json.loads(call["Payload"]), now=__import__("datetime").datetime.now())
    assert request.trigger == "Worker wake-up"
    assert request.dry_run is False


def test_a_wake_up_that_cannot_be_configured_never_stops_the_scheduler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN the wake-up asked for but no AWS region (a container outside ECS, say): the container
    # harness found the scheduler exiting at start with NoRegionError from this hook
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    # WHEN Celery's config module installs the hook THEN it is disabled, not raised
    assert install_wakeup_hook({"AUTOSCALER_WAKEUP_FUNCTION": "airflow-dev-autoscaler"}) is None
