"""Template rules: what sam validate, cfn-lint and checkov do not check.

Each rule takes the parsed SAM template (``tests.static.tools.load_template``) and the folder
it lives in, and returns human-readable violations (empty = the rule holds). The same rules
run on template.yaml (must hold) and on tests/fixtures/broken_template.yaml (each must fire).
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tests.static import code_env

Template = Mapping[str, Any]
Rule = Callable[[Template, Path], list[str]]

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_ROOT = REPO_ROOT / "functions" / "common"
ENTRYPOINT = REPO_ROOT / "airflow_image" / "entrypoint.py"
RUNTIME_SITE_PACKAGES = (
    Path(os.environ.get("AIRFLOW_RUNTIME_VENV", REPO_ROOT / ".venv")) / "lib" / "python3.11" / "site-packages"
)
IMAGE_PARAMETER = "AirflowImageUri"
# The secrets each Airflow role gets from Secrets Manager: exactly these, no more, no less, and
# the same ARN for a name wherever it appears. Workers run DAG code: they reach Airflow through
# the Task Execution API and hold only the broker and the result backend (Redis, or the
# results-only database with CeleryBroker=sqs). The one-off jobs hold what their command
# uses. (README "Security" explains each line.)
_CORE = frozenset(
    {
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CELERY__RESULT_BACKEND",
    }
)
ROLE_SECRETS: Mapping[str, frozenset[str]] = {
    "api-server": _CORE,
    "scheduler": _CORE,
    "dag-processor": _CORE,
    "triggerer": _CORE,
    "celery-worker": frozenset({"AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND"}),
    # With CeleryBroker=sqs db-migrate also gets the results-only role's password (a
    # conditional entry; the rules read both branches of an Fn::If).
    "db-migrate": frozenset(
        {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "AIRFLOW_READONLY_DB_PASSWORD",
            "AIRFLOW_CELERY_RESULTS_DB_PASSWORD",
        }
    ),
    "create-user": frozenset({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW_ADMIN_PASSWORD"}),
    # Optional roles: Flower reads the broker behind its basic auth; a task run by the
    # AwsEcsExecutor reaches Airflow through the Task Execution API with its own token only.
    "flower": frozenset(
        {"AIRFLOW__CELERY__BROKER_URL", "AIRFLOW_FLOWER_USERNAME", "AIRFLOW_FLOWER_PASSWORD"}
    ),
    "ecs-task": frozenset(),
}
AIRFLOW_SECRETS = _CORE
ADMIN_PASSWORD = "AIRFLOW_ADMIN_PASSWORD"
SECRET_LIKE_NAME = re.compile(
    r"(PASSWORD|PASSWD|SECRET|TOKEN|FERNET|PRIVATE_KEY|API_KEY|CREDENTIAL|SQL_ALCHEMY_CONN|BROKER_URL"
    r"|RESULT_BACKEND)",
    re.IGNORECASE,
)
# Names that hold a pointer to a secret, never the secret itself.
POINTER_SUFFIXES = ("_ARN", "_SECRET_ID", "_SECRET_NAME")
SECRET_LIKE_VALUE = re.compile(r"\{\{resolve:(secretsmanager|ssm-secure):|://[^/\s:@]*:[^/\s@]+@")
EFS_WRITE_ACTIONS = frozenset({"elasticfilesystem:clientwrite", "elasticfilesystem:clientrootaccess"})
WRITER_TAG = "airflow-dags-writer"


# ---------------------------------------------------------------------- helpers


def resources(template: Template, *types: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for logical_id, resource in (template.get("Resources") or {}).items():
        if isinstance(resource, dict) and resource.get("Type") in types:
            yield logical_id, resource


def props(resource: Mapping[str, Any]) -> dict[str, Any]:
    value = resource.get("Properties") or {}
    return value if isinstance(value, dict) else {}


def _ref(value: Any) -> str | None:
    """The logical id behind !Ref X or !GetAtt X.Arn, else None."""
    if isinstance(value, dict):
        if "Ref" in value and isinstance(value["Ref"], str):
            return value["Ref"]
        getatt = value.get("Fn::GetAtt")
        if isinstance(getatt, list) and getatt:
            return str(getatt[0])
        if isinstance(getatt, str):
            return getatt.split(".")[0]
    return None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def entries(value: Any) -> Iterator[dict[str, Any]]:
    """The items of a list property such as Environment or Secrets: an item that is an
    ``Fn::If`` counts with both branches (either may be deployed), ``AWS::NoValue`` with none."""
    for item in value or []:
        if isinstance(item, dict) and set(item) == {"Fn::If"}:
            _, yes, no = item["Fn::If"]
            yield from entries([branch for branch in (yes, no) if branch != {"Ref": "AWS::NoValue"}])
        elif isinstance(item, dict):
            yield item


def containers(template: Template) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for logical_id, resource in resources(template, "AWS::ECS::TaskDefinition"):
        for container in props(resource).get("ContainerDefinitions") or []:
            if isinstance(container, dict):
                yield logical_id, resource, container


def airflow_containers(template: Template) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for logical_id, resource, container in containers(template):
        if container.get("Image") == {"Ref": IMAGE_PARAMETER}:
            yield logical_id, resource, container


def _command(container: Mapping[str, Any]) -> list[Any]:
    command = container.get("Command") or []
    return command if isinstance(command, list) else [command]


def _role(container: Mapping[str, Any]) -> str:
    """The image role a container runs: the command's first word, or the last word of an entry
    point that ends in the role (the AwsEcsExecutor's command override replaces the command)."""
    command = _command(container)
    if command:
        return str(command[0])
    entry = container.get("EntryPoint") or []
    if isinstance(entry, list) and len(entry) >= 2 and str(entry[-2]).endswith("/entrypoint.py"):
        return str(entry[-1])
    return ""


def _is_worker(container: Mapping[str, Any]) -> bool:
    command = _command(container)
    return bool(command) and command[0] == "celery-worker"


def role_statements(template: Template, role_id: str) -> Iterator[dict[str, Any]]:
    role = (template.get("Resources") or {}).get(role_id) or {}
    for policy in props(role).get("Policies") or []:
        document = (policy or {}).get("PolicyDocument") or {}
        for statement in _as_list(document.get("Statement") or []):
            yield from _statements(statement)


def _statements(statement: Any) -> Iterator[dict[str, Any]]:
    """Statements, looking through Fn::If (both branches count: either may be deployed)."""
    if isinstance(statement, dict) and "Fn::If" in statement:
        for branch in statement["Fn::If"][1:]:
            yield from _statements(branch)
    elif isinstance(statement, dict) and statement.get("Effect") == "Allow":
        yield statement


def _actions(statement: Mapping[str, Any]) -> set[str]:
    return {str(a).lower() for a in _as_list(statement.get("Action") or [])}


def _grants(statement: Mapping[str, Any], action: str) -> bool:
    action = action.lower()
    service = action.split(":")[0]
    return any(a in (action, "*", f"{service}:*") for a in _actions(statement))


def function_env(template: Template, resource: Mapping[str, Any]) -> dict[str, Any]:
    globals_env = ((template.get("Globals") or {}).get("Function") or {}).get("Environment") or {}
    merged = dict(globals_env.get("Variables") or {})
    merged.update(((props(resource).get("Environment") or {}).get("Variables")) or {})
    return merged


def serverless_functions(template: Template) -> Iterator[tuple[str, dict[str, Any]]]:
    yield from resources(template, "AWS::Serverless::Function")


def _handler_file(base: Path, resource: Mapping[str, Any]) -> tuple[Path, str] | None:
    p = props(resource)
    code_uri, handler = p.get("CodeUri"), p.get("Handler")
    if not isinstance(code_uri, str) or not isinstance(handler, str) or "." not in handler:
        return None
    module, function = handler.rsplit(".", 1)
    return base / code_uri / (module.replace(".", "/") + ".py"), function


# ---------------------------------------------------------------------- rules


def secrets_only_through_secrets(template: Template, base: Path) -> list[str]:
    """No secret-like name or value in a container Environment or a Lambda environment."""
    found = []
    for logical_id, _, container in containers(template):
        for entry in entries(container.get("Environment")):
            name, value = str(entry.get("Name")), _key(entry.get("Value"))
            if SECRET_LIKE_NAME.search(name) or SECRET_LIKE_VALUE.search(value):
                found.append(f"{logical_id}/{container.get('Name')}: {name} looks secret; use Secrets")
    for logical_id, resource in serverless_functions(template):
        for name, value in function_env(template, resource).items():
            pointer = name.endswith(POINTER_SUFFIXES)
            if (SECRET_LIKE_NAME.search(name) and not pointer) or SECRET_LIKE_VALUE.search(_key(value)):
                found.append(f"{logical_id}: environment variable {name} looks secret; pass a secret ARN")
    return found


def secrets_by_role(template: Template, base: Path) -> list[str]:
    """Each Airflow container gets exactly its role's secrets (ROLE_SECRETS), one ARN per name."""
    found = []
    seen: dict[str, dict[str, str]] = {}
    airflow = list(airflow_containers(template))
    if not airflow:
        return ["no Airflow task definition (container image !Ref AirflowImageUri) found"]
    for logical_id, _, container in airflow:
        secrets = {str(s.get("Name")): _key(s.get("ValueFrom")) for s in entries(container.get("Secrets"))}
        role = _role(container)
        allowed = ROLE_SECRETS.get(role)
        if allowed is None:
            found.append(f"{logical_id}: unknown role {role!r}: no secret allow-list")
            continue
        missing, extra = sorted(allowed - set(secrets)), sorted(set(secrets) - allowed)
        if missing:
            found.append(f"{logical_id} ({role}): Secrets lacks {missing}")
        if extra:
            found.append(f"{logical_id} ({role}): Secrets has {extra}, which this role must not hold")
        for name, value_from in secrets.items():
            seen.setdefault(name, {})[logical_id] = value_from
    for name, by_task in sorted(seen.items()):
        if len(set(by_task.values())) > 1:
            found.append(f"{name} comes from different secrets: {by_task}")
    return found


def execution_role_is_not_task_role(template: Template, base: Path) -> list[str]:
    found = []
    for logical_id, resource in resources(template, "AWS::ECS::TaskDefinition"):
        p = props(resource)
        execution, task = p.get("ExecutionRoleArn"), p.get("TaskRoleArn")
        if execution is None:
            found.append(f"{logical_id}: needs an ExecutionRoleArn (and a separate TaskRoleArn, or none)")
        elif task is None:
            continue  # no task role: the task's code gets no AWS permission at all (Flower)
        elif _key(execution) == _key(task) or _ref(execution) == _ref(task):
            found.append(f"{logical_id}: the execution role is also the task role")
    return found


def _task_role_ids(template: Template) -> set[str]:
    ids = set()
    for _, resource in resources(template, "AWS::ECS::TaskDefinition"):
        for key in ("TaskRoleArn", "ExecutionRoleArn"):
            role = _ref(props(resource).get(key))
            if role:
                ids.add(role)
    return ids


def _volume_is_efs(resource: Mapping[str, Any], volume: str) -> dict[str, Any] | None:
    for entry in props(resource).get("Volumes") or []:
        if entry.get("Name") == volume and entry.get("EFSVolumeConfiguration"):
            config = entry["EFSVolumeConfiguration"]
            return config if isinstance(config, dict) else {}
    return None


def _role_tags(template: Template, role_id: str) -> dict[str, Any]:
    role = (template.get("Resources") or {}).get(role_id) or {}
    return {str(t.get("Key")): t.get("Value") for t in props(role).get("Tags") or []}


def _efs_mounts(template: Template) -> list[str]:
    found = []
    for logical_id, resource, container in containers(template):
        for mount in container.get("MountPoints") or []:
            config = _volume_is_efs(resource, str(mount.get("SourceVolume")))
            if config is None:
                continue
            where = f"{logical_id}/{container.get('Name')}"
            if mount.get("ReadOnly") is not True:
                found.append(f"{where}: EFS mount {mount.get('ContainerPath')} not ReadOnly")
            if config.get("TransitEncryption") != "ENABLED":
                found.append(f"{logical_id}: EFS volume without TransitEncryption ENABLED")
            if (config.get("AuthorizationConfig") or {}).get("IAM") != "ENABLED":
                found.append(f"{logical_id}: EFS volume without IAM authorization")
    return found


def _efs_writers(template: Template) -> list[str]:
    found = []
    for role_id in sorted(_task_role_ids(template)):
        for statement in role_statements(template, role_id):
            if any(_grants(statement, action) for action in EFS_WRITE_ACTIONS):
                found.append(f"{role_id}: an ECS role may write to EFS ({sorted(_actions(statement))})")
        if WRITER_TAG in _role_tags(template, role_id):
            found.append(f"{role_id}: an ECS role carries the {WRITER_TAG} tag")
    lambda_roles = {_ref(props(r).get("Role")) for _, r in serverless_functions(template)}
    for role_id, _ in resources(template, "AWS::IAM::Role"):
        if WRITER_TAG in _role_tags(template, role_id) and role_id not in lambda_roles:
            found.append(f"{role_id}: carries the {WRITER_TAG} tag but is no DAG-sync Lambda role")
    return found


def _denies_untagged_writes(statement: Mapping[str, Any]) -> bool:
    return (
        statement.get("Effect") == "Deny"
        and _actions(statement) >= EFS_WRITE_ACTIONS
        and f"aws:PrincipalTag/{WRITER_TAG}" in _key(statement.get("Condition"))
    )


def efs_read_only_except_sync(template: Template, base: Path) -> list[str]:
    """Airflow mounts DAGs read-only; no ECS role may write; the file system policy lets only
    the tagged DAG-sync roles write, and only Lambdas (the sync) carry that tag."""
    found = _efs_mounts(template) + _efs_writers(template)
    for logical_id, resource in resources(template, "AWS::EFS::FileSystem"):
        policy = props(resource).get("FileSystemPolicy") or {}
        if not any(_denies_untagged_writes(s) for s in _as_list(policy.get("Statement") or [])):
            found.append(
                f"{logical_id}: the file system policy must deny writes to all but {WRITER_TAG} roles"
            )
    return found


def _redis_encryption(template: Template) -> list[str]:
    found = []
    for logical_id, resource in resources(template, "AWS::ElastiCache::ReplicationGroup"):
        p = props(resource)
        for key in ("TransitEncryptionEnabled", "AtRestEncryptionEnabled"):
            if p.get(key) is not True:
                found.append(f"{logical_id}: Redis {key} is not true")
        if not p.get("AuthToken"):
            found.append(f"{logical_id}: Redis without an AUTH token")
    for logical_id, _ in resources(template, "AWS::ElastiCache::CacheCluster"):
        found.append(
            f"{logical_id}: use a ReplicationGroup (a CacheCluster cannot encrypt in transit with AUTH)"
        )
    return found


def encryption_everywhere(template: Template, base: Path) -> list[str]:
    found = _redis_encryption(template)
    for logical_id, resource in resources(template, "AWS::RDS::DBInstance"):
        if props(resource).get("StorageEncrypted") is not True:
            found.append(f"{logical_id}: RDS storage not encrypted")
        if props(resource).get("PubliclyAccessible") is not False:
            found.append(f"{logical_id}: RDS must set PubliclyAccessible false")
    for logical_id, resource in resources(template, "AWS::EFS::FileSystem"):
        if props(resource).get("Encrypted") is not True:
            found.append(f"{logical_id}: EFS not encrypted")
    for logical_id, resource in resources(template, "AWS::S3::Bucket"):
        if not (props(resource).get("BucketEncryption") or {}).get("ServerSideEncryptionConfiguration"):
            found.append(f"{logical_id}: S3 bucket without default encryption")
    return found + _messaging_and_logs_encryption(template)


def _messaging_and_logs_encryption(template: Template) -> list[str]:
    found = []
    for logical_id, resource in resources(template, "AWS::SQS::Queue"):
        p = props(resource)
        if not p.get("KmsMasterKeyId") and p.get("SqsManagedSseEnabled") is not True:
            found.append(f"{logical_id}: SQS queue without encryption at rest")
    for logical_id, resource in resources(template, "AWS::SNS::Topic", "AWS::Logs::LogGroup"):
        if not (props(resource).get("KmsMasterKeyId") or props(resource).get("KmsKeyId")):
            found.append(f"{logical_id}: not encrypted with the stack's key")
    return found


def database_protected(template: Template, base: Path) -> list[str]:
    found = []
    for logical_id, resource in resources(template, "AWS::RDS::DBInstance"):
        if resource.get("DeletionPolicy") != "Snapshot":
            found.append(f"{logical_id}: DeletionPolicy must be Snapshot")
        protection = props(resource).get("DeletionProtection")
        if protection is not True and protection != {"Fn::If": ["IsProduction", True, False]}:
            found.append(f"{logical_id}: DeletionProtection must be on (at least in production)")
        group = _ref(props(resource).get("DBParameterGroupName"))
        parameters = props((template.get("Resources") or {}).get(group or "", {})).get("Parameters") or {}
        if str(parameters.get("rds.force_ssl")) != "1":
            found.append(f"{logical_id}: its parameter group must set rds.force_ssl = 1")
    return found


def handlers_exist(template: Template, base: Path) -> list[str]:
    found = []
    for logical_id, resource in serverless_functions(template):
        located = _handler_file(base, resource)
        if located is None:
            found.append(f"{logical_id}: CodeUri and Handler (module.function) are required")
            continue
        path, function = located
        if not path.is_file():
            found.append(f"{logical_id}: handler file {path.relative_to(base)} does not exist")
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        if function not in names:
            found.append(f"{logical_id}: {path.relative_to(base)} defines no {function}()")
    return found


def _placeholders(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", text))


def definition_substitutions_match(template: Template, base: Path) -> list[str]:
    found = []
    for logical_id, resource in resources(template, "AWS::Serverless::StateMachine"):
        p = props(resource)
        uri = p.get("DefinitionUri")
        if not isinstance(uri, str) or not (base / uri).is_file():
            found.append(f"{logical_id}: DefinitionUri {uri!r} does not exist")
            continue
        used = _placeholders((base / uri).read_text())
        given = set((p.get("DefinitionSubstitutions") or {}).keys())
        if used - given:
            found.append(
                f"{logical_id}: {uri} uses ${{...}} with no DefinitionSubstitutions: {sorted(used - given)}"
            )
        if given - used:
            found.append(f"{logical_id}: DefinitionSubstitutions not used by {uri}: {sorted(given - used)}")
    return found


def lambda_environment_matches_code(template: Template, base: Path) -> list[str]:
    found = []
    for logical_id, resource in serverless_functions(template):
        located = _handler_file(base, resource)
        if located is None or not located[0].is_file():
            continue  # handlers_exist reports it
        reads = code_env.lambda_env_reads(located[0], PACKAGE_ROOT)
        given = set(function_env(template, resource))
        missing = sorted(reads.required - given)
        if missing:
            found.append(f"{logical_id}: the code requires {missing}, the template does not set them")
        ignored = sorted(
            name for name in given - reads.all if not name.startswith(code_env.POWERTOOLS_PREFIX)
        )
        if ignored:
            found.append(f"{logical_id}: the template sets {ignored}, the code never reads them")
    return found


def container_environment_is_read(template: Template, base: Path) -> list[str]:
    if not (RUNTIME_SITE_PACKAGES / "airflow").is_dir():
        return [f"the Airflow runtime environment is missing at {RUNTIME_SITE_PACKAGES}: run `make venvs`"]
    found = []
    hook_reads = code_env.celery_hook_reads(PACKAGE_ROOT)
    for logical_id, _, container in airflow_containers(template):
        names = [str(e.get("Name")) for e in entries(container.get("Environment"))]
        names += [str(s.get("Name")) for s in entries(container.get("Secrets"))]
        for name in names:
            problem = code_env.unknown_container_variable(name, RUNTIME_SITE_PACKAGES, ENTRYPOINT, hook_reads)
            if problem:
                found.append(f"{logical_id}: {problem}")
    return found


def workers_shut_down_gracefully(template: Template, base: Path) -> list[str]:
    found = []
    worker_tasks = set()
    for logical_id, _, container in airflow_containers(template):
        if not _is_worker(container):
            continue
        worker_tasks.add(logical_id)
        if container.get("StopTimeout") != 120:
            found.append(f"{logical_id}: workers need StopTimeout 120 (the Fargate maximum)")
        env = {str(e.get("Name")): e.get("Value") for e in entries(container.get("Environment"))}
        if env.get("DUMB_INIT_SETSID") != "0":
            found.append(f"{logical_id}: workers need DUMB_INIT_SETSID=0 for a warm shutdown")
    if not worker_tasks:
        found.append("no Celery worker task definition found")
    for logical_id, resource in resources(template, "AWS::ECS::Service"):
        rebalancing = props(resource).get("AvailabilityZoneRebalancing")
        if _ref(props(resource).get("TaskDefinition")) in worker_tasks and rebalancing != "DISABLED":
            found.append(f"{logical_id}: worker services need AvailabilityZoneRebalancing DISABLED")
    return found


def services_private_with_rollback(template: Template, base: Path) -> list[str]:
    found = []
    for logical_id, resource in resources(template, "AWS::ECS::Service"):
        p = props(resource)
        network = ((p.get("NetworkConfiguration") or {}).get("AwsvpcConfiguration")) or {}
        if network.get("AssignPublicIp") != "DISABLED":
            found.append(f"{logical_id}: AssignPublicIp must be DISABLED")
        breaker = ((p.get("DeploymentConfiguration") or {}).get("DeploymentCircuitBreaker")) or {}
        if breaker.get("Enable") is not True or breaker.get("Rollback") is not True:
            found.append(f"{logical_id}: the deployment circuit breaker with rollback must be on")
    return found


def execution_api_internal_only(template: Template, base: Path) -> list[str]:
    blocked: set[str] = set()
    for _, resource in resources(template, "AWS::ElasticLoadBalancingV2::ListenerRule"):
        p = props(resource)
        paths = [
            v for c in p.get("Conditions") or [] for v in (c.get("PathPatternConfig") or {}).get("Values", [])
        ]
        denies = any(
            a.get("Type") == "fixed-response"
            and str((a.get("FixedResponseConfig") or {}).get("StatusCode")) == "403"
            for a in p.get("Actions") or []
        )
        if denies and "/execution/*" in paths:
            blocked.add(_ref(p.get("ListenerArn")) or "")
    return [
        f"{logical_id}: no rule answers 403 on /execution/* (the Task Execution API is VPC-internal)"
        for logical_id, _ in resources(template, "AWS::ElasticLoadBalancingV2::Listener")
        if logical_id not in blocked
    ]


def _state_machine_roles(template: Template) -> set[str]:
    return {
        role
        for _, resource in resources(
            template, "AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine"
        )
        if (role := _ref(props(resource).get("Role") or props(resource).get("RoleArn")))
    }


def state_machine_least_privilege(template: Template, base: Path) -> list[str]:
    found = []
    ecs_roles = _task_role_ids(template)
    for role_id in sorted(_state_machine_roles(template)):
        for statement in role_statements(template, role_id):
            targets = _as_list(statement.get("Resource"))
            if _grants(statement, "iam:PassRole"):
                passed = {_ref(t) for t in targets}
                if not passed <= ecs_roles:
                    found.append(f"{role_id}: iam:PassRole beyond the task and execution roles: {targets}")
                if "ecs-tasks.amazonaws.com" not in _key(statement.get("Condition")):
                    found.append(f"{role_id}: iam:PassRole needs an iam:PassedToService ecs-tasks condition")
            if _grants(statement, "ecs:RunTask") and any(
                t == "*" or "task-definition/*" in _key(t) for t in targets
            ):
                found.append(f"{role_id}: ecs:RunTask must name our task definition families, not *")
    return found


def _function_roles(template: Template, handler_dir: str) -> set[str]:
    return {
        role
        for _, resource in serverless_functions(template)
        if str(props(resource).get("CodeUri", "")).rstrip("/").endswith(handler_dir)
        and (role := _ref(props(resource).get("Role")))
    }


def scaler_updates_workers_only(template: Template, base: Path) -> list[str]:
    worker_services = set()
    worker_tasks = {lid for lid, _, c in airflow_containers(template) if _is_worker(c)}
    for logical_id, resource in resources(template, "AWS::ECS::Service"):
        if _ref(props(resource).get("TaskDefinition")) in worker_tasks:
            worker_services.add(logical_id)
    found = []
    for role_id in sorted(_function_roles(template, "functions/autoscaler")):
        for statement in role_statements(template, role_id):
            if _grants(statement, "ecs:UpdateService"):
                raw = _flatten_if(statement.get("Resource"))
                if not {_ref(t) for t in raw} <= worker_services:
                    found.append(f"{role_id}: ecs:UpdateService beyond the worker services: {_key(raw)}")
    return found


def _flatten_if(value: Any) -> list[Any]:
    out = []
    for item in _as_list(value):
        if isinstance(item, dict) and "Fn::If" in item:
            out.extend(b for b in _flatten_if(item["Fn::If"][1:]) if b != {"Ref": "AWS::NoValue"})
        elif isinstance(item, list):
            out.extend(_flatten_if(item))
        else:
            out.append(item)
    return out


def secrets_readable_by_need(template: Template, base: Path) -> list[str]:
    found = []
    secret_ids = {lid for lid, _ in resources(template, "AWS::SecretsManager::Secret")}
    admin = {lid for lid in secret_ids if "Admin" in lid}
    executors = {
        _ref(props(r).get("ExecutionRoleArn")) for _, r in resources(template, "AWS::ECS::TaskDefinition")
    }
    for role_id, _ in resources(template, "AWS::IAM::Role"):
        for statement in role_statements(template, role_id):
            if not _grants(statement, "secretsmanager:GetSecretValue"):
                continue
            targets = _flatten_if(statement.get("Resource"))
            if any(t == "*" or (isinstance(t, str) and t.endswith(":*")) for t in targets):
                found.append(f"{role_id}: secretsmanager:GetSecretValue on every secret")
            readable = {_ref(t) for t in targets} & secret_ids
            if readable & admin and role_id not in executors:
                found.append(f"{role_id}: only the ECS execution role may read the admin password")
    return found


RULES: tuple[Rule, ...] = (
    secrets_only_through_secrets,
    secrets_by_role,
    execution_role_is_not_task_role,
    efs_read_only_except_sync,
    encryption_everywhere,
    database_protected,
    handlers_exist,
    definition_substitutions_match,
    lambda_environment_matches_code,
    container_environment_is_read,
    workers_shut_down_gracefully,
    services_private_with_rollback,
    execution_api_internal_only,
    state_machine_least_privilege,
    scaler_updates_workers_only,
    secrets_readable_by_need,
)


def all_violations(template: Template, base: Path) -> Iterator[str]:
    for rule in RULES:
        for violation in rule(template, base):
            yield f"{rule.__name__}: {violation}"
