"""The autoscaler Lambda handler: sample events in, decisions, metrics and errors out."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from airflow_control_plane.errors import InvalidInputError
from airflow_control_plane.scaling.config import AutoscalerConfig, parse_queue_map
from airflow_control_plane.scaling.demand import TaskCounts
from airflow_control_plane.scaling.drain import InMemoryWorkerControl
from airflow_control_plane.scaling.ecs import InMemoryWorkerServices, ServiceCounts
from airflow_control_plane.scaling.events import RecordingPublisher
from airflow_control_plane.scaling.hibernation import FixedFlag
from airflow_control_plane.scaling.memory import InMemoryStore
from airflow_control_plane.scaling.policy import ScaleMemory
from airflow_control_plane.scaling.service import ScalingPorts
from tests.conftest import REPO_ROOT, function_app, load_event

pytestmark = pytest.mark.unit

ENV = {
    "ENVIRONMENT_NAME": "airflow-test",
    "CLUSTER_NAME": "airflow-test",
    "SCHEDULER_SERVICE": "airflow-test-scheduler",
    "WORKER_QUEUES": '[{"queue": "etl", "service": "airflow-test-worker-etl", "concurrency": 8, "max": 10}]',
    "METADATA_DB_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db",
    "BROKER_URL_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:broker",
}


@dataclass
class FakeContext:
    function_name: str = "autoscaler"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:autoscaler"
    aws_request_id: str = "52fdfc07-2182-454f-963f-5f0f9a621d72"


class DownBroker:
    def waiting(self, queue: str) -> int:
        raise ConnectionError("Error 111 connecting to broker:6379. Connection refused.")


class FixedDemand:
    def task_counts(self) -> dict[str, TaskCounts]:
        return {"etl": TaskCounts(queued=20)}

    def due_dag_runs(self, now: object, horizon: object) -> list[Any]:
        return []


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "AirflowControlPlane")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return function_app("autoscaler")


class NoDemand:
    def task_counts(self) -> dict[str, TaskCounts]:
        return {}

    def due_dag_runs(self, now: object, horizon: object) -> list[Any]:
        return []


class EmptyBroker:
    def waiting(self, queue: str) -> int:
        return 0


def install_ports(
    app: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    services: InMemoryWorkerServices,
    *,
    demand: Any = None,
    broker: Any = None,
) -> ScalingPorts:
    config = AutoscalerConfig.from_env()
    ports = ScalingPorts(
        demand=demand or FixedDemand(),
        broker=broker or DownBroker(),
        services=services,
        memory=InMemoryStore(),
        hibernation=FixedFlag(False),
        publisher=RecordingPublisher(),
        control=InMemoryWorkerControl({}),
    )
    monkeypatch.setattr(app, "build_runtime", lambda: (config, ports))
    return ports


def emitted_metrics(output: str) -> dict[str, list[Any]]:
    """Metric name -> values from the EMF lines powertools prints."""
    found: dict[str, list[Any]] = {}
    for line in output.splitlines():
        if '"_aws"' not in line:
            continue
        blob = json.loads(line)
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = blob[metric["Name"]]
                found.setdefault(metric["Name"], []).extend(value if isinstance(value, list) else [value])
    return found


def test_scheduled_event_scales_up_on_partial_signal_and_counts_the_error(
    app: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN 20 queued etl task instances, the broker down, and no etl worker
    services = InMemoryWorkerServices({"airflow-test-worker-etl": ServiceCounts(0, 0)})
    install_ports(app, monkeypatch, services)
    # WHEN the schedule fires
    result = app.lambda_handler(load_event("autoscaler_schedule.json"), FakeContext())
    # THEN etl scales up to 3 from the database signal, the broker failure is reported
    assert services.calls == [("airflow-test-worker-etl", 3)]
    assert result["decisions"][0]["action"] == "scale_up"
    assert result["decisions"][0]["applied"] is True
    assert "broker" in result["errors"][0]
    # AND the metrics carry demand, desired, running, the action and the error count
    metrics = emitted_metrics(capsys.readouterr().out)
    assert metrics["QueueDemand"] == [20]
    assert metrics["DesiredWorkers"] == [3]
    assert metrics["ScaleUp"] == [1]
    assert metrics["ScalingErrors"] == [1]


def test_dry_run_event_changes_nothing(app: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    services = InMemoryWorkerServices({"airflow-test-worker-etl": ServiceCounts(0, 0)})
    ports = install_ports(app, monkeypatch, services)
    result = app.lambda_handler(load_event("autoscaler_dry_run.json"), FakeContext())
    assert result["dryRun"] is True
    assert result["decisions"][0]["to"] == 3
    assert result["decisions"][0]["applied"] is False
    assert services.calls == []
    assert isinstance(ports.publisher, RecordingPublisher)
    assert ports.publisher.published == []


WORKERS = ("worker-a@ip-10-0-1-1", "worker-b@ip-10-0-1-2", "worker-c@ip-10-0-1-3")


def idle_workers(ports: ScalingPorts) -> None:
    """Three idle, consuming etl workers as the Celery control sees them."""
    assert isinstance(ports.control, InMemoryWorkerControl)
    ports.control.counts.update(dict.fromkeys(WORKERS, 0))
    ports.control.consuming.update(WORKERS)


def test_a_future_dated_schedule_event_cannot_skip_the_idle_period(
    app: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN 3 idle etl workers, no demand, and idle clocks that started a few seconds ago (well
    # inside the start-up break-even: on the handler's own clock none is due for a drain)
    services = InMemoryWorkerServices({"airflow-test-worker-etl": ServiceCounts(3, 3)})
    ports = install_ports(app, monkeypatch, services, demand=NoDemand(), broker=EmptyBroker())
    idle_workers(ports)
    assert isinstance(ports.memory, InMemoryStore)
    started = datetime.now(UTC) - timedelta(seconds=5)
    ports.memory.values["airflow-test-worker-etl"] = ScaleMemory(dict.fromkeys(WORKERS, started))
    # WHEN a schedule event dated 2099 arrives (with the event's time, the idle period is over)
    event = {**load_event("autoscaler_schedule.json"), "time": "2099-01-01T00:00:00Z"}
    result = app.lambda_handler(event, FakeContext())
    # THEN the workers stay: no drain began and no count changed
    assert services.calls == [], result
    assert ports.control.calls == [], result
    assert result["decisions"][0]["action"] != "scale_down"
    # AND every idle clock still starts when it did
    assert ports.memory.values["airflow-test-worker-etl"].idle_since == dict.fromkeys(WORKERS, started)


def test_a_past_dated_schedule_event_does_not_store_an_old_idle_time(
    app: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN 3 idle etl workers and no idle clock yet
    services = InMemoryWorkerServices({"airflow-test-worker-etl": ServiceCounts(3, 3)})
    ports = install_ports(app, monkeypatch, services, demand=NoDemand(), broker=EmptyBroker())
    idle_workers(ports)
    before = datetime.now(UTC)
    # WHEN the sample schedule event (dated January 2026) arrives
    app.lambda_handler(load_event("autoscaler_schedule.json"), FakeContext())
    # THEN each worker's idle clock starts now, so the next tick cannot scale down at once
    assert isinstance(ports.memory, InMemoryStore)
    clocks = ports.memory.values["airflow-test-worker-etl"].idle_since
    assert set(clocks) == set(WORKERS)
    assert all(before <= since <= datetime.now(UTC) for since in clocks.values())
    assert services.calls == []


def test_on_the_sqs_broker_idle_workers_are_kept_with_the_reason_and_no_error(
    app: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the SQS broker (its URL secret holds sqs://), 3 etl workers idle for an hour, no demand
    monkeypatch.setenv("BROKER_TRANSPORT", "sqs")
    services = InMemoryWorkerServices({"airflow-test-worker-etl": ServiceCounts(3, 3)})
    ports = install_ports(app, monkeypatch, services, demand=NoDemand(), broker=EmptyBroker())

    class SqsUrlSecret:
        def read(self) -> str:
            return "sqs://"

    monkeypatch.setattr(app, "_secret", lambda secret_id: SqsUrlSecret())
    config = AutoscalerConfig.from_env()
    ports = replace(ports, control=app._SecretControl(config.broker_url_secret, config.broker_key_prefix))
    monkeypatch.setattr(app, "build_runtime", lambda: (config, ports))
    assert isinstance(ports.memory, InMemoryStore)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    ports.memory.values["airflow-test-worker-etl"] = ScaleMemory(dict.fromkeys(WORKERS, an_hour_ago))
    # WHEN the schedule fires
    result = app.lambda_handler(load_event("autoscaler_schedule.json"), FakeContext())
    # THEN every worker is kept, the decision names the missing remote control, no error counts
    assert services.calls == []
    decision = result["decisions"][0]
    assert (decision["action"], decision["from"], decision["to"]) == ("hold", 3, 3)
    assert "Celery remote control is unavailable on the SQS broker" in decision["reason"]
    assert result["errors"] == []
    assert emitted_metrics(capsys.readouterr().out)["ScalingErrors"] == [0]


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
@pytest.mark.parametrize(
    "event", [{"source": "aws.events", "detail-type": "Anything"}, {"hello": "world"}, [], None, "x"]
)
def test_unknown_or_non_object_events_are_refused_before_anything_runs(
    app: ModuleType, monkeypatch: pytest.MonkeyPatch, event: object
) -> None:
    services = InMemoryWorkerServices({"airflow-test-worker-etl": ServiceCounts(2, 2)})
    install_ports(app, monkeypatch, services)
    with pytest.raises(InvalidInputError):
        app.lambda_handler(event, FakeContext())
    assert services.calls == []


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_malformed_event_is_rejected_before_anything_runs(
    app: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = InMemoryWorkerServices({"airflow-test-worker-etl": ServiceCounts(0, 0)})
    install_ports(app, monkeypatch, services)
    event = {**load_event("autoscaler_dry_run.json"), "detail": {"dryRun": "yes"}}
    with pytest.raises(InvalidInputError, match=r"dryRun must be true or false"):
        app.lambda_handler(event, FakeContext())
    assert services.calls == []


def test_config_names_the_missing_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_control_plane.errors import ConfigError

    env = {k: v for k, v in ENV.items() if k != "CLUSTER_NAME"}
    with pytest.raises(ConfigError, match="CLUSTER_NAME"):
        AutoscalerConfig.from_env(env)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not valid JSON"),
        ("[]", "non-empty JSON list"),
        ('[{"queue": "a", "service": "s", "concurrency": 0, "max": 1}]', "'concurrency' must be >= 1"),
        (
            '[{"queue": "a", "service": "s", "concurrency": 1, "min": 3, "max": 1}]',
            "min .3. is greater than max",
        ),
        ('[{"queue": "a", "service": "s", "concurrency": 1, "max": 1, "idle": 5}]', "unknown field"),
        ('[{"queue": "a", "service": "s", "concurrency": "8", "max": 1}]', "must be an integer"),
        (
            '[{"queue": "a", "service": "s", "concurrency": 1, "max": 1},'
            ' {"queue": "a", "service": "t", "concurrency": 1, "max": 1}]',
            "listed twice",
        ),
        ('[{"service": "s", "concurrency": 1, "max": 1}]', "'queue' must be a non-empty string"),
    ],
)
def test_queue_map_errors_are_clear(text: str, message: str) -> None:
    from airflow_control_plane.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        parse_queue_map(text)


def test_events_files_exist_and_are_valid() -> None:
    for name in ("autoscaler_schedule.json", "autoscaler_dry_run.json"):
        assert (Path(REPO_ROOT) / "events" / name).exists()
        assert "time" in load_event(name)
