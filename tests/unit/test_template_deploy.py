"""What a real deploy needs from template.yaml beyond what the linters check: one test per defect.

Counts that survive an update, every worker service in bring-up/hibernate wiring, schedule
names per environment, optional reserved concurrency, parameters refused at validation, the
default queue, the release DAG bundle, the Fernet key's lifetime, the sample DAG's claims, and
the scheduler's wake-up of the autoscaler.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from airflow_control_plane import worker_queues
from airflow_control_plane.local.airflow_env import (
    BUNDLE_REFRESH_CHECK_INTERVAL_S,
    AirflowEnvInputs,
    dag_bundle_config,
)
from tests.static import rules

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_ROOT / "template.yaml"
# Fargate CPU units -> valid memory (MiB), from the AWS Fargate task size table.
FARGATE_SIZES = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
}


def _references(node: Any) -> Iterator[str]:
    """Every resource, parameter or condition a value depends on (Ref, GetAtt, Sub, If)."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "Ref":
                yield str(value)
            elif key == "Fn::GetAtt":
                yield str(value[0] if isinstance(value, list) else str(value).split(".")[0])
            elif key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                yield from (m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text))
                if not isinstance(value, str):
                    yield from _references(value[1])
            elif key == "Fn::If":
                yield str(value[0])
                yield from _references(value[1:])
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def _env(container: Mapping[str, Any]) -> dict[str, Any]:
    return {e["Name"]: e["Value"] for e in container.get("Environment") or []}


# ------------------------------------------------------------------ 1. counts on update


def test_every_service_takes_its_count_from_service_counts(template: dict[str, Any]) -> None:
    # GIVEN every ECS service of the stack
    services = dict(rules.resources(template, "AWS::ECS::Service"))
    counts = template["Resources"]["ServiceCounts"]
    assert counts["Type"] == "Custom::ServiceCounts"
    declared = counts["Properties"]["Services"]
    for logical_id, service in services.items():
        # THEN no count is written in the template: each comes from ServiceCounts (0 on create,
        # the running count on update), under the attribute for that service's name
        desired = service["Properties"]["DesiredCount"]
        assert isinstance(desired, dict), logical_id
        assert set(desired) == {"Fn::GetAtt"}, logical_id
        owner, attribute = desired["Fn::GetAtt"]
        assert owner == "ServiceCounts", logical_id
        name = service["Properties"]["ServiceName"]
        assert declared[attribute] in (
            name,
            {"Fn::If": [service.get("Condition"), name, {"Ref": "AWS::NoValue"}]},
        )


def test_service_counts_is_updated_whenever_a_service_is(template: dict[str, Any]) -> None:
    # GIVEN what each service's properties depend on (besides its count)
    counts_inputs = set(_references(template["Resources"]["ServiceCounts"]["Properties"]))
    for logical_id, service in rules.resources(template, "AWS::ECS::Service"):
        inputs = set(_references({k: v for k, v in service["Properties"].items() if k != "DesiredCount"}))
        # THEN ServiceCounts depends on all of it: whatever updates a service updates ServiceCounts
        # first, so the count sent with the update is read at that moment, never a stale one
        assert inputs - counts_inputs == set(), logical_id


def test_no_literal_count_reaches_an_update_whatever_changes(template: dict[str, Any]) -> None:
    # GIVEN two deploys of the template that differ in the image (the documented upgrade path)
    first, second = (
        json.dumps(template).replace('"Ref": "AirflowImageUri"', f'"Ref": "{image}"')
        for image in ("ImageA", "ImageB")
    )
    # THEN the services' DesiredCount is the same expression in both and never a number, so what
    # CloudFormation sends is what ServiceCounts reads from ECS at update time
    for rendered in (json.loads(first), json.loads(second)):
        for _, service in rules.resources(rendered, "AWS::ECS::Service"):
            assert not isinstance(service["Properties"]["DesiredCount"], int | str)


# ------------------------------------------------------------------ 2. every worker service


