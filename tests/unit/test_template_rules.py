"""The template rules (tests/static/rules.py) over template.yaml, and over the broken fixture.

Each rule must hold for template.yaml and must fire on tests/fixtures/broken_template.yaml, so
a rule that silently stopped checking anything would fail here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.static import rules
from tests.static.tools import load_template

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_ROOT / "template.yaml"
BROKEN = REPO_ROOT / "tests" / "fixtures" / "broken_template.yaml"


@pytest.fixture(scope="module")
def broken() -> dict[str, Any]:
    return load_template(BROKEN)


@pytest.mark.parametrize("rule", rules.RULES, ids=lambda rule: rule.__name__)
def test_rule_holds_for_the_template(rule: rules.Rule, template: dict[str, Any]) -> None:
    # GIVEN template.yaml as parsed by cfn-lint's decoder
    # WHEN the rule runs
    violations = rule(template, TEMPLATE.parent)
    # THEN it finds nothing
    assert violations == []


@pytest.mark.parametrize("rule", rules.RULES, ids=lambda rule: rule.__name__)
def test_rule_rejects_the_broken_fixture(rule: rules.Rule, broken: dict[str, Any]) -> None:
    # GIVEN the deliberately broken template
    # WHEN the rule runs
    violations = rule(broken, BROKEN.parent)
    # THEN it reports at least one violation, so the rule is known to be active
    assert violations, f"{rule.__name__} accepted tests/fixtures/broken_template.yaml"


def test_broken_fixture_findings_name_the_planted_faults(broken: dict[str, Any]) -> None:
    # GIVEN the broken fixture WHEN every rule runs
    found = "\n".join(rules.all_violations(broken, BROKEN.parent))
    # THEN the specific faults planted there are the ones reported
    for expected in (
        "AIRFLOW__CORE__FERNET_KEY looks secret",
        "AIRFLOW__API__SECRET_KEY comes from different secrets",
        "(api-server): Secrets has ['AIRFLOW_ADMIN_PASSWORD'], which this role must not hold",
        "(celery-worker): Secrets has ['AIRFLOW__API__SECRET_KEY'], which this role must not hold",
        "the execution role is also the task role",
        "EFS mount /opt/airflow/dags not ReadOnly",
        "SharedRole: an ECS role may write to EFS",
        "Database: RDS storage not encrypted",
        "Broker: Redis TransitEncryptionEnabled is not true",
        "Dags: EFS not encrypted",
        "LogsBucket: S3 bucket without default encryption",
        "broken_function/app.py defines no lambda_handler()",
        "uses ${...} with no DefinitionSubstitutions: ['Missing']",
        "DefinitionSubstitutions not used by broken.asl.json: ['NobodyUsesThis']",
        "the template sets ['VARIABLE_THE_CODE_NEVER_READS'], the code never reads them",
        "declare no option [core] no_such_option",
        "workers need StopTimeout 120",
        "AvailabilityZoneRebalancing DISABLED",
        "AssignPublicIp must be DISABLED",
        "Listener: no rule answers 403 on /execution/*",
        "ecs:RunTask must name our task definition families",
        'ecs:UpdateService beyond the worker services: ["*"]',
        "secretsmanager:GetSecretValue on every secret",
    ):
        assert expected in found, expected


def test_lambda_env_reads_follow_the_control_plane_imports() -> None:
    # GIVEN the autoscaler handler, whose settings live in airflow_control_plane.scaling.config
    handler = REPO_ROOT / "functions" / "autoscaler" / "app.py"
    # WHEN its environment reads are collected through its imports
    reads = rules.code_env.lambda_env_reads(handler, rules.PACKAGE_ROOT)
    # THEN the config module's required and optional variables are found
    assert {"CLUSTER_NAME", "WORKER_QUEUES", "METADATA_DB_SECRET_ARN"} <= reads.required
    assert "DRY_RUN" in reads.optional


def test_every_function_sets_exactly_what_its_code_reads(template: dict[str, Any]) -> None:
    # GIVEN every Lambda of the template
    checked = []
    for logical_id, resource in rules.serverless_functions(template):
        handler = rules._handler_file(TEMPLATE.parent, resource)
        assert handler is not None, logical_id
        reads = rules.code_env.lambda_env_reads(handler[0], rules.PACKAGE_ROOT)
        given = set(rules.function_env(template, resource))
        # THEN every required variable is set and every set variable is read
        assert reads.required <= given, logical_id
        assert {n for n in given if not n.startswith("POWERTOOLS_")} <= reads.all, logical_id
        checked.append(logical_id)
    assert len(checked) >= 7  # six control-plane Lambdas and the Fernet key resource


def test_secret_like_value_pattern() -> None:
    # GIVEN values that carry credentials and values that do not
    # THEN only the credential-bearing ones match
    assert rules.SECRET_LIKE_VALUE.search("postgresql://airflow:pw@db:5432/airflow")
    assert rules.SECRET_LIKE_VALUE.search("{{resolve:secretsmanager:x:SecretString:password}}")
    assert not rules.SECRET_LIKE_VALUE.search("http://api-server.env.airflow.internal:8080/execution/")
    assert not rules.SECRET_LIKE_VALUE.search("s3://bucket/logs")
