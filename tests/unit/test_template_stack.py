"""Properties of template.yaml that the issue asks for and no tool checks: one test each."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from airflow_control_plane import worker_queues
from tests.static import rules

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_ROOT / "template.yaml"
ROLES = (
    "api-server",
    "scheduler",
    "dag-processor",
    "triggerer",
    "celery-worker",
    "db-migrate",
    "create-user",
    "flower",  # FlowerEnabled
    "ecs-task",  # EcsExecutorEnabled: the entry point ends in the role (the executor overrides the command)
)
CELERY_AND_ECS = "CeleryExecutor,airflow.providers.amazon.aws.executors.ecs.ecs_executor.AwsEcsExecutor"


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return dict(rules.resources(template, kind))


def test_layer_is_kept_as_the_foundation_defined_it(template: dict[str, Any]) -> None:
    # GIVEN the control-plane layer THEN its content and build method are unchanged
    layer = template["Resources"]["ControlPlaneLayer"]
    assert layer["Properties"]["ContentUri"] == "functions/common/"
    assert layer["Metadata"]["BuildMethod"] == "python3.11"


def test_one_task_definition_per_role_from_the_one_image(template: dict[str, Any]) -> None:
    # GIVEN every Airflow container WHEN we read the role it runs (its command's first word)
    commands = [rules._role(c) for _, _, c in rules.airflow_containers(template)]
    # THEN each role has a task definition, and every one uses the AirflowImageUri parameter
    assert set(commands) == set(ROLES)
    assert all(c["Image"] == {"Ref": "AirflowImageUri"} for _, _, c in rules.containers(template))


def test_airflow_settings_every_component_needs(template: dict[str, Any]) -> None:
    for logical_id, _, container in rules.airflow_containers(template):
        if rules._role(container) == "flower":
            continue  # Flower runs no Airflow component: it reads the broker only
        env = {e["Name"]: e["Value"] for e in container["Environment"]}
        # THEN Celery (plus the AwsEcsExecutor beside it where EcsExecutorEnabled asks), FAB, the
        # internal execution API, the read-only DAGs and S3 logs are set
        assert env["AIRFLOW__CORE__EXECUTOR"] in (
            "CeleryExecutor",
            CELERY_AND_ECS,
            {"Fn::If": ["EcsExecutorOn", CELERY_AND_ECS, "CeleryExecutor"]},
        ), logical_id
        assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("FabAuthManager"), logical_id
        url = env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]["Fn::Sub"]
        assert re.fullmatch(
            r"http://api-server\.\$\{EnvironmentName\}\.airflow\.internal:8080/execution/", url
        )
        assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/airflow/dags/current", logical_id
        assert env["AIRFLOW__LOGGING__REMOTE_LOGGING"] == "True", logical_id
        assert env["AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER"] == {"Fn::Sub": "s3://${TaskLogsBucket}/logs"}
        assert env["PYTHONDONTWRITEBYTECODE"] == "1", logical_id


def test_internal_name_matches_the_discovery_service(template: dict[str, Any]) -> None:
    # GIVEN the Cloud Map namespace and service that the execution API URL relies on
    namespace = template["Resources"]["ServiceNamespace"]["Properties"]["Name"]
    service = template["Resources"]["ApiServerDiscoveryService"]["Properties"]["Name"]
    api = template["Resources"]["ApiServerService"]["Properties"]
    # THEN the URL's host is <service>.<namespace> and the api-server service registers there
    assert namespace == {"Fn::Sub": "${EnvironmentName}.airflow.internal"}
    assert service == "api-server"
    assert api["ServiceRegistries"][0]["RegistryArn"] == {"Fn::GetAtt": ["ApiServerDiscoveryService", "Arn"]}


def test_services_start_hibernated_and_workers_use_their_capacity_provider(template: dict[str, Any]) -> None:
    services = _resources(template, "AWS::ECS::Service")
    # THEN no service count is written in the template (0 on create, kept on update: see
    # test_template_deploy.py and the moto stack test)
    assert all("ServiceCounts" in json.dumps(s["Properties"]["DesiredCount"]) for s in services.values())
    # AND each worker queue's service uses the capacity provider worker_queues.json gives it
    for queue in worker_queues.load_queues(REPO_ROOT / "worker_queues.json"):
        strategy = services[queue.service_id]["Properties"]["CapacityProviderStrategy"][0]
        assert strategy["CapacityProvider"] == queue.capacity_provider
    cluster = template["Resources"]["Cluster"]["Properties"]
    assert cluster["CapacityProviders"] == ["FARGATE", "FARGATE_SPOT"]


def test_secrets_are_generated_never_given(template: dict[str, Any]) -> None:
    # GIVEN every secret of the stack (the Git token is the operator's own, by ARN)
    secrets = _resources(template, "AWS::SecretsManager::Secret")
    parameters = {name.lower() for name in template["Parameters"]}
    # THEN no parameter carries a secret value, and every secret is generated or composed
    assert not any(w in p for p in parameters for w in ("password", "fernet", "jwt", "authtoken"))
    for logical_id, secret in secrets.items():
        p = secret["Properties"]
        assert (
            "GenerateSecretString" in p
            or "Fn::Sub" in json.dumps(p.get("SecretString"))
            or (logical_id == "FernetKeySecret")
        ), logical_id
    fernet = template["Resources"]["FernetKeyValue"]["Properties"]
    assert fernet["SecretArn"] == {"Ref": "FernetKeySecret"}


def test_production_protects_the_database(template: dict[str, Any]) -> None:
    db = template["Resources"]["Database"]
    assert db["DeletionPolicy"] == "Snapshot"
    assert db["Properties"]["DeletionProtection"] == {"Fn::If": ["IsProduction", True, False]}
    assert db["Properties"]["BackupRetentionPeriod"] == {"Fn::If": ["IsProduction", 14, 7]}
    assert template["Resources"]["DatabaseParameterGroup"]["Properties"]["Parameters"]["rds.force_ssl"] == "1"


def test_broker_url_uses_tls(template: dict[str, Any]) -> None:
    # the Redis branch (CeleryBroker=redis); the sqs:// branch is HTTPS to SQS by default
    condition, sqs, redis = template["Resources"]["BrokerUrlSecret"]["Properties"]["SecretString"]["Fn::If"]
    assert (condition, sqs) == ("BrokerIsSqs", "sqs://")
    url = redis["Fn::Sub"]
    assert url.startswith("rediss://:")
    assert "ssl_cert_reqs=required" in url
    db_url = template["Resources"]["MetadataDatabaseUrlSecret"]["Properties"]["SecretString"]["Fn::Sub"]
    assert db_url.endswith("sslmode=require")


def test_load_balancer_drops_invalid_headers_and_uses_tls12(template: dict[str, Any]) -> None:
    attributes = {
        a["Key"]: a["Value"]
        for a in template["Resources"]["LoadBalancer"]["Properties"]["LoadBalancerAttributes"]
    }
    assert attributes["routing.http.drop_invalid_header_fields.enabled"] == "true"
    https = template["Resources"]["HttpsListener"]
    assert https["Condition"] == "HasCertificate"
    assert https["Properties"]["SslPolicy"].startswith("ELBSecurityPolicy-TLS13-1-2")


def test_schedules_are_created_disabled(translated: dict[str, Any]) -> None:
    # GIVEN the translated template with default parameters
    rules_ = [r for r in translated["Resources"].values() if r["Type"] == "AWS::Events::Rule"]
    schedules = [r for r in translated["Resources"].values() if r["Type"] == "AWS::Scheduler::Schedule"]
    # THEN every schedule and rule-based schedule is DISABLED until SchedulesEnabled is true
    scheduled_rules = [r for r in rules_ if "ScheduleExpression" in r["Properties"]]
    assert len(scheduled_rules) == 2
    assert len(schedules) == 2
    for resource in scheduled_rules + schedules:
        assert resource["Properties"]["State"] == {"Fn::If": ["SchedulesOn", "ENABLED", "DISABLED"]}
    # AND each has a retry policy and a dead-letter queue
    for resource in scheduled_rules:
        target = resource["Properties"]["Targets"][0]
        assert "RetryPolicy" in target
        assert "DeadLetterConfig" in target
    for resource in schedules:
        target = resource["Properties"]["Target"]
        assert "RetryPolicy" in target
        assert "DeadLetterConfig" in target


def test_state_machines_log_without_execution_data_and_trace(translated: dict[str, Any]) -> None:
    machines = [
        r for r in translated["Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine"
    ]
    assert len(machines) == 2
    for machine in machines:
        logging = machine["Properties"]["LoggingConfiguration"]
        assert logging["IncludeExecutionData"] is False
        assert logging["Level"] == "ALL"
        assert machine["Properties"]["TracingConfiguration"] == {"Enabled": True}
        # AND the definition is a plain string (so cfn-lint validates the ASL)
        assert json.loads(machine["Properties"]["DefinitionString"])["QueryLanguage"] == "JSONata"


def test_alarms_cover_what_the_issue_lists(template: dict[str, Any]) -> None:
    alarms = json.dumps(_resources(template, "AWS::CloudWatch::Alarm"))
    for metric in (
        "CPUUtilization",
        "FreeStorageSpace",
        "PercentIOLimit",
        "HTTPCode_ELB_5XX_Count",
        "ScalingErrors",
    ):
        assert metric in alarms, metric
    assert '"FunctionName", "Value": {"Ref": "DagSyncFunction"}' in alarms
    for alarm in _resources(template, "AWS::CloudWatch::Alarm").values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "NotificationsTopic"}]


def test_dashboard_body_is_json(template: dict[str, Any]) -> None:
    body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0]
    widgets = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))["widgets"]
    titles = " | ".join(w["properties"]["title"] for w in widgets)
    for topic in ("Services", "Workers", "Queue depth", "DAG sync", "Bring-up and hibernate"):
        assert topic in titles, topic


def test_every_skip_has_a_written_reason(template: dict[str, Any]) -> None:
    skips = [
        (logical_id, skip)
        for logical_id, resource in template["Resources"].items()
        for skip in ((resource.get("Metadata") or {}).get("checkov") or {}).get("skip", [])
    ]
    assert skips
    for logical_id, skip in skips:
        assert len(str(skip.get("comment", "")).strip()) >= 30, (logical_id, skip.get("id"))


def test_one_off_jobs_task_definitions_fit_the_bring_up(template: dict[str, Any]) -> None:
    # GIVEN what the bring-up state machine is told about its two one-off task definitions
    subs = template["Resources"]["BringUpStateMachine"]["Properties"]["DefinitionSubstitutions"]
    role = json.dumps(template["Resources"]["StateMachineRole"])
    secrets_by_job = {}
    for job in ("Migrate", "CreateUser"):
        task_id = subs[f"{job}TaskDefinitionArn"]["Ref"]
        containers = template["Resources"][task_id]["Properties"]["ContainerDefinitions"]
        # THEN the container each step overrides exists in its task definition
        assert [c["Name"] for c in containers] == [subs[f"{job}ContainerName"]]
        secrets_by_job[job] = {s["Name"] for s in rules.entries(containers[0].get("Secrets"))}
        # AND the state machine role may run that family
        family = template["Resources"][task_id]["Properties"]["Family"]["Fn::Sub"]
        assert f"task-definition/{family}:*" in role
    # AND only create-user receives the admin password; the migration never has it
    assert "AIRFLOW_ADMIN_PASSWORD" in secrets_by_job["CreateUser"]
    assert "AIRFLOW_ADMIN_PASSWORD" not in secrets_by_job["Migrate"]


def test_api_server_waits_for_every_listener(template: dict[str, Any]) -> None:
    # GIVEN the api-server service, whose target group must be attached before it is created
    service = template["Resources"]["ApiServerService"]
    ready = template["Resources"][service["DependsOn"]]["Metadata"]
    # THEN it waits for the HTTP listener and, with a certificate, the HTTPS one
    assert ready["HttpListener"] == {"Ref": "HttpListener"}
    assert ready["HttpsListener"] == {"Fn::If": ["HasCertificate", {"Ref": "HttpsListener"}, ""]}