def test_both_machines_get_every_worker_service_with_its_minimum(template: dict[str, Any]) -> None:
    machines = [r for _, r in rules.resources(template, "AWS::Serverless::StateMachine")]
    assert len(machines) == 2
    for machine in machines:
        subs = machine["Properties"]["DefinitionSubstitutions"]
        assert "WorkerServiceName" not in subs
        text = json.dumps(subs["WorkerServices"])
        # THEN every queue of worker_queues.json is in the list, with its service name and minimum
        for queue in worker_queues.load_queues(REPO_ROOT / "worker_queues.json"):
            assert f"'queue': '{queue.name}', 'serviceName': '${{{queue.service_id}.Name}}'" in text
            assert f"'minimum': {queue.min_workers}" in text


# ------------------------------------------------------------------ 3. schedule names


def test_schedule_names_are_per_environment(translated: dict[str, Any]) -> None:
    schedules = [r for r in translated["Resources"].values() if r["Type"] == "AWS::Scheduler::Schedule"]
    assert len(schedules) == 2
    names = [s["Properties"]["Name"] for s in schedules]
    # THEN every name contains the environment name, and the two differ
    for name in names:
        assert isinstance(name, dict), name
        assert "${EnvironmentName}" in name["Fn::Sub"], name
    assert len({json.dumps(n) for n in names}) == 2
    # AND fits the 64 characters a schedule name may have with the longest EnvironmentName (31)
    for name in names:
        assert len(name["Fn::Sub"].replace("${EnvironmentName}", "e" * 31)) <= 64


# ------------------------------------------------------------------ 4. reserved concurrency


def test_reserved_concurrency_is_an_opt_in_parameter(template: dict[str, Any]) -> None:
    parameter = template["Parameters"]["ControlPlaneReservedConcurrency"]
    assert parameter["Default"] == 0
    assert "UnreservedConcurrentExecution" in parameter["Description"]
    functions = dict(rules.serverless_functions(template))
    reserved = {
        lid: f["Properties"]["ReservedConcurrentExecutions"]
        for lid, f in functions.items()
        if "ReservedConcurrentExecutions" in f["Properties"]
    }
    # THEN no function reserves concurrency unless a parameter asks for it (the public webhook's
    # cap has its own parameter, 0 lifting it: tests/unit/test_template_public_surface.py)
    reserved.pop("GithubWebhookFunction")
    assert set(reserved) == {"DagSyncFunction", "AutoscalerFunction"}
    for value in reserved.values():
        assert value == {"Fn::If": ["ReserveConcurrency", 1, {"Ref": "AWS::NoValue"}]}
    assert template["Conditions"]["ReserveConcurrency"] == {
        "Fn::Equals": [{"Ref": "ControlPlaneReservedConcurrency"}, "1"]
    }


# ------------------------------------------------------------------ 5. parameters refused early


def _evaluate(node: Any, values: Mapping[str, str]) -> Any:
    """The rule functions CloudFormation evaluates at validation, over string parameter values."""
    if isinstance(node, Mapping):
        ((key, args),) = node.items()
        if key == "Ref":
            return values[args]
        evaluated = [_evaluate(a, values) for a in args]
        if key == "Fn::Equals":
            return str(evaluated[0]) == str(evaluated[1])
        if key == "Fn::Contains":
            return str(evaluated[1]) in [str(v) for v in evaluated[0]]
        if key == "Fn::And":
            return all(evaluated)
        if key == "Fn::Or":
            return any(evaluated)
        if key == "Fn::Not":
            return not evaluated[0]
        raise AssertionError(f"unexpected rule function {key}")
    if isinstance(node, list):
        return [_evaluate(v, values) for v in node]
    return node


# What a deploy must give besides the defaults: a certificate, since the UI is never served over
# plain HTTP unless asked (tests/unit/test_template_public_surface.py checks that rule itself).
REQUIRED_INPUTS = {"CertificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/abc"}


def _rule_failures(template: Mapping[str, Any], values: Mapping[str, str]) -> list[str]:
    parameters = {k: str(p.get("Default", "")) for k, p in template["Parameters"].items()}
    merged = {**parameters, **REQUIRED_INPUTS, **values}
    failures = []
    for rule in template["Rules"].values():
        if "RuleCondition" in rule and not _evaluate(rule["RuleCondition"], merged):
            continue
        failures += [a["AssertDescription"] for a in rule["Assertions"] if not _evaluate(a["Assert"], merged)]
    return failures


COMPONENTS = ("ApiServer", "Scheduler", "DagProcessor", "Triggerer", "Worker", "Job")


