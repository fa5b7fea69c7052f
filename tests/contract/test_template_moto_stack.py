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
- Custom::FernetKey would invoke the Lambda: stand-in.
moto also stores state machine definitions without applying DefinitionSubstitutions and
drops a task definition's ExecutionRoleArn, so those are checked by the template rules.
"""

from __future__ import annotations

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
from tests.static.tools import PLACEHOLDER_BUCKET, load_template, translate

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
def translated() -> dict[str, Any]:
    return translate(load_template(REPO_ROOT / "template.yaml"), REPO_ROOT)


@pytest.fixture(scope="module")
def stack(translated: dict[str, Any]) -> Iterator[tuple[dict[str, Any], set[str]]]:
    import moto.cloudformation.parsing as parsing

    template = _moto_copy(translated)
    models = dict(parsing.get_model_map())
    used = {r["Type"] for r in template["Resources"].values()}
    stand_ins = {t for t in used if t not in models or t in PARTIALLY_BROKEN or t.startswith("Custom::")}
    for resource in template["Resources"].values():
        if resource["Type"].startswith("Custom::"):
            resource["Type"] = "Test::StandIn"
    models.update({t: StandIn for t in stand_ins | {"Test::StandIn"}})
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
