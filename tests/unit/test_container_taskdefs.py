"""The container harness reads the template's task definitions and secrets correctly, and the
image's health-check budget fits every task definition's health-check timeout."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, load_module
from tests.containers.taskdefs import (
    LocalBackends,
    SecretRef,
    TemplateError,
    container_specs,
    local_secret_values,
    resolve_secret,
)

pytestmark = pytest.mark.unit

PARAMETERS = {"AirflowImageUri": "airflow-ecs:test"}


def _entrypoint() -> Any:
    return load_module(REPO_ROOT / "airflow_image" / "entrypoint.py", "entrypoint_t")


def test_the_entrypoints_health_budget_is_below_every_task_definitions_timeout(
    translated: dict[str, Any],
) -> None:
    # GIVEN ECS kills a health check at its timeout and counts a failure
    budget = _entrypoint().HEALTHCHECK_TIMEOUT_S
    checked = [spec for spec in container_specs(translated, PARAMETERS) if spec.health is not None]
    assert checked
    # THEN the entrypoint gives up (and says why) before ECS kills it, in every task definition
    for spec in checked:
        assert spec.health is not None
        assert budget < spec.health.timeout, (spec.family, budget, spec.health.timeout)


def test_every_container_runs_the_image_with_a_role_and_a_cpu_share(translated: dict[str, Any]) -> None:
    specs = list(container_specs(translated, PARAMETERS))
    roles = {spec.command[0] for spec in specs}
    assert {"db-migrate", "create-user", "api-server", "scheduler", "dag-processor", "triggerer"} <= roles
    assert "celery-worker" in roles
    for spec in specs:
        assert spec.image == "airflow-ecs:test"
        assert 0 < spec.cpus <= 16
        for mount in spec.mounts:
            assert mount.efs_root is not None


def _template(secret_string: Any, value_from: Any) -> dict[str, Any]:
    return {
        "Parameters": {"Host": {"Type": "String", "Default": "db.example"}},
        "Resources": {
            "Creds": {
                "Type": "AWS::SecretsManager::Secret",
                "Properties": {
                    "GenerateSecretString": {
                        "SecretStringTemplate": '{"username": "airflow"}',
                        "GenerateStringKey": "password",
                        "PasswordLength": 8,
                    }
                },
            },
            "Url": {"Type": "AWS::SecretsManager::Secret", "Properties": {"SecretString": secret_string}},
            "Task": {
                "Type": "AWS::ECS::TaskDefinition",
                "Properties": {
                    "Cpu": 256,
                    "Memory": 512,
                    "ContainerDefinitions": [
                        {
                            "Name": "c",
                            "Image": "img",
                            "Secrets": [{"Name": "PASSWORD", "ValueFrom": value_from}],
                        }
                    ],
                },
            },
        },
    }


def test_a_json_key_secret_resolves_to_that_key_as_ecs_injects_it() -> None:
    # GIVEN a container secret in ECS's ARN form with a JSON key (arn...:secret:NAME:key::)
    template = _template("x", {"Fn::Sub": "${Creds}:password::"})
    (spec,) = container_specs(template)
    (ref,) = spec.secrets
    assert ref == SecretRef("PASSWORD", "Creds", "password")
    values = local_secret_values(template, LocalBackends({}), token=lambda n: "p" * n)
    # THEN the injected value is the key's value, not the JSON document
    assert resolve_secret(ref, values) == "pppppppp"
    assert json.loads(values["Creds"]) == {"username": "airflow", "password": "pppppppp"}


def test_a_missing_json_key_is_a_clear_error() -> None:
    template = _template("x", {"Fn::Sub": "${Creds}:passwd::"})
    (spec,) = container_specs(template)
    values = local_secret_values(template, LocalBackends({}), token=lambda n: "p" * n)
    with pytest.raises(TemplateError, match="no JSON key 'passwd'"):
        resolve_secret(spec.secrets[0], values)


def test_connection_urls_compose_dynamic_references_and_point_at_local_services() -> None:
    # GIVEN a URL composed from another secret and a cloud endpoint
    url = {
        "Fn::Sub": "postgresql+psycopg2://airflow:{{resolve:secretsmanager:${Creds}:SecretString:password}}"
        "@${Host}:5432/airflow"
    }
    template = _template(url, {"Ref": "Url"})
    local = "postgresql+psycopg2://postgres@127.0.0.1:5432/t"
    values = local_secret_values(
        template, LocalBackends({"postgresql+psycopg2": local}), token=lambda n: "p" * n
    )
    # THEN the local value is the local database of the same scheme
    assert values["Url"] == local
    # AND a scheme without a local service is refused rather than guessed
    with pytest.raises(TemplateError, match="no local backend"):
        local_secret_values(template, LocalBackends({}), token=lambda n: "p" * n)