def test_defaults_with_the_required_inputs_pass_every_rule(template: dict[str, Any]) -> None:
    assert _rule_failures(template, {}) == []


@pytest.mark.parametrize("component", COMPONENTS)
def test_cpu_memory_pairs_are_exactly_fargate_sizes(template: dict[str, Any], component: str) -> None:
    cpus = template["Parameters"][f"{component}Cpu"]["AllowedValues"]
    assert set(cpus) <= set(FARGATE_SIZES)
    for cpu in cpus:
        for memory in range(512, 30721, 512):
            failures = _rule_failures(
                template, {f"{component}Cpu": str(cpu), f"{component}Memory": str(memory)}
            )
            # THEN a pair is accepted exactly when Fargate runs it
            assert (failures == []) == (memory in FARGATE_SIZES[cpu]), (cpu, memory, failures)


def test_an_invalid_pair_is_refused_with_the_valid_choices(template: dict[str, Any]) -> None:
    # GIVEN 4096 CPU with 2048 MiB (the example that used to fail only on deploy)
    failures = _rule_failures(template, {"WorkerCpu": "4096", "WorkerMemory": "2048"})
    # THEN one rule fails, naming the parameters and the valid sizes
    assert len(failures) == 1
    assert "WorkerCpu/WorkerMemory" in failures[0]
    assert "4096 with" in failures[0]
    assert "8192-30720" in failures[0]


def test_vpc_cidr_accepts_exactly_the_prefixes_the_subnets_fit_in(template: dict[str, Any]) -> None:
    # GIVEN how the new VPC is cut: Fn::Cidr [VpcCidr, count, host bits]
    _, count, bits = template["Resources"]["PublicSubnet1"]["Properties"]["CidrBlock"]["Fn::Select"][1][
        "Fn::Cidr"
    ]
    parameter = template["Parameters"]["VpcCidr"]
    pattern = re.compile(parameter["AllowedPattern"])
    for prefix in range(8, 29):
        cidr = f"10.0.0.0/{prefix}"
        network = ipaddress.ip_network(cidr)
        subnet_prefix = network.max_prefixlen - int(bits)
        fits = prefix <= subnet_prefix and 2 ** (subnet_prefix - prefix) >= int(count)
        # THEN the parameter accepts a CIDR exactly when its subnets fit (and AWS allows the VPC
        # size: /16 is the largest)
        fits = fits and prefix >= 16
        assert bool(pattern.fullmatch(cidr)) == fits, cidr
    assert "/18" in parameter["ConstraintDescription"]


def test_db_storage_stays_below_the_autoscaling_maximum(template: dict[str, Any]) -> None:
    parameter = template["Parameters"]["DbAllocatedStorage"]
    maximum = template["Resources"]["Database"]["Properties"]["MaxAllocatedStorage"]
    # THEN the largest accepted size leaves RDS's 10 % headroom below MaxAllocatedStorage
    assert parameter["MaxValue"] * 1.1 <= maximum
    assert parameter["Default"] >= parameter["MinValue"]
    assert str(maximum) in parameter["ConstraintDescription"]


# ------------------------------------------------------------------ 6. default queue


def test_tasks_without_a_queue_go_to_the_first_worker_queue(template: dict[str, Any]) -> None:
    containers = list(rules.airflow_containers(template))
    assert containers
    first = worker_queues.load_queues(REPO_ROOT / "worker_queues.json")[0].name
    assert template["Mappings"]["WorkerQueues"]["Airflow"]["DefaultQueue"] == first
    for logical_id, _, container in containers:
        if rules._role(container) == "flower":
            continue  # Flower queues nothing and reads no DAG
        assert _env(container)["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] == {
            "Fn::FindInMap": ["WorkerQueues", "Airflow", "DefaultQueue"]
        }, logical_id


# ------------------------------------------------------------------ 7. release DAG bundle


