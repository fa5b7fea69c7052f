"""Every Lambda handler x malformed events, as properties (hypothesis).

The classes of bad input an audit fuzzed by hand, generated here on every run: events that
are not objects (null, lists, strings, numbers, booleans), arbitrary JSON objects, and the
sample events with one field replaced by an arbitrary JSON value or removed. For every
handler and every such event:

- it returns, or raises a typed ``ControlPlaneError`` (never AttributeError, TypeError,
  KeyError...), and a non-object event is always an ``InvalidInputError``;
- the autoscaler never scales down workers that have been idle for only a minute, whatever
  the event's ``time``, ``source`` or ``detail``;
- the webhook never hands a sync off for a request that is not signed.

Adapters are fakes that record what the handler would do; nothing leaves the process.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_control_plane.bringup.drain import ActiveTaskInstances
from airflow_control_plane.dagsync.service import SyncResult
from airflow_control_plane.dagsync.webhook import InMemoryDeliveryStore
from airflow_control_plane.errors import ControlPlaneError, InvalidInputError
from airflow_control_plane.health import NotHealthyYet
from airflow_control_plane.scaling.config import AutoscalerConfig
from airflow_control_plane.scaling.drain import InMemoryWorkerControl
from airflow_control_plane.scaling.ecs import InMemoryWorkerServices, ServiceCounts
from airflow_control_plane.scaling.events import RecordingPublisher
from airflow_control_plane.scaling.hibernation import FixedFlag
from airflow_control_plane.scaling.memory import InMemoryStore
from airflow_control_plane.scaling.policy import ScaleMemory
from airflow_control_plane.scaling.service import ScalingPorts
from tests.conftest import function_app, load_event
from tests.statemachines.health_server import HEALTHY
from tests.unit.test_scaling_handler import EmptyBroker, NoDemand

pytestmark = pytest.mark.unit

# Per handler and run; `make bench-fuzz` runs the audit's 2,200 per handler (FUZZ_EXAMPLES).
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
SAMPLES = {
    "autoscaler": ["autoscaler_schedule.json", "autoscaler_dry_run.json"],
    "bringup_validate": ["bringup_validate.json", "hibernate_validate.json"],
    "drain_check": ["drain_check.json"],
    "health_gate": ["health_gate.json"],
    "dag_sync": ["dag_sync_schedule.json"],
    "github_webhook": ["github_push.json", "github_ping.json"],
    "fernet_key": [],
}
FERNET_CREATE = {
    "RequestType": "Create",
    "ResponseURL": "https://cloudformation-custom-resource-response.example/x",
    "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/s/1",
    "RequestId": "r-1",
    "LogicalResourceId": "FernetKeyValue",
    "ResourceType": "Custom::FernetKey",
    "ResourceProperties": {"SecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:f"},
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
# Event times from the distant past to the far future (the autoscaler trusted them once).
timestamps = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2200, 1, 1)).map(
    lambda moment: moment.isoformat() + "Z"
)
non_objects = st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.lists(json_values)


@st.composite
def mutated(draw: st.DrawFn, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """A sample event with one top-level or detail field replaced by junk, or removed."""
    event = dict(draw(st.sampled_from(samples)))
    keys = [*sorted(event), "time", "source", "detail-type", "detail", "headers", "body"]
    key = draw(st.sampled_from(keys))
    if draw(st.booleans()):
        event.pop(key, None)
    else:
        event[key] = draw(timestamps if key == "time" and draw(st.booleans()) else json_values)
    if isinstance(event.get("detail"), dict) and draw(st.booleans()):
        event["detail"] = {**event["detail"], draw(st.sampled_from(["dryRun", "queue"])): draw(json_values)}
    return event


@st.composite
def retimed(draw: st.DrawFn, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """A well-formed event with any time, and a real or forged source, detail-type and detail."""
    event = dict(draw(st.sampled_from(samples)))
    event["time"] = draw(timestamps)
    event["source"] = draw(
        st.sampled_from(["aws.events", "airflow.scheduler", "airflow.control-plane.operator", "x"])
    )
    event["detail-type"] = draw(
        st.sampled_from(["Scheduled Event", "Worker wake-up", "Autoscaler dry run", "x"])
    )
    event["detail"] = draw(st.sampled_from([{}, {"dryRun": True}, {"dryRun": False}, {"queue": "etl"}]))
    return event


def events_for(handler: str) -> st.SearchStrategy[object]:
    samples = [load_event(name) for name in SAMPLES[handler]] or [FERNET_CREATE]
    objects = st.dictionaries(st.text(max_size=12), json_values, max_size=5)
    return non_objects | objects | mutated(samples) | retimed(samples)


@dataclass
class Context:
    function_name: str = "fuzz"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:fuzz"
    aws_request_id: str = "fuzz-1"


@cache
def handler(name: str) -> ModuleType:
    """Each handler module once, loaded after the powertools settings are in the environment."""
    return load_handler(name)


def load_handler(name: str) -> ModuleType:
    return function_app(name, f"fuzz_{name}_app")


def call(app: ModuleType, event: object) -> BaseException | None:
    """Run the handler; return the exception it raised (None when it returned)."""
    try:
        app.lambda_handler(event, Context())
    except Exception as exc:  # the property is about which exceptions escape
        return exc
    return None


def assert_typed(event: object, raised: BaseException | None) -> None:
    if raised is None:
        assert isinstance(event, dict), f"a non-object event was accepted: {event!r}"
        return
    assert isinstance(raised, ControlPlaneError), f"{type(raised).__name__}: {raised} for {event!r}"
    if not isinstance(event, dict):
        assert isinstance(raised, InvalidInputError), f"{type(raised).__name__} for {event!r}"


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(autouse=True)
def _lambda_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_METRICS_NAMESPACE": "AirflowControlPlaneFuzz",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "fuzz",
        "AWS_SECRET_ACCESS_KEY": "fuzz",
    }.items():
        monkeypatch.setenv(name, value)


# --- autoscaler ----------------------------------------------------------------------------------


@pytest.fixture
def autoscaler(monkeypatch: pytest.MonkeyPatch) -> Callable[[], tuple[ModuleType, InMemoryWorkerServices]]:
    for name, value in {
        "ENVIRONMENT_NAME": "airflow-fuzz",
        "CLUSTER_NAME": "airflow-fuzz",
        "SCHEDULER_SERVICE": "airflow-fuzz-scheduler",
        "WORKER_QUEUES": '[{"queue": "etl", "service": "w-etl", "concurrency": 8, "max": 10}]',
        "METADATA_DB_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db",
        "BROKER_URL_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:broker",
    }.items():
        monkeypatch.setenv(name, value)
    app = load_handler("autoscaler")

    def fresh() -> tuple[ModuleType, InMemoryWorkerServices]:
        # 3 workers, no demand, each idle since just now (well inside the start-up break-even):
        # nothing may scale them down yet, whatever time or source the event claims
        services = InMemoryWorkerServices({"w-etl": ServiceCounts(3, 3)})
        workers = [f"worker-{i}@ip-10-0-1-{i}" for i in range(3)]
        memory = InMemoryStore()
        memory.values["w-etl"] = ScaleMemory(dict.fromkeys(workers, datetime.now(UTC)))
        ports = ScalingPorts(
            NoDemand(),
            EmptyBroker(),
            services,
            memory,
            FixedFlag(False),
            RecordingPublisher(),
            InMemoryWorkerControl(dict.fromkeys(workers, 0)),
        )
        monkeypatch.setattr(app, "build_runtime", lambda: (AutoscalerConfig.from_env(), ports))
        return app, services

    return fresh


@FUZZ
@given(event=events_for("autoscaler"))
def test_autoscaler_never_scales_down_on_a_malformed_or_forged_event(
    autoscaler: Callable[[], tuple[ModuleType, InMemoryWorkerServices]], event: object
) -> None:
    app, services = autoscaler()
    assert_typed(event, call(app, event))
    assert all(count >= 3 for _, count in services.calls), (event, services.calls)


# --- bring-up validation, drain check, health gate -------------------------------------------------


@FUZZ
@given(event=events_for("bringup_validate"))
def test_bringup_validate_raises_only_typed_errors(event: object) -> None:
    assert_typed(event, call(handler("bringup_validate"), event))


class FixedCounter:
    def count_active(self) -> ActiveTaskInstances:
        return ActiveTaskInstances(1, 0)


class StaticSource:
    def fetch(self) -> object:
        return HEALTHY


@FUZZ
@given(event=events_for("drain_check"))
def test_drain_check_raises_only_typed_errors(monkeypatch: pytest.MonkeyPatch, event: object) -> None:
    monkeypatch.setenv("DB_HOST", "db.internal")
    monkeypatch.setenv("DB_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:db")
    monkeypatch.setattr(handler("drain_check"), "build_counter", lambda config: FixedCounter())
    assert_typed(event, call(handler("drain_check"), event))


@FUZZ
@given(event=events_for("health_gate"))
def test_health_gate_raises_only_typed_errors(monkeypatch: pytest.MonkeyPatch, event: object) -> None:
    monkeypatch.setenv("API_SERVER_URL", "http://api-server.internal:8080")
    monkeypatch.setattr(handler("health_gate"), "build_source", lambda config: StaticSource())
    raised = call(handler("health_gate"), event)
    assert not isinstance(raised, NotHealthyYet)  # the source is healthy: only the event can fail
    assert_typed(event, raised)


# --- DAG sync, webhook, Fernet key ---------------------------------------------------------------


@FUZZ
@given(event=events_for("dag_sync"))
def test_dag_sync_raises_only_typed_errors(
    monkeypatch: pytest.MonkeyPatch, event: object, tmp_path: Any
) -> None:
    monkeypatch.setenv("DAG_REPO_URL", "https://github.com/example-org/dags.git")
    monkeypatch.setenv("DAGS_TARGET_DIR", str(tmp_path))
    monkeypatch.setattr(handler("dag_sync"), "build_source", lambda config, secret: object())
    monkeypatch.setattr(handler("dag_sync"), "_events_client", lambda: object())
    monkeypatch.setattr(
        handler("dag_sync"), "sync_once", lambda *a: SyncResult(action="noop", sha="a" * 40, reason="fuzz")
    )
    assert_typed(event, call(handler("dag_sync"), event))


class RecordingLambda:
    def __init__(self) -> None:
        self.invocations: list[dict[str, Any]] = []

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        self.invocations.append(kwargs)
        return {"StatusCode": 202}


@FUZZ
@given(event=events_for("github_webhook"))
def test_the_webhook_never_hands_off_an_unsigned_request(
    monkeypatch: pytest.MonkeyPatch, event: object
) -> None:
    for name, value in {
        "WEBHOOK_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:hook",
        "DAG_REPO_URL": "https://github.com/example-org/dags.git",
        "DAG_REPO_REF": "main",
        "DAG_SYNC_FUNCTION_NAME": "dag-sync",
        "DELIVERIES_TABLE": "deliveries",
    }.items():
        monkeypatch.setenv(name, value)
    # A secret the sample events are NOT signed with: no fuzzed event carries a valid signature.
    handler("github_webhook")._secret_cache["arn:aws:secretsmanager:us-east-1:123456789012:secret:hook"] = (
        b"fuzz-only-secret"
    )
    lambda_client = RecordingLambda()
    monkeypatch.setattr(handler("github_webhook"), "_lambda_client", lambda: lambda_client)
    monkeypatch.setattr(
        handler("github_webhook"), "DynamoDbDeliveryStore", lambda *a: InMemoryDeliveryStore()
    )
    raised = call(handler("github_webhook"), event)
    assert_typed(event, raised)
    assert lambda_client.invocations == []


@FUZZ
@given(event=events_for("fernet_key"))
def test_fernet_key_raises_only_typed_errors(monkeypatch: pytest.MonkeyPatch, event: object) -> None:
    class Store:
        def read(self, arn: str) -> str:
            return "unset"

        def write(self, arn: str, value: str) -> None:
            pass

    monkeypatch.setattr(handler("fernet_key"), "build_store", lambda: Store())
    monkeypatch.setattr(handler("fernet_key"), "send_response", lambda url, body: 200)
    assert_typed(event, call(handler("fernet_key"), event))
