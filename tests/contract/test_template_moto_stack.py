"""Create the translated template in moto's CloudFormation: every Ref, GetAtt, Sub, If and
DefinitionSubstitution must resolve, in dependency order, with default parameters.

moto cannot create every resource type. Those are replaced by a stand-in model that answers
every attribute with a placeholder, so the rest of the stack still has to resolve. The list is
asserted (MOTO_STAND_INS), so a new unsupported type, or moto learning one, shows up here.
Adaptations for moto 5.2.5 gaps, each applied to the test's copy only:
- Fn::Cidr is not implemented: resolved here with ipaddress from the VpcCidr default;
- ${Resource.Attr.Sub} inside Fn::Sub is split at the first dot only: rewritten to the
  list form of Fn::Sub with an explicit Fn::GetAtt;
- a DBInstance's DBParameterGroupName Ref resolves to the model object: property dropped;
- EFS FileSystem/AccessPoint/MountTarget have no GetAtt support: stand-ins;
- Custom::FernetKey would invoke the Lambda: stand-in;
- Custom::ServiceCounts runs the real decision and ECS adapter (functions/service_counts)
  in-process against moto's ECS, and answers its attributes as integers (CloudFormation
  converts a custom resource's string attribute to the Integer a DesiredCount is; moto does
  not);
- on update, moto modifies only resources whose own JSON or directly referenced parameters
  changed, in template order; CloudFormation also updates the resources that reference a
  replaced one (a new task definition revision), in dependency order. The update test applies
  that propagation for task definitions (see _propagate_replacements).
moto also stores state machine definitions without applying DefinitionSubstitutions and
drops a task definition's ExecutionRoleArn, so those are checked by the template rules.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import re
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core.common_models import CloudFormationModel

from airflow_control_plane.scaling.config import parse_queue_map
from airflow_control_plane.service_counts import EcsServiceObserver, decide_counts, parse_services
from tests.static.tools import PLACEHOLDER_BUCKET

pytestmark = pytest.mark.contract

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK = "airflow-dev"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/airflow-ecs:3.3.2"
MOTO_STAND_INS = {
    # not implemented by moto's CloudFormation
    "AWS::CloudFormation::WaitConditionHandle",
    "AWS::CloudWatch::Alarm",
    "AWS::EC2::SecurityGroupEgress",
    "AWS::ElastiCache::ReplicationGroup",
    "AWS::ElastiCache::SubnetGroup",
    "AWS::Lambda::Url",
    "AWS::S3::BucketPolicy",
    "AWS::SNS::Subscription",
    "AWS::SNS::TopicPolicy",
    "AWS::SQS::QueuePolicy",
    "AWS::Scheduler::Schedule",
    "AWS::SecretsManager::Secret",
    "AWS::ServiceDiscovery::PrivateDnsNamespace",
    "AWS::ServiceDiscovery::Service",
    # implemented without GetAtt support, or needing a Lambda invocation
    "AWS::EFS::FileSystem",
    "AWS::EFS::AccessPoint",
    "AWS::EFS::MountTarget",
    "Custom::FernetKey",
}
SERVICE_COUNTS = "Test::ServiceCounts"
PARTIALLY_BROKEN = {"AWS::EFS::FileSystem", "AWS::EFS::AccessPoint", "AWS::EFS::MountTarget"}


class StandIn(CloudFormationModel):
    """A resource moto cannot create: any attribute resolves to a recognisable placeholder."""

    # moto's model metaclass files every model under the second part of its module name.
    __module__ = "tests.moto_stand_in"

    def __init__(self, logical_id: str) -> None:
        self.logical_id = logical_id

    @property
    def physical_resource_id(self) -> str:
        return f"standin-{self.logical_id}"

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @staticmethod
    def cloudformation_type() -> str:
        return "Test::StandIn"

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return True

    def get_cfn_attribute(self, attribute_name: str) -> str:
        return f"standin-{self.logical_id}-{attribute_name}"

    @classmethod
    def create_from_cloudformation_json(  # type: ignore[override]
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> StandIn:
        return cls(kwargs["LogicalId"])


class ServiceCountsModel(CloudFormationModel):
    """Custom::ServiceCounts in moto: the real decision over moto's ECS, on create and update."""

    __module__ = "tests.moto_service_counts"

    def __init__(self, logical_id: str, counts: dict[str, int]) -> None:
        self.logical_id = logical_id
        self.counts = counts

    @property
    def physical_resource_id(self) -> str:
        return f"service-counts-{self.logical_id}"

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @staticmethod
    def cloudformation_type() -> str:
        return SERVICE_COUNTS

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return True

    def get_cfn_attribute(self, attribute_name: str) -> int:
        return self.counts[attribute_name]

    @staticmethod
    def _decide(request_type: str, properties: dict[str, Any], region_name: str) -> dict[str, int]:
        cluster = properties["Cluster"]
        cluster = cluster if isinstance(cluster, str) else cluster.name
        services = parse_services({k: v for k, v in properties["Services"].items() if isinstance(v, str)})
        observer = EcsServiceObserver(boto3.client("ecs", region_name=region_name))
        observed = observer.desired_counts(cluster, sorted(set(services.values())))
        return decide_counts(request_type, services, observed).counts

    @classmethod
    def create_from_cloudformation_json(  # type: ignore[override]
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> ServiceCountsModel:
        counts = cls._decide("Create", cloudformation_json["Properties"], region_name)
        return cls(kwargs["LogicalId"], counts)

    @classmethod
    def update_from_cloudformation_json(  # type: ignore[override]
        cls,
        original_resource: Any,
        new_resource_name: str,
        cloudformation_json: Any,
        account_id: str,
        region_name: str,
    ) -> ServiceCountsModel:
        original_resource.counts = cls._decide("Update", cloudformation_json["Properties"], region_name)
        return original_resource  # type: ignore[no-any-return]


def _resolve_cidr(node: Any, vpc_cidr: str) -> Any:
    if isinstance(node, dict):
        if set(node) == {"Fn::Cidr"}:
            _, count, bits = node["Fn::Cidr"]
            network = ipaddress.ip_network(vpc_cidr)
            subnets = network.subnets(new_prefix=network.max_prefixlen - int(bits))
            return [str(s) for _, s in zip(range(int(count)), subnets, strict=False)]
        return {k: _resolve_cidr(v, vpc_cidr) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_cidr(v, vpc_cidr) for v in node]
    return node


_DOTTED = re.compile(r"\$\{([A-Za-z0-9]+)\.([A-Za-z0-9]+\.[A-Za-z0-9.]+)\}")


def _explicit_dotted_getatt(node: Any) -> Any:
    if isinstance(node, dict):
        if set(node) == {"Fn::Sub"}:
            value = node["Fn::Sub"]
            text, mapping = (value, {}) if isinstance(value, str) else (value[0], dict(value[1]))

            def replace(match: re.Match[str]) -> str:
                key = re.sub(r"[^A-Za-z0-9]", "", match.group(0)) + "Attr"
                mapping[key] = {"Fn::GetAtt": [match.group(1), match.group(2)]}
                return "${" + key + "}"

            rewritten = _DOTTED.sub(replace, text)
            return {"Fn::Sub": [rewritten, mapping]} if mapping else node
        return {k: _explicit_dotted_getatt(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_explicit_dotted_getatt(v) for v in node]
    return node


def _moto_copy(translated: dict[str, Any]) -> dict[str, Any]:
    copy = json.loads(json.dumps(translated))
    resources = _explicit_dotted_getatt(copy["Resources"])
    resources = _resolve_cidr(resources, copy["Parameters"]["VpcCidr"]["Default"])
    resources["Database"]["Properties"].pop("DBParameterGroupName")
    copy["Resources"] = resources
    return copy


@pytest.fixture(scope="module")
def stack(translated: dict[str, Any]) -> Iterator[tuple[dict[str, Any], set[str]]]:
    with created_stack(translated) as created:
        yield created


def _created_stack(
    translated: dict[str, Any], parameters: dict[str, str]
) -> Iterator[tuple[dict[str, Any], set[str]]]:
    """As a fixture's generator: the stack with extra ``parameters``."""
    with created_stack(translated, parameters) as created:
        yield created


@contextlib.contextmanager
def created_stack(
    translated: dict[str, Any], extra_parameters: dict[str, str] | None = None
) -> Iterator[tuple[dict[str, Any], set[str]]]:
    """The stack created in moto with the default parameters, plus ``extra_parameters``."""
    import moto.cloudformation.parsing as parsing

    template = _moto_copy(translated)
    models = dict(parsing.get_model_map())
    used = {r["Type"] for r in template["Resources"].values()}
    stand_ins = {t for t in used if t not in models or t in PARTIALLY_BROKEN or t.startswith("Custom::")}
    for resource in template["Resources"].values():
        if resource["Type"] == "Custom::ServiceCounts":
            resource["Type"] = SERVICE_COUNTS
        elif resource["Type"].startswith("Custom::"):
            resource["Type"] = "Test::StandIn"
    stand_ins.discard("Custom::ServiceCounts")
    models.update({t: StandIn for t in stand_ins | {"Test::StandIn"}})
    models[SERVICE_COUNTS] = ServiceCountsModel
    mp = pytest.MonkeyPatch()
    mp.setattr(parsing, "get_model_map", lambda: models)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        mp.setenv(name, value)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("app.py", "def lambda_handler(event, context):\n    return event\n")
    try:
        with mock_aws(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s3 = boto3.client("s3", region_name="us-east-1")
            s3.create_bucket(Bucket=PLACEHOLDER_BUCKET)
            for resource in template["Resources"].values():
                if resource["Type"] in ("AWS::Lambda::Function", "AWS::Lambda::LayerVersion"):
                    code = resource["Properties"].get("Code") or resource["Properties"]["Content"]
                    s3.put_object(Bucket=code["S3Bucket"], Key=code["S3Key"], Body=archive.getvalue())
            # The parameters without a default, and a certificate: the stack serves no plain-HTTP UI
            certificate = boto3.client("acm", region_name="us-east-1").request_certificate(
                DomainName="airflow.example.com"
            )["CertificateArn"]
            cloudformation = boto3.client("cloudformation", region_name="us-east-1")
            cloudformation.create_stack(
                StackName=STACK,
                TemplateBody=json.dumps(template),
                Parameters=[
                    {"ParameterKey": "AirflowImageUri", "ParameterValue": IMAGE},
                    {"ParameterKey": "AllowedIngressCidr", "ParameterValue": "203.0.113.0/24"},
                    {"ParameterKey": "CertificateArn", "ParameterValue": certificate},
                    *({"ParameterKey": k, "ParameterValue": v} for k, v in (extra_parameters or {}).items()),
                ],
                Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
            )
            yield template, stand_ins
    finally:
        mp.undo()


def test_stack_creates_with_default_parameters(stack: tuple[dict[str, Any], set[str]]) -> None:
    _template, stand_ins = stack
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    # GIVEN the stack created from the translated template
    description = cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]
    created = cloudformation.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
    # THEN it completed, every resource of a true condition exists, and the stand-ins are the
    # documented list of types moto cannot create
    assert description["StackStatus"] == "CREATE_COMPLETE"
    assert all(r["ResourceStatus"] == "CREATE_COMPLETE" for r in created)
    assert len(created) >= 120
    assert stand_ins == MOTO_STAND_INS
    outputs = {o["OutputKey"]: o["OutputValue"] for o in description["Outputs"]}
    assert outputs["ClusterName"] == STACK
    assert outputs["BringUpStateMachineArn"].endswith(":stateMachine:airflow-dev-bringup")


def test_state_machines_exist_with_our_role(stack: tuple[dict[str, Any], set[str]]) -> None:
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    iam = boto3.client("iam", region_name="us-east-1")
    machines = sfn.list_state_machines()["stateMachines"]
    assert {m["name"] for m in machines} == {"airflow-dev-bringup", "airflow-dev-hibernate"}
    roles = set()
    for machine in machines:
        described = sfn.describe_state_machine(stateMachineArn=machine["stateMachineArn"])
        # THEN the definition is the JSONata machine and the role is a role the stack created
        # (moto stores the definition without applying DefinitionSubstitutions; the template
        # rule definition_substitutions_match checks those keys instead)
        assert json.loads(described["definition"])["QueryLanguage"] == "JSONata"
        roles.add(described["roleArn"])
    assert len(roles) == 1
    iam.get_role(RoleName=roles.pop().split("/")[-1])


def test_services_and_task_definitions(stack: tuple[dict[str, Any], set[str]]) -> None:
    ecs = boto3.client("ecs", region_name="us-east-1")
    arns = ecs.list_services(cluster=STACK)["serviceArns"]
    services = ecs.describe_services(cluster=STACK, services=arns)["services"]
    # THEN the four core services and the default worker slot exist, all at zero
    assert sorted(s["serviceName"] for s in services) == [
        "airflow-dev-api-server",
        "airflow-dev-dag-processor",
        "airflow-dev-scheduler",
        "airflow-dev-triggerer",
        "airflow-dev-worker-default",
    ]
    assert all(s["desiredCount"] == 0 for s in services)
    value_froms: dict[str, set[str]] = {}
    for service in services:
        task = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
        for container in task["containerDefinitions"]:
            assert container["image"] == IMAGE
            for secret in container["secrets"]:
                value_froms.setdefault(secret["name"], set()).add(secret["valueFrom"])
    # AND each Airflow secret resolves to one single source in every component
    assert value_froms
    assert all(len(v) == 1 for v in value_froms.values())


def test_autoscaler_queue_map_is_accepted_by_its_parser(stack: tuple[dict[str, Any], set[str]]) -> None:
    lambda_client = boto3.client("lambda", region_name="us-east-1")
    env = lambda_client.get_function_configuration(FunctionName="airflow-dev-autoscaler")["Environment"][
        "Variables"
    ]
    # GIVEN the WORKER_QUEUES the template composes WHEN the autoscaler's own parser reads it
    queues = parse_queue_map(env["WORKER_QUEUES"])
    # THEN it names the created worker service with the default sizing
    assert [(q.queue, q.service, q.min_workers, q.max_workers, q.concurrency) for q in queues] == [
        ("default", "airflow-dev-worker-default", 0, 4, 8)
    ]
    assert queues[0].capacity_provider == "FARGATE_SPOT"
    assert env["SCHEDULER_SERVICE"] == "airflow-dev-scheduler"


def _references(node: Any) -> set[str]:
    if isinstance(node, dict):
        found: set[str] = set()
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add(value[0])
            else:
                found |= _references(value)
        return found
    if isinstance(node, list):
        return set().union(*(_references(v) for v in node)) if node else set()
    return set()


def _propagate_replacements(
    template: dict[str, Any],
) -> Any:
    """build_resource_diff as CloudFormation behaves: a modified task definition is replaced (a new
    revision), so every resource that references it is updated too, after what it depends on."""
    import moto.cloudformation.parsing as parsing

    original = parsing.ResourceMap.build_resource_diff
    resources = template["Resources"]

    def build_resource_diff(self: Any, other: dict[str, Any], parameters: Any = None) -> dict[str, Any]:
        diff = original(self, other, parameters)
        created = {n for n, r in self._parsed_resources.items() if r is not None}  # conditions held
        modified = set(diff["Modify"]) & created
        replaced = {n for n in modified if resources[n]["Type"] == "AWS::ECS::TaskDefinition"}
        dependents = {
            name
            for name in created & set(resources)
            if _references(resources[name].get("Properties", {})) & replaced
        }
        modify = modified | dependents
        ordered: list[str] = []
        while len(ordered) < len(modify):
            for name in sorted(modify - set(ordered)):
                if not (_references(resources[name].get("Properties", {})) & (modify - set(ordered))):
                    ordered.append(name)
        diff["Modify"] = ordered
        return diff

    return build_resource_diff


def test_an_update_keeps_the_running_counts(stack: tuple[dict[str, Any], set[str]]) -> None:
    # This test changes the stack: it runs last in this module.
    template, _ = stack
    ecs = boto3.client("ecs", region_name="us-east-1")
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    names = {
        "airflow-dev-api-server": 1,
        "airflow-dev-scheduler": 1,
        "airflow-dev-dag-processor": 1,
        "airflow-dev-triggerer": 1,
        "airflow-dev-worker-default": 3,
    }
    # GIVEN the stack created with every service at 0, then brought up (the autoscaler at 3 workers)
    for name, count in names.items():
        ecs.update_service(cluster=STACK, service=name, desiredCount=count)
    before = ecs.describe_services(cluster=STACK, services=list(names))["services"]
    task_definitions = {s["serviceName"]: s["taskDefinition"] for s in before}
    # WHEN the stack is updated with a new image (the documented upgrade path)
    import moto.cloudformation.parsing as parsing

    mp = pytest.MonkeyPatch()
    mp.setattr(parsing.ResourceMap, "build_resource_diff", _propagate_replacements(template))
    try:
        cloudformation.update_stack(
            StackName=STACK,
            TemplateBody=json.dumps(template),
            Parameters=[
                {"ParameterKey": "AirflowImageUri", "ParameterValue": IMAGE.replace("3.3.2", "3.3.3")},
                {"ParameterKey": "AllowedIngressCidr", "UsePreviousValue": True},
                {"ParameterKey": "CertificateArn", "UsePreviousValue": True},
            ],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
        )
    finally:
        mp.undo()
    after = ecs.describe_services(cluster=STACK, services=list(names))["services"]
    # THEN every service was updated to the new task definition revision...
    assert all(s["taskDefinition"] != task_definitions[s["serviceName"]] for s in after)
    # ...and runs at the count it had: the update sent the running counts, not a template value
    assert {s["serviceName"]: s["desiredCount"] for s in after} == names
