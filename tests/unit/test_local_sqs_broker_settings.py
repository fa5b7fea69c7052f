"""The local runtime's SQS broker option: settings, the Airflow environment it adds, and the
explicit absence of Celery remote control on an SQS broker. Pure: no network."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_control_plane.errors import ConfigError
from airflow_control_plane.local.lease import default_database_name
from airflow_control_plane.local.paths import StatePaths
from airflow_control_plane.local.reset import plan_reset
from airflow_control_plane.local.runtime_state import RuntimeState
from airflow_control_plane.local.settings import LocalSettings
from airflow_control_plane.local.sqs_broker import SqsBroker
from airflow_control_plane.scaling.drain import (
    KombuWorkerControl,
    RemoteControlUnavailable,
    missing_remote_control,
)

pytestmark = pytest.mark.unit


def _settings(tmp_path: Path, **env: str) -> LocalSettings:
    return LocalSettings.from_env({"AFCTL_STATE_DIR": str(tmp_path / "state"), **env})


def test_redis_is_the_default_broker(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert settings.broker == "redis"
    assert settings.sqs is None


def test_sqs_broker_settings_with_a_per_state_folder_prefix(tmp_path: Path) -> None:
    # GIVEN AFCTL_BROKER=sqs and a local endpoint, no prefix
    settings = _settings(tmp_path, AFCTL_BROKER="sqs", AFCTL_SQS_ENDPOINT_URL="http://127.0.0.1:4566")
    # THEN the queues are prefixed after the state folder's own database name
    assert settings.sqs == SqsBroker(
        region="us-east-1",
        queue_name_prefix=f"{default_database_name(settings.paths.root)}-",
        endpoint_url="http://127.0.0.1:4566",
    )
    # AND the region follows the AWS variables unless AFCTL_SQS_REGION says otherwise
    assert _settings(tmp_path, AFCTL_BROKER="sqs", AWS_REGION="eu-west-1").sqs.region == "eu-west-1"  # type: ignore[union-attr]
    chosen = _settings(tmp_path, AFCTL_BROKER="sqs", AWS_REGION="eu-west-1", AFCTL_SQS_REGION="eu-north-1")
    assert chosen.sqs is not None
    assert chosen.sqs.region == "eu-north-1"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AFCTL_BROKER": "rabbitmq"}, "AFCTL_BROKER must be one of"),
        ({"AFCTL_BROKER": "sqs", "AFCTL_SQS_ENDPOINT_URL": "127.0.0.1:4566"}, "AFCTL_SQS_ENDPOINT_URL"),
        ({"AFCTL_BROKER": "sqs", "AFCTL_SQS_ENDPOINT_URL": "http://h:1/path"}, "AFCTL_SQS_ENDPOINT_URL"),
        ({"AFCTL_BROKER": "sqs", "AFCTL_SQS_QUEUE_PREFIX": "my.env/"}, "AFCTL_SQS_QUEUE_PREFIX"),
    ],
)
def test_malformed_broker_settings_fail_loudly(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _settings(tmp_path, **env)


def test_the_broker_url_carries_no_credentials_and_kombu_picks_the_scheme() -> None:
    local = SqsBroker("us-east-1", "env-", "http://127.0.0.1:4566")
    assert local.broker_url == "sqs://127.0.0.1:4566/"
    assert local.transport_options["is_secure"] is False
    assert SqsBroker("us-east-1", "env-", "https://sqs.example.test").transport_options["is_secure"] is True
    aws = SqsBroker("eu-west-1", "env-")
    assert aws.broker_url == "sqs://"
    assert "is_secure" not in aws.transport_options


def test_the_airflow_environment_has_the_templates_transport_options() -> None:
    # GIVEN the SQS broker of environment "dev" (template.yaml: prefix "<env>-", 12 h visibility)
    env = SqsBroker("eu-west-1", "dev-", "http://127.0.0.1:4566").airflow_env()
    # THEN every Celery component gets the options template.yaml gives the containers
    assert env == {
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__REGION": "eu-west-1",
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__QUEUE_NAME_PREFIX": "dev-",
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "43200",
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__IS_SECURE": "False",
    }


def test_the_recorded_broker_round_trips() -> None:
    broker = SqsBroker("us-east-1", "env-", "http://127.0.0.1:4566")
    assert SqsBroker.from_record(broker.to_record()) == broker
    with pytest.raises(ConfigError, match="run `afctl up` again"):
        SqsBroker.from_record({"region": "us-east-1"})


def test_worker_control_on_sqs_says_remote_control_is_unavailable_before_any_call() -> None:
    # GIVEN the Celery control on an SQS broker whose endpoint does not exist (port 9 discards)
    options = {"region": "us-east-1", "is_secure": False}
    control = KombuWorkerControl("sqs://127.0.0.1:9/", transport_options=options, timeout_s=30)
    # THEN every operation refuses with the reason at once, without contacting the broker
    with pytest.raises(RemoteControlUnavailable, match="unavailable on the SQS broker"):
        control.busy("default")
    with pytest.raises(RemoteControlUnavailable, match="unavailable on the SQS broker"):
        control.cancel("default", ["worker-1@h"])
    with pytest.raises(RemoteControlUnavailable, match="unavailable on the SQS broker"):
        control.resume("default", ["worker-1@h"])


def test_reset_names_the_sqs_queues_and_keeps_them(tmp_path: Path) -> None:
    # GIVEN a state folder whose environment ran on SQS (no database or Redis recorded)
    paths = StatePaths(tmp_path / "state")
    paths.ensure()
    broker = SqsBroker("us-east-1", "dev-", "http://127.0.0.1:4566")
    RuntimeState(broker="sqs", sqs=broker.to_record()).save(paths)
    # WHEN a reset is planned
    plan = plan_reset(paths)
    # THEN it deletes nothing on SQS and says so
    kept = "SQS queues dev-* at http://127.0.0.1:4566: not deleted (delete or purge them yourself)"
    assert f"  keep: {kept}" in plan.describe()


def test_only_a_broker_with_fanout_exchanges_has_celery_remote_control() -> None:
    # Celery's own test, made without contacting either broker
    assert missing_remote_control("redis://127.0.0.1:9/0") == ""
    assert "unavailable on the SQS broker" in missing_remote_control("sqs://", {"region": "us-east-1"})
