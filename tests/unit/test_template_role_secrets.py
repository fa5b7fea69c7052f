"""What each container holds, read from the translated template (plain CloudFormation, what
AWS deploys), against one allow-list per role: a worker runs DAG code and must hold nothing
that reaches the metadata database or signs Airflow's tokens and sessions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.static import rules

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_ROOT / "template.yaml"

# Written out here on purpose (not imported from the rules): a change to who holds what must
# change this table too.
ALLOWED: dict[str, set[str]] = {
    "api-server": {
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CELERY__RESULT_BACKEND",
    },
    "celery-worker": {"AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND"},
    # The results-only role's password only with CeleryBroker=sqs (a conditional entry, read
    # with both branches here; tests/unit/test_template_sqs_broker.py resolves it per mode).
    "db-migrate": {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW_READONLY_DB_PASSWORD",
        "AIRFLOW_CELERY_RESULTS_DB_PASSWORD",
    },
    "create-user": {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW_ADMIN_PASSWORD"},
    # Optional: Flower (the broker and its basic-auth pair), a task of the AwsEcsExecutor (none).
    "flower": {"AIRFLOW__CELERY__BROKER_URL", "AIRFLOW_FLOWER_USERNAME", "AIRFLOW_FLOWER_PASSWORD"},
    "ecs-task": set(),
}
for _core in ("scheduler", "dag-processor", "triggerer"):
    ALLOWED[_core] = ALLOWED["api-server"]
WORKER_FORBIDDEN = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW_ADMIN_PASSWORD",
}


def containers_by_role(translated: dict[str, Any]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for logical_id, resource in translated["Resources"].items():
        if resource["Type"] != "AWS::ECS::TaskDefinition":
            continue
        for container in resource["Properties"]["ContainerDefinitions"]:
            found.setdefault(rules._role(container), []).append((logical_id, container))
    return found


def secret_refs(container: dict[str, Any]) -> dict[str, Any]:
    return {s["Name"]: s["ValueFrom"] for s in rules.entries(container.get("Secrets"))}


def secret_id(value_from: Any) -> str:
    """The secret resource a ValueFrom names: !Ref S, or !Sub "${S}:json-key::"."""
    if "Ref" in value_from:
        return str(value_from["Ref"])
    text = value_from["Fn::Sub"]
    assert text.startswith("${"), value_from
    return text[2 : text.index("}")]


def test_every_container_holds_exactly_its_roles_secrets(translated: dict[str, Any]) -> None:
    # GIVEN every container of the translated template, grouped by the role it runs
    by_role = containers_by_role(translated)
    assert set(by_role) == set(ALLOWED)
    for role, containers in by_role.items():
        for logical_id, container in containers:
            # THEN its Secrets are exactly the role's allow-list
            assert set(secret_refs(container)) == ALLOWED[role], (logical_id, role)


def test_no_container_carries_a_secret_in_plain_environment(translated: dict[str, Any]) -> None:
    # GIVEN every container's plain Environment
    for role, containers in containers_by_role(translated).items():
        for logical_id, container in containers:
            names = {e["Name"] for e in container.get("Environment", [])}
            # THEN no secret-bearing name is there (it would bypass the allow-list), and a worker
            # has none of the names its entrypoint refuses
            assert not {n for n in names if rules.SECRET_LIKE_NAME.search(n)}, (logical_id, role)
            if role in ("celery-worker", "ecs-task", "flower"):
                assert not names & WORKER_FORBIDDEN, logical_id


def test_workers_result_backend_is_never_the_metadata_database(translated: dict[str, Any]) -> None:
    # GIVEN the secret a worker's AIRFLOW__CELERY__RESULT_BACKEND comes from
    resources = translated["Resources"]
    (_, worker), *_ = containers_by_role(translated)["celery-worker"]
    backend = secret_id(secret_refs(worker)["AIRFLOW__CELERY__RESULT_BACKEND"])
    condition, sqs, redis = resources[backend]["Properties"]["SecretString"]["Fn::If"]
    # THEN with Redis it is a TLS Redis URL built from the broker's token
    assert condition == "BrokerIsSqs"
    assert redis["Fn::Sub"].startswith("rediss://:{{resolve:secretsmanager:${BrokerAuthTokenSecret}")
    # AND with SQS the results-only database as its own role, never the metadata credentials
    assert sqs["Fn::Sub"].startswith(
        "db+postgresql://celery_results:{{resolve:secretsmanager:${ResultsDatabaseCredentialsSecret}"
    )
    assert sqs["Fn::Sub"].endswith("/celery_results?sslmode=require")
    for value in (sqs["Fn::Sub"], redis["Fn::Sub"]):
        assert "${DatabaseCredentialsSecret}" not in value
        assert "${MetadataDatabaseUrlSecret}" not in value


def test_the_execution_role_reads_only_secrets_some_container_holds(translated: dict[str, Any]) -> None:
    # GIVEN the secrets the ECS execution role may inject
    resources = translated["Resources"]
    held = {
        secret_id(ref)
        for containers in containers_by_role(translated).values()
        for _, c in containers
        for ref in secret_refs(c).values()
    }
    (policy,) = resources["TaskExecutionRole"]["Properties"]["Policies"]
    (inject,) = [s for s in policy["PolicyDocument"]["Statement"] if s.get("Sid") == "InjectAirflowSecrets"]
    # (a conditional secret, !If [Condition, !Ref S, NoValue], is readable when it exists)
    readable = {r["Ref"] if "Ref" in r else r["Fn::If"][1]["Ref"] for r in inject["Resource"]}
    # THEN it can read exactly those (nothing more)
    assert readable == held


def test_the_control_plane_readers_use_the_read_only_role(translated: dict[str, Any]) -> None:
    # GIVEN the two Lambdas that only read the metadata database
    resources = translated["Resources"]
    autoscaler = resources["AutoscalerFunction"]["Properties"]["Environment"]["Variables"]
    drain = resources["DrainCheckFunction"]["Properties"]["Environment"]["Variables"]
    # THEN they get the read-only role's secrets, never the master user's
    assert autoscaler["METADATA_DB_SECRET_ARN"] == {"Ref": "ReadOnlyDatabaseUrlSecret"}
    assert drain["DB_SECRET_ARN"] == {"Ref": "ReadOnlyDatabaseCredentialsSecret"}
    url = resources["ReadOnlyDatabaseUrlSecret"]["Properties"]["SecretString"]["Fn::Sub"]
    assert url.startswith(
        "postgresql://airflow_readonly:{{resolve:secretsmanager:${ReadOnlyDatabaseCredentialsSecret}"
    )
    for role in ("AutoscalerRole", "DrainCheckRole"):
        readable = {
            r["Ref"]
            for s in rules.role_statements(translated, role)
            if rules._grants(s, "secretsmanager:GetSecretValue")
            for r in rules._as_list(s["Resource"])
        }
        assert not readable & {"DatabaseCredentialsSecret", "MetadataDatabaseUrlSecret"}, role
    # AND db-migrate creates that role, as the same user name the secret holds
    (migrate,) = resources["MigrateTaskDefinition"]["Properties"]["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in migrate["Environment"]}
    assert env["AIRFLOW_READONLY_DB_USER"] == "airflow_readonly"
    template = resources["ReadOnlyDatabaseCredentialsSecret"]["Properties"]["GenerateSecretString"]
    assert template["SecretStringTemplate"] == '{"username": "airflow_readonly"}'
