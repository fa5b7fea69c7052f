"""The SQS broker option of template.yaml (CeleryBroker=sqs), for a five-queue stack."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from airflow_control_plane import worker_queues
from tests.conftest import load_module
from tests.containers.taskdefs import _SUB_VAR, SECRET_ARN_PREFIX, ContainerSpec, Resolver, container_specs
from tests.static.tools import PSEUDO_PARAMETERS, load_template, translate

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
NAMES = ["default", "reports", "heavy", "ml", "etl-nightly"]
SQS = {"CeleryBroker": "sqs", "EnvironmentName": "airflow-dev"}
REDIS = {"CeleryBroker": "redis", "EnvironmentName": "airflow-dev"}
# Every optional container on, so every Celery container is counted.
ALL_ON = {"FlowerEnabled": "true", "EcsExecutorEnabled": "true", "AirflowImageUri": "airflow:test"}
ELASTICACHE_PARTS = {"Broker", "BrokerSubnetGroup", "RedisSecurityGroup", "BrokerAuthTokenSecret"}
SQS_PARTS = {"ResultsDatabaseCredentialsSecret", "WorkerResultsDatabaseIngress"}
ep = load_module(REPO_ROOT / "airflow_image" / "entrypoint.py", "airflow_image_entrypoint", reuse=True)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    queues = worker_queues.parse_queues(json.dumps({"queues": [{"name": n} for n in NAMES]}))
    path = tmp_path_factory.mktemp("sqs") / "template.yaml"
    path.write_text(worker_queues.render((REPO_ROOT / "template.yaml").read_text(), queues))
    return load_template(path)


@pytest.fixture(scope="module")
def translated(template: dict[str, Any]) -> dict[str, Any]:
    """The five-queue template as CloudFormation deploys it (SAM translated offline)."""
    return translate(template, REPO_ROOT)


def _references(node: Any, resolver: Resolver) -> set[str]:
    """The logical ids and parameters a resolved node depends on: Ref, GetAtt, Sub variables,
    and only the branch of each Fn::If that the parameters take."""
    found: set[str] = set()
    if isinstance(node, list):
        for item in node:
            found |= _references(item, resolver)
    elif isinstance(node, dict) and len(node) == 1:
        ((key, arg),) = node.items()
        if key == "Fn::If":
            found |= _references(arg[1] if resolver.condition(arg[0]) else arg[2], resolver)
        elif key == "Ref":
            found.add(arg)
        elif key == "Fn::GetAtt":
            found.add(arg[0] if isinstance(arg, list) else arg.split(".", 1)[0])
        elif key == "Fn::Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            found |= _sub_references(text, variables) | _references(variables, resolver)
        else:
            found |= _references(arg, resolver)
    elif isinstance(node, dict):
        for value in node.values():
            found |= _references(value, resolver)
    return found


def _sub_references(text: str, variables: dict[str, Any]) -> set[str]:
    names = {m.group("name") for m in _SUB_VAR.finditer(text)}
    return {
        name if name.startswith("AWS::") else name.split(".", 1)[0]
        for name in names
        if not name.startswith("!") and name not in variables
    }


def _specs(translated: dict[str, Any], parameters: dict[str, str]) -> list[ContainerSpec]:
    return list(container_specs(translated, {**parameters, **ALL_ON}))


def test_one_sqs_queue_with_a_dead_letter_queue_per_worker_queue(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    for name in NAMES:
        logical_id = worker_queues.default_logical_id(name)
        queue = resources[f"{logical_id}BrokerQueue"]
        dlq = resources[f"{logical_id}BrokerDeadLetterQueue"]
        # THEN only with CeleryBroker=sqs, named as kombu names the Celery queue
        assert queue["Condition"] == dlq["Condition"] == "BrokerIsSqs"
        assert queue["Properties"]["QueueName"] == {"Fn::Sub": f"${{EnvironmentName}}-{name}"}
        # AND a message stays invisible for SQS's maximum, 12 h, while its task runs
        assert queue["Properties"]["VisibilityTimeout"] == worker_queues.SQS_VISIBILITY_TIMEOUT_S == 43200
        redrive = queue["Properties"]["RedrivePolicy"]
        assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": [f"{logical_id}BrokerDeadLetterQueue", "Arn"]}
        assert redrive["maxReceiveCount"] == 5
        assert queue["Properties"]["SqsManagedSseEnabled"] is True


def test_components_and_autoscaler_get_exactly_the_queue_grants(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    arns = [{"Fn::GetAtt": [f"{worker_queues.default_logical_id(n)}BrokerQueue", "Arn"]} for n in NAMES]
    access = resources["BrokerQueueAccess"]
    assert access["Condition"] == "BrokerIsSqs"
    assert access["Properties"]["Roles"] == [{"Ref": "TaskRole"}, {"Ref": "SchedulerTaskRole"}]
    celery, listing = access["Properties"]["PolicyDocument"]["Statement"]
    assert celery["Resource"] == arns
    assert "sqs:DeleteQueue" not in celery["Action"]
    assert listing["Action"] == "sqs:ListQueues"
    depth = resources["AutoscalerBrokerQueueDepth"]["Properties"]
    assert depth["Roles"] == [{"Ref": "AutoscalerRole"}]
    (statement,) = depth["PolicyDocument"]["Statement"]
    assert statement["Action"] == ["sqs:GetQueueUrl", "sqs:GetQueueAttributes"]
    assert statement["Resource"] == arns


def test_with_sqs_no_elasticache_resource_is_created_and_redis_is_unchanged(
    translated: dict[str, Any],
) -> None:
    # GIVEN the deployed template with each broker
    sqs = Resolver(translated, SQS).resources_created()
    redis = Resolver(translated, REDIS).resources_created()
    # THEN with SQS no ElastiCache resource, its security group or its token exists
    assert not [i for i, r in sqs.items() if r["Type"].startswith("AWS::ElastiCache::")]
    assert not ELASTICACHE_PARTS & set(sqs)
    # AND the results-only database's secret and its network path exist instead
    assert set(sqs) >= SQS_PARTS
    # AND with Redis (the default) the broker's replication group and its parts are there,
    # and nothing of the SQS option
    assert set(redis) >= ELASTICACHE_PARTS
    assert redis["Broker"]["Type"] == "AWS::ElastiCache::ReplicationGroup"
    assert not SQS_PARTS & set(redis)
    assert not [i for i in redis if i.endswith(("BrokerQueue", "BrokerDeadLetterQueue"))]


@pytest.mark.parametrize("parameters", [SQS, REDIS], ids=["sqs", "redis"])
def test_no_created_resource_refers_to_one_the_broker_option_leaves_out(
    translated: dict[str, Any], parameters: dict[str, str]
) -> None:
    # GIVEN the resources and outputs created with this broker (every option on)
    resolver = Resolver(translated, {**parameters, **ALL_ON})
    created = resolver.resources_created()
    known = set(created) | set(translated["Parameters"]) | set(PSEUDO_PARAMETERS)
    known |= {"AWS::StackName", "AWS::URLSuffix", "AWS::NoValue", "AWS::StackId", "AWS::Region"}
    # THEN each of them refers only to what exists (the branch each Fn::If takes)
    for logical_id, resource in created.items():
        depends = resource.get("DependsOn") or []
        depends = [depends] if isinstance(depends, str) else depends
        missing = (_references(resource.get("Properties", {}), resolver) | set(depends)) - known
        assert not missing, (logical_id, missing)
    for name, output in (translated.get("Outputs") or {}).items():
        if "Condition" in output and not resolver.condition(output["Condition"]):
            continue
        assert not _references(output, resolver) - known, name


def test_the_broker_settings_reach_every_celery_component_and_the_autoscaler(
    translated: dict[str, Any],
) -> None:
    # GIVEN the template resolved with CeleryBroker=sqs
    resolver = Resolver(translated, SQS)
    resources = translated["Resources"]
    assert resolver.resolve(resources["BrokerUrlSecret"]["Properties"]["SecretString"]) == "sqs://"
    autoscaler = resolver.resolve(resources["AutoscalerFunction"]["Properties"]["Environment"]["Variables"])
    assert (autoscaler["BROKER_TRANSPORT"], autoscaler["SQS_QUEUE_PREFIX"]) == ("sqs", "airflow-dev-")
    # THEN every container that gets the broker URL gets the SQS transport options
    with_broker = [
        c for c in _specs(translated, SQS) if "AIRFLOW__CELERY__BROKER_URL" in {s.name for s in c.secrets}
    ]
    for container in with_broker:
        assert (
            container.environment["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__QUEUE_NAME_PREFIX"]
            == "airflow-dev-"
        )
        assert (
            container.environment["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"] == "43200"
        )
    # api-server, scheduler, dag-processor, triggerer, Flower, workers
    assert len(with_broker) == 5 + len(NAMES)
    # AND with Redis the visibility timeout stays Airflow's default
    (worker,) = [c for c in _specs(translated, REDIS) if c.task_definition == "WorkerDefaultTaskDefinition"]
    assert worker.environment["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"] == "86400"


@pytest.mark.parametrize("parameters", [SQS, REDIS], ids=["sqs", "redis"])
def test_every_celery_containers_secrets_resolve_to_secrets_that_exist(
    translated: dict[str, Any], parameters: dict[str, str]
) -> None:
    # GIVEN the secrets created with this broker, and what the execution role may inject
    resolver = Resolver(translated, {**parameters, **ALL_ON})
    created = resolver.resources_created()
    statements = resolver.resolve(translated["Resources"]["TaskExecutionRole"]["Properties"]["Policies"])
    injectable = {
        arn.removeprefix(SECRET_ARN_PREFIX)
        for policy in statements
        for statement in policy["PolicyDocument"]["Statement"]
        if statement.get("Sid") == "InjectAirflowSecrets"
        for arn in statement["Resource"]
    }
    # THEN every secret of every container is a created secret the execution role may read
    result_backends = set()
    for container in _specs(translated, parameters):
        for secret in container.secrets:
            assert created[secret.secret_id]["Type"] == "AWS::SecretsManager::Secret", secret
            assert secret.secret_id in injectable, (container.task_definition, secret)
            if secret.name == "AIRFLOW__CELERY__RESULT_BACKEND":
                result_backends.add(secret.secret_id)
    # AND every Celery component reads its results from one secret
    assert result_backends == {"ResultBackendUrlSecret"}
    # AND the execution role reads no secret that is not created
    assert injectable <= set(created)


def _container_env(
    translated: dict[str, Any], container: ContainerSpec, parameters: dict[str, str]
) -> dict[str, str]:
    """A container's environment as ECS gives it: its variables and its secrets' values, each
    generated credential standing in as ``pw-<secret>``."""
    resolver = Resolver(translated, parameters)
    resources = translated["Resources"]
    env = dict(container.environment)
    for secret in container.secrets:
        value = str(resolver.resolve(resources[secret.secret_id]["Properties"].get("SecretString", "")))
        if secret.json_key:
            value = f"pw-{secret.secret_id}"
        env[secret.name] = re.sub(
            r"\{\{resolve:secretsmanager:" + re.escape(SECRET_ARN_PREFIX) + r"(\w+)[^}]*\}\}", r"pw-\1", value
        )
    return env


def test_with_sqs_workers_get_the_results_only_database_and_the_entrypoint_takes_it(
    translated: dict[str, Any],
) -> None:
    # GIVEN each worker's environment as ECS would give it with CeleryBroker=sqs
    workers = [c for c in _specs(translated, SQS) if c.command[:1] == ("celery-worker",)]
    assert len(workers) == len(NAMES)
    for worker in workers:
        env = _container_env(translated, worker, SQS)
        # THEN the result backend is the results-only database, as its own role, over TLS
        backend = env["AIRFLOW__CELERY__RESULT_BACKEND"]
        assert backend == (
            "db+postgresql://celery_results:pw-ResultsDatabaseCredentialsSecret@<Database.Endpoint.Address>:"
            "<Database.Endpoint.Port>/celery_results?sslmode=require"
        )
        assert env["AIRFLOW_CELERY_RESULTS_DATABASE"] == "celery_results"
        # AND the image's entrypoint starts the worker with it, still without the metadata database
        plan = ep.plan("celery-worker", list(worker.command[1:]), {**env, "HOSTNAME": "ip-10-0-1-7"})
        assert "results-only database 'celery_results'" in plan.reason
        # AND the same worker given the metadata database's URL as its backend is refused
        metadata = _container_env(translated, _specs_by_family(translated, SQS, "airflow-dev-scheduler"), SQS)
        wrong = {
            **env,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
        }
        with pytest.raises(ep.PlanError, match="database result backend"):
            ep.plan("celery-worker", list(worker.command[1:]), {**wrong, "HOSTNAME": "ip-10-0-1-7"})
    # AND with Redis the workers keep a Redis backend and no results database name
    for worker in _specs(translated, REDIS):
        if worker.command[:1] == ("celery-worker",):
            env = _container_env(translated, worker, REDIS)
            assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("rediss://:pw-BrokerAuthTokenSecret@")
            assert env["AIRFLOW_CELERY_RESULTS_DATABASE"] == ""


def _specs_by_family(translated: dict[str, Any], parameters: dict[str, str], family: str) -> ContainerSpec:
    (spec,) = [c for c in _specs(translated, parameters) if c.family == family]
    return spec


def test_only_the_migrate_job_gets_the_results_role_password_and_only_with_sqs(
    translated: dict[str, Any],
) -> None:
    # GIVEN the migrate job with each broker
    sqs = _specs_by_family(translated, SQS, "airflow-dev-db-migrate")
    redis = _specs_by_family(translated, REDIS, "airflow-dev-db-migrate")
    # THEN with SQS it makes the results database of the name the result backend URL uses,
    # with the password of the generated secret (its JSON key, like the read-only role's)
    assert sqs.environment["AIRFLOW_CELERY_RESULTS_DATABASE"] == "celery_results"
    secrets = {s.name: (s.secret_id, s.json_key) for s in sqs.secrets}
    assert secrets["AIRFLOW_CELERY_RESULTS_DB_PASSWORD"] == ("ResultsDatabaseCredentialsSecret", "password")
    generated = translated["Resources"]["ResultsDatabaseCredentialsSecret"]["Properties"][
        "GenerateSecretString"
    ]
    assert json.loads(generated["SecretStringTemplate"]) == {"username": "celery_results"}
    assert generated["ExcludePunctuation"] is True  # the password goes into a URL
    # AND the entrypoint plans the results database step from that environment
    env = _container_env(translated, sqs, SQS)
    assert "results-only database and role 'celery_results'" in ep.plan("db-migrate", [], env).reason
    # AND no other container holds that password
    for container in _specs(translated, SQS):
        if container.family != "airflow-dev-db-migrate":
            assert "ResultsDatabaseCredentialsSecret" not in {s.secret_id for s in container.secrets}
    # AND with Redis the job neither gets the password nor makes the database
    assert redis.environment["AIRFLOW_CELERY_RESULTS_DATABASE"] == ""
    assert "AIRFLOW_CELERY_RESULTS_DB_PASSWORD" not in {s.name for s in redis.secrets}
    assert "results-only" not in ep.plan("db-migrate", [], _container_env(translated, redis, REDIS)).reason


def test_workers_reach_the_database_port_only_with_sqs(translated: dict[str, Any]) -> None:
    resources = translated["Resources"]
    # GIVEN the worker services, each in the workers' own security group
    for name in NAMES:
        service = resources[f"{worker_queues.default_logical_id(name)}Service"]["Properties"]
        groups = service["NetworkConfiguration"]["AwsvpcConfiguration"]["SecurityGroups"]
        assert groups == [{"Ref": "WorkerSecurityGroup"}]
    # THEN the database's group admits the workers only through the SQS-only ingress rule
    database = resources["DatabaseSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert {"Ref": "WorkerSecurityGroup"} not in [rule["SourceSecurityGroupId"] for rule in database]
    ingress = [
        (logical_id, r)
        for logical_id, r in resources.items()
        if r["Type"] == "AWS::EC2::SecurityGroupIngress"
        and r["Properties"].get("SourceSecurityGroupId") == {"Ref": "WorkerSecurityGroup"}
    ]
    assert [(i, r["Condition"], r["Properties"]["GroupId"]) for i, r in ingress] == [
        ("WorkerResultsDatabaseIngress", "BrokerIsSqs", {"Ref": "DatabaseSecurityGroup"})
    ]
    assert (ingress[0][1]["Properties"]["FromPort"], ingress[0][1]["Properties"]["ToPort"]) == (5432, 5432)
    # AND the workers still reach the api-server's Task Execution API and EFS
    for group, port in (("ApiServerSecurityGroup", 8080), ("EfsSecurityGroup", 2049)):
        rules = resources[group]["Properties"]["SecurityGroupIngress"]
        assert {
            "IpProtocol": "tcp",
            "FromPort": port,
            "ToPort": port,
            "SourceSecurityGroupId": {"Ref": "WorkerSecurityGroup"},
        }.items() <= {
            k: v
            for r in rules
            if r["SourceSecurityGroupId"] == {"Ref": "WorkerSecurityGroup"}
            for k, v in r.items()
        }.items()