def test_aws_reads_dags_through_the_same_release_bundle_as_the_local_runtime(
    template: dict[str, Any],
) -> None:
    for logical_id, _resource, container in rules.airflow_containers(template):
        if rules._role(container) == "flower":
            continue  # Flower reads no DAG
        env = _env(container)
        bundles = json.loads(env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"])
        target = bundles[0]["kwargs"]["target"]
        # THEN it is exactly what the local runtime configures, over the EFS mount point: the
        # release bundle's refresh reads one symlink, so it is checked every second (a pushed DAG
        # is visible in seconds, `make bench-visible`)
        refresh = AirflowEnvInputs.dag_bundle_refresh_s
        assert bundles == json.loads(dag_bundle_config(Path(target), refresh)), logical_id
        check = env["AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL"]
        assert check == str(BUNDLE_REFRESH_CHECK_INTERVAL_S), logical_id
        assert env["AIRFLOW__CORE__DAGS_FOLDER"] == f"{target}/current", logical_id
        # AND bundle versioning stays on: a DAG run is pinned to the release it was created with
        assert str(env.get("AIRFLOW__DAG_PROCESSOR__DISABLE_BUNDLE_VERSIONING", "False")).lower() == "false"
        mounts = [m["ContainerPath"] for m in container.get("MountPoints") or []]
        if mounts:
            assert mounts == [target], logical_id


# ------------------------------------------------------------------ 11. Fernet key lifetime


def test_fernet_key_outlives_the_stack_like_the_database_snapshot(template: dict[str, Any]) -> None:
    database = template["Resources"]["Database"]
    fernet = template["Resources"]["FernetKeySecret"]
    # GIVEN a database kept as a snapshot on deletion and on replacement
    assert database["DeletionPolicy"] == database["UpdateReplacePolicy"] == "Snapshot"
    # THEN the key that decrypts the snapshot's connections is kept in both cases too
    assert fernet["DeletionPolicy"] == "Retain"
    assert fernet["UpdateReplacePolicy"] == "Retain"


# ------------------------------------------------------------------ 13. sample DAG claims


def test_even_odd_claims_only_what_the_template_sets(template: dict[str, Any]) -> None:
    text = (REPO_ROOT / "dags" / "even_odd.py").read_text()
    variables = set(re.findall(r"SAMPLE_DAGS_ECS_[A-Z_]+", text))
    assert variables
    set_by_template = {
        name for _, _, container in rules.airflow_containers(template) for name in _env(container)
    }
    claims = re.search(r"the template sets them|set by the template|template.yaml sets", text)
    # THEN either the template sets every variable, or the DAG does not claim it does
    assert claims is None or variables <= set_by_template, sorted(variables - set_by_template)


# ------------------------------------------------------------------ wake-up on AWS


def test_scheduler_wakes_exactly_the_autoscaler(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    scheduler = resources["SchedulerTaskDefinition"]["Properties"]
    env = _env(scheduler["ContainerDefinitions"][0])
    autoscaler_name = resources["AutoscalerFunction"]["Properties"]["FunctionName"]
    # THEN the scheduler names the autoscaler function and watches every worker queue
    assert env["AUTOSCALER_WAKEUP_FUNCTION"] == autoscaler_name
    assert env["AUTOSCALER_WAKEUP_QUEUES"] == {"Fn::FindInMap": ["WorkerQueues", "Airflow", "Names"]}
    names = template["Mappings"]["WorkerQueues"]["Airflow"]["Names"].split(",")
    assert names == [q.name for q in worker_queues.load_queues(REPO_ROOT / "worker_queues.json")]
    # AND its own task role may invoke that one function and nothing else
    role_id = scheduler["TaskRoleArn"]["Fn::GetAtt"][0]
    invokes = [
        s for s in rules.role_statements(template, role_id) if "lambda:InvokeFunction" in json.dumps(s)
    ]
    assert len(invokes) == 1
    assert invokes[0]["Action"] == "lambda:InvokeFunction"
    expected = (
        "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:" + autoscaler_name["Fn::Sub"]
    )
    assert invokes[0]["Resource"] == {"Fn::Sub": expected}
    # AND it keeps everything the other components' task role allows
    shared = list(rules.role_statements(template, "TaskRole"))
    assert all(s in list(rules.role_statements(template, role_id)) for s in shared)
    # AND no other task definition's role may invoke a Lambda
    for logical_id, resource in rules.resources(template, "AWS::ECS::TaskDefinition"):
        if "TaskRoleArn" not in resource["Properties"]:
            continue  # no task role at all (Flower): no AWS permission
        other = resource["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
        if logical_id != "SchedulerTaskDefinition":
            assert other != role_id, logical_id
            assert "lambda:" not in json.dumps(list(rules.role_statements(template, other))), logical_id
