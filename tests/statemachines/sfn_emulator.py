"""Execute the state machines for real in moto's Step Functions interpreter.

moto 5.2.5 ships LocalStack's ASL interpreter with a few pieces left empty
(/work/shared/FIELD_NOTES.md). This helper fills exactly those pieces, the way LocalStack
does, and adds the knobs a test needs to play failures. Each patch says what it mirrors:

1. ``StateTaskService._normalise_parameters`` / ``_normalise_response``: convert between
   the PascalCase names of ASL integrations and boto3 member names, driven by the
   botocore operation model (request: match members case-insensitively, recursively
   through structures and lists; response: capitalise member names). Without it every
   ECS call fails with ``KeyError: 'Cluster'``.
2. JSONata: moto's ``_eval_jsonata`` is None (upstream uses a JVM); it is pointed at the
   pure-Python ``jsonata-python`` package. moto also writes string variables into the
   composed expression as ``"<raw>"`` without escaping; they are JSON-encoded instead.
   Integral floats in results are returned as ints, as JSON numbers are in AWS.
3. ECS optimised integration errors: AWS reports a RunTask that returned ``failures``
   and no task (a Fargate capacity shortage, for example) as ``ECS.AmazonECSException``,
   and service exceptions as ``ECS.<Name>``; moto turns both into ``States.Runtime``.
   The helper restores the AWS names so Retry/Catch are exercised as they would be.
4. Lambda without Docker: moto's simple Lambda backend echoes the payload or pops a result
   queued through moto's API (``/moto-api/static/lambda-simple/response``) and can never
   report a function error. The helper lets a test register the real handler for a
   function (run in-process, exceptions reported the way the Lambda runtime reports them:
   ``x-amz-function-error: Unhandled`` and ``{"errorType": <class name>, ...}``); queued
   results that are such error documents are reported as function errors too.
5. Time: Wait states and Retry intervals sleep for real in moto. A ``time_scale`` (default
   0) shortens every such sleep; the requested sleeps are recorded so tests can still
   check the backoff the definition asks for.
6. ECS knobs that moto lacks (each a plain change of moto's own models, not of the
   definition under test): ``fail_next_run_tasks`` makes RunTask answer with a
   ``failures`` entry and no task (the AWS answer to a capacity shortage);
   ``exit_code_for`` sets the exit code of the container of tasks whose command contains
   a string (moto always reports 0); ``stall_service`` keeps a service's running count at
   0 whatever its desired count (tasks that never start).

What stays different from AWS: no IAM evaluation, no real containers, ECS tasks stop
immediately, and a service's deployment never goes through IN_PROGRESS.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import sys
import threading
import time
import types
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import jsonata
import requests
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.core.responses import ActionResult
from moto.ecs import exceptions as ecs_exceptions
from moto.ecs import models as ecs_models
from moto.ecs import responses as ecs_responses
from moto.moto_api import state_manager
from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import CustomErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import FailureEvent
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
    state_task_service,
    state_task_service_ecs,
)
from moto.stepfunctions.parser.asl.component.state.wait.wait_function import wait_function
from moto.stepfunctions.parser.asl.eval import states as sfn_states
from moto.stepfunctions.parser.asl.eval import variable_store
from moto.stepfunctions.parser.asl.jsonata import jsonata as moto_jsonata
from moto.stepfunctions.parser.asl.utils.boto_client import boto_client_for
from moto.stepfunctions.parser.asl.utils.encoding import to_json_str
from moto.stepfunctions.parser.utils import camel_to_snake_case

REGION = "us-east-1"
ACCOUNT = "123456789012"
REPO_ROOT = Path(__file__).resolve().parents[2]
STATEMACHINES = REPO_ROOT / "statemachines"
MIGRATE_CONTAINER = "db-migrate"
CREATE_USER_CONTAINER = "create-user"
# Three worker services (one per queue), as the template has with every slot named.
WORKER_KEYS = ("worker", "worker-reports", "worker-heavy")
SERVICE_KEYS = ("api-server", "scheduler", "dag-processor", "triggerer", *WORKER_KEYS)
DESCRIBE_SERVICES_LIMIT = 10
CAPACITY_REASON = (
    "Capacity is unavailable at this time. Please try again later or in a different availability zone"
)

_ENV_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "POWERTOOLS_TRACE_DISABLED")
LambdaHandler = Callable[[dict[str, Any], Any], Any]


# --- 1. parameter and response normalisation (mirrors LocalStack's StateTaskService) ---------
@functools.lru_cache(maxsize=64)
def _operation_model(boto_service_name: str, action: str) -> Any:
    model = botocore.session.get_session().get_service_model(boto_service_name)
    names = {camel_to_snake_case(name): name for name in model.operation_names}
    operation = names.get(camel_to_snake_case(action))
    if operation is None:
        raise RuntimeError(f"no operation {action!r} in botocore service {boto_service_name!r}")
    return model.operation_model(operation)


def _normalise_parameters(
    self: Any,
    parameters: dict[str, Any],
    boto_service_name: str | None = None,
    service_action_name: str | None = None,
) -> None:
    service = self._get_boto_service_name(boto_service_name=boto_service_name)
    action = self._get_boto_service_action(service_action_name=service_action_name)
    shape = _operation_model(service, action).input_shape
    if shape is not None:
        self._to_boto_request(parameters, shape)


def _normalise_response(
    self: Any, response: Any, boto_service_name: str | None = None, service_action_name: str | None = None
) -> None:
    service = self._get_boto_service_name(boto_service_name=boto_service_name)
    action = self._get_boto_service_action(service_action_name=service_action_name)
    shape = _operation_model(service, action).output_shape
    if shape is not None:
        self._from_boto_response(response, shape)


# --- 2. JSONata through jsonata-python -----------------------------------------------------
def _json_numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_json_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_numbers(v) for k, v in value.items()}
    return value


def _eval_jsonata(expression: str) -> Any:
    try:
        result = jsonata.Jsonata(expression).evaluate(None)
    except Exception as exc:
        raise moto_jsonata.JSONataException("UNKNOWN", str(exc)) from exc
    if result is None:
        return None
    return _json_numbers(json.loads(json.dumps(result, default=list)))


def _encode_declarations(bindings: dict[str, Any]) -> str:
    return "".join(f"{ref}:={to_json_str(value, separators=(',', ':'))};" for ref, value in bindings.items())


# --- 3. ECS errors named as AWS names them -------------------------------------------------
class _RunTaskFailures(Exception):
    def __init__(self, failures: list[dict[str, Any]]) -> None:
        super().__init__(json.dumps(failures))
        self.failures = failures


def _ecs_failure(self: Any, env: Any, error: str, cause: str) -> FailureEvent:
    from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    return FailureEvent(
        env=env,
        error_name=CustomErrorName(error),
        event_type=HistoryEventType.TaskFailed,
        event_details=EventDetails(
            taskFailedEventDetails=TaskFailedEventDetails(
                error=error,
                cause=cause,
                resource=self._get_sfn_resource(),
                resourceType=self._get_sfn_resource_type(),
            )
        ),
    )


def _make_ecs_from_error(original: Callable[..., FailureEvent]) -> Callable[..., FailureEvent]:
    def _from_error(self: Any, env: Any, ex: Exception) -> FailureEvent:
        if isinstance(ex, _RunTaskFailures):
            cause = json.dumps({"Failures": ex.failures, "Tasks": []})
            return _ecs_failure(self, env, "ECS.AmazonECSException", cause)
        if isinstance(ex, ClientError):
            code = ex.response["Error"]["Code"]
            name = code if code.endswith("Exception") else f"{code}Exception"
            return _ecs_failure(self, env, f"ECS.{name}", ex.response["Error"].get("Message", code))
        return original(self, env, ex)

    return _from_error


def _make_ecs_eval(original: Callable[..., None]) -> Callable[..., None]:
    """moto's runTask path indexes ``Tasks[0]`` blindly; AWS fails the state on ``failures``."""

    def _eval_service_task(
        self: Any, env: Any, resource_runtime_part: Any, normalised_parameters: Any, state_credentials: Any
    ) -> None:
        if self._get_boto_service_action() != "run_task":
            original(self, env, resource_runtime_part, normalised_parameters, state_credentials)
            return
        client = boto_client_for(
            region=resource_runtime_part.region, service="ecs", state_credentials=state_credentials
        )
        response = client.run_task(**normalised_parameters)
        response.pop("ResponseMetadata", None)
        if not response.get("tasks"):
            raise _RunTaskFailures(response.get("failures", []))
        self._normalise_response(response=response, service_action_name="run_task")
        task = response["Tasks"][0]
        described = client.describe_tasks(cluster=task["ClusterArn"], tasks=[task["TaskArn"]])
        described.pop("ResponseMetadata", None)
        self._normalise_response(response=described, service_action_name="describe_tasks")
        env.stack.append(described)

    return _eval_service_task


@dataclass
class _Faults:
    run_task_failures: int = 0
    run_task_reason: str = CAPACITY_REASON
    exit_codes: list[tuple[str, int | None]] = field(default_factory=list)
    stalled_services: set[str] = field(default_factory=set)
    lambda_handlers: dict[str, LambdaHandler] = field(default_factory=dict)
    slept: list[tuple[str, float]] = field(default_factory=list)
    scales: dict[str, float] = field(default_factory=dict)  # "retry"/"wait" -> time scale
    describe_services_sizes: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


# --- 4. Lambda: real handlers in-process, function errors reported like the runtime ------
@dataclass(frozen=True)
class FakeLambdaContext:
    function_name: str
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = ""
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/emulated"
    log_stream_name: str = "emulated"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def invoke_like_lambda_runtime(
    handler: LambdaHandler, function_name: str, payload: bytes | str | None
) -> tuple[bytes, bool]:
    """Run ``handler`` as the Python Lambda runtime would: (response body, is_function_error)."""
    event = json.loads(payload) if payload else {}
    try:
        result = handler(event, FakeLambdaContext(function_name=function_name))
    except Exception as exc:
        error = {"errorType": type(exc).__name__, "errorMessage": str(exc), "stackTrace": []}
        return json.dumps(error).encode(), True
    return json.dumps(result).encode(), False


def _is_error_document(body: bytes) -> bool:
    try:
        document = json.loads(body)
    except ValueError:
        return False
    return isinstance(document, dict) and set(document) >= {"errorType", "errorMessage"}


@dataclass
class Execution:
    arn: str
    status: str
    output: Any
    error: str | None
    cause: str | None
    history: list[dict[str, Any]]

    @property
    def entered_states(self) -> list[str]:
        return [
            e["stateEnteredEventDetails"]["name"] for e in self.history if e["type"].endswith("StateEntered")
        ]

    @property
    def transitions(self) -> int:
        """States entered (Map iterations' states included)."""
        return len(self.entered_states)

    @property
    def retries(self) -> int:
        """Task attempts beyond the first of each state entry."""
        scheduled = sum(1 for e in self.history if e["type"] == "TaskScheduled")
        entered = sum(1 for e in self.history if e["type"] == "TaskStateEntered")
        return scheduled - entered

    @property
    def billed_transitions(self) -> int:
        """What Step Functions Standard bills: every state entered, and every retry."""
        return self.transitions + self.retries

    def failed_tasks(self) -> list[dict[str, Any]]:
        return [e["taskFailedEventDetails"] for e in self.history if e["type"] == "TaskFailed"]


class Emulator:
    """An emulated account: ECS, Lambda, EventBridge, SNS, SQS, Secrets Manager, Step Functions."""

    def __init__(self, faults: _Faults, time_scale: float) -> None:
        self.faults = faults
        self.time_scale = time_scale
        self.session = _SHARED_SESSION
        self.ecs = self.session.client("ecs")
        self.sfn = self.session.client("stepfunctions")
        self.sqs = self.session.client("sqs")
        self.substitutions: dict[str, str] = {}
        self.cluster = "airflow-test"
        self.service_names = {key: f"airflow-test-{key}" for key in SERVICE_KEYS}
        self._events_queue_url = ""
        self._service_template: dict[str, Any] = {}
        self._notifications_queue_url = ""

    # -- provisioning ---------------------------------------------------------------------
    def provision(self) -> dict[str, str]:
        """Create the resources both state machines address; return the substitutions."""
        ec2 = self.session.client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": True})
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24")["Subnet"]["SubnetId"]
        sg = ec2.create_security_group(GroupName="airflow-tasks", Description="tasks", VpcId=vpc)["GroupId"]
        iam = self.session.client("iam")
        role = iam.create_role(
            RoleName="emulated-role",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        secret = self.session.client("secretsmanager").create_secret(
            Name="airflow-test/admin-password", SecretString="not-used-by-the-state-machine"
        )["ARN"]
        self.ecs.create_cluster(clusterName=self.cluster)

        def one_off(container: str, secrets: list[dict[str, str]]) -> str:
            return str(
                self.ecs.register_task_definition(
                    family=f"airflow-test-{container}",
                    networkMode="awsvpc",
                    requiresCompatibilities=["FARGATE"],
                    cpu="512",
                    memory="1024",
                    executionRoleArn=role,
                    taskRoleArn=role,
                    containerDefinitions=[
                        {
                            "name": container,
                            "image": "airflow:test",
                            "cpu": 512,
                            "memory": 1024,
                            "essential": True,
                            "secrets": secrets,
                        }
                    ],
                )["taskDefinition"]["taskDefinitionArn"]
            )

        # As in template.yaml: only the create-user task definition carries the password.
        migrate_def = one_off(MIGRATE_CONTAINER, [])
        create_user_def = one_off(
            CREATE_USER_CONTAINER, [{"name": "AIRFLOW_ADMIN_PASSWORD", "valueFrom": secret}]
        )
        self._service_template = {
            "taskDefinition": migrate_def,  # the long-running services reuse one definition here
            "desiredCount": 0,
            "launchType": "FARGATE",
            "networkConfiguration": {"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [sg]}},
        }
        for name in self.service_names.values():
            self.ecs.create_service(cluster=self.cluster, serviceName=name, **self._service_template)
        functions = {
            fn: self._create_function(fn, role)
            for fn in ("bringup-validate", "health-gate", "drain-check", "autoscaler")
        }
        topic, bus = self._create_notifications()
        self.substitutions = {
            "ClusterArn": self.ecs.describe_clusters(clusters=[self.cluster])["clusters"][0]["clusterArn"],
            "MigrateTaskDefinitionArn": migrate_def,
            "MigrateContainerName": MIGRATE_CONTAINER,
            "CreateUserTaskDefinitionArn": create_user_def,
            "CreateUserContainerName": CREATE_USER_CONTAINER,
            "SubnetIds": subnet,
            "SecurityGroupId": sg,
            "ApiServerServiceName": self.service_names["api-server"],
            "SchedulerServiceName": self.service_names["scheduler"],
            "DagProcessorServiceName": self.service_names["dag-processor"],
            "TriggererServiceName": self.service_names["triggerer"],
            "WorkerServices": self.worker_services(),
            "AddOnServices": "[]",  # the default stack: no optional service (Flower off)
            "ValidateFunctionArn": functions["bringup-validate"],
            "HealthGateFunctionArn": functions["health-gate"],
            "DrainCheckFunctionArn": functions["drain-check"],
            "AutoscalerFunctionArn": functions["autoscaler"],
            "EventBusName": bus,
            "NotificationTopicArn": topic,
            "EnvironmentName": "airflow-test",
        }
        self._role = role
        return self.substitutions

    def _create_function(self, name: str, role: str) -> str:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("app.py", "def lambda_handler(event, context):\n    return event\n")
        return str(
            self.session.client("lambda").create_function(
                FunctionName=name,
                Runtime="python3.11",
                Role=role,
                Handler="app.lambda_handler",
                Code={"ZipFile": buffer.getvalue()},
            )["FunctionArn"]
        )

    def _create_notifications(self) -> tuple[str, str]:
        sns = self.session.client("sns")
        events = self.session.client("events")
        topic = sns.create_topic(Name="airflow-test-notifications")["TopicArn"]
        self._notifications_queue_url = self.sqs.create_queue(QueueName="notifications-tap")["QueueUrl"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=self._queue_arn(self._notifications_queue_url))
        bus = "airflow-test-bus"
        events.create_event_bus(Name=bus)
        self._events_queue_url = self.sqs.create_queue(QueueName="events-tap")["QueueUrl"]
        events.put_rule(
            Name="tap-all", EventBusName=bus, EventPattern=json.dumps({"source": [{"prefix": ""}]})
        )
        events.put_targets(
            Rule="tap-all",
            EventBusName=bus,
            Targets=[{"Id": "tap", "Arn": self._queue_arn(self._events_queue_url)}],
        )
        return topic, bus

    def _queue_arn(self, url: str) -> str:
        attrs = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attrs["Attributes"]["QueueArn"])

    # -- state machines -------------------------------------------------------------------
    def create_state_machine(self, file_name: str, overrides: dict[str, str] | None = None) -> str:
        definition = substitute(
            (STATEMACHINES / file_name).read_text(), {**self.substitutions, **(overrides or {})}
        )
        return str(
            self.sfn.create_state_machine(
                name=f"{Path(file_name).stem.split('.')[0]}-{uuid.uuid4().hex[:6]}",
                definition=definition,
                roleArn=self._role,
            )["stateMachineArn"]
        )

    def run(self, state_machine_arn: str, payload: object, timeout_seconds: float = 60.0) -> Execution:
        arn = self.sfn.start_execution(
            stateMachineArn=state_machine_arn, name=f"run-{uuid.uuid4().hex[:12]}", input=json.dumps(payload)
        )["executionArn"]
        deadline = time.monotonic() + timeout_seconds
        while True:
            description = self.sfn.describe_execution(executionArn=arn)
            if description["status"] != "RUNNING":
                break
            if time.monotonic() > deadline:
                self.sfn.stop_execution(executionArn=arn, error="EmulatorTimeout")
                raise AssertionError(f"execution {arn} still RUNNING after {timeout_seconds} s")
            time.sleep(0.05)
        history = self.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        output = json.loads(description["output"]) if description.get("output") else None
        return Execution(
            arn, description["status"], output, description.get("error"), description.get("cause"), history
        )

    # -- knobs ----------------------------------------------------------------------------
    def fail_next_run_tasks(self, count: int, reason: str = CAPACITY_REASON) -> None:
        self.faults.run_task_failures, self.faults.run_task_reason = count, reason

    def exit_code_for(self, command_contains: str, exit_code: int | None) -> None:
        """``None``: the container never ran (no exit code), as when a task fails to start."""
        self.faults.exit_codes.append((command_contains, exit_code))

    def stall_service(self, key: str) -> None:
        self.faults.stalled_services.add(self.service_names[key])

    def set_time_scale(self, kind: str, scale: float) -> None:
        """Scale the sleeps of one kind (``retry`` or ``wait``) from now on."""
        if kind not in ("retry", "wait") or scale < 0:
            raise ValueError(f"time scale: kind retry or wait and a scale >= 0, got {kind!r}, {scale}")
        with self.faults.lock:
            self.faults.scales[kind] = scale

    def register_lambda(self, function_name: str, handler: LambdaHandler) -> None:
        self.faults.lambda_handlers[function_name] = handler

    def queue_lambda_results(self, results: list[object]) -> None:
        """Queue raw results through moto's own API (used when no handler is registered)."""
        body = {"results": [r if isinstance(r, str) else json.dumps(r) for r in results], "region": REGION}
        response = requests.post(
            "http://motoapi.amazonaws.com/moto-api/static/lambda-simple/response", json=body, timeout=5
        )
        response.raise_for_status()

    def add_worker_services(self, keys: list[str]) -> None:
        """More worker services (one per queue) beside the three every test has."""
        for key in keys:
            self.service_names[key] = f"airflow-test-{key}"
            self.ecs.create_service(
                cluster=self.cluster, serviceName=self.service_names[key], **self._service_template
            )

    def worker_keys(self) -> list[str]:
        return [key for key in self.service_names if key.startswith("worker")]

    def worker_services(self, minimums: dict[str, int] | None = None, keys: list[str] | None = None) -> str:
        """The WorkerServices substitution, shaped as template.yaml composes it."""
        entries = [
            f"{{'queue': '{key.removeprefix('worker').removeprefix('-') or 'default'}', "
            f"'serviceName': '{self.service_names[key]}', 'minimum': {(minimums or {}).get(key, 0)}}}"
            for key in (WORKER_KEYS if keys is None else keys)
        ]
        return "[" + ", ".join(entries) + "]"

    def set_service_counts(self, key: str, desired: int) -> None:
        self.ecs.update_service(cluster=self.cluster, service=self.service_names[key], desiredCount=desired)

    def service_counts(self) -> dict[str, tuple[int, int]]:
        names = list(self.service_names.values())
        by_name = {}
        for start in range(0, len(names), DESCRIBE_SERVICES_LIMIT):
            chunk = names[start : start + DESCRIBE_SERVICES_LIMIT]
            for s in self.ecs.describe_services(cluster=self.cluster, services=chunk)["services"]:
                by_name[s["serviceName"]] = (s["desiredCount"], s["runningCount"])
        return {key: by_name[name] for key, name in self.service_names.items()}

    def one_off_commands(self) -> list[list[str]]:
        """The command of every one-off task started in the cluster, oldest first."""
        backend = ecs_models.ecs_backends[ACCOUNT][REGION]
        tasks = backend.tasks.get(self.cluster, {})
        commands = []
        for task in tasks.values():
            overrides = task.overrides.get("containerOverrides", [])
            commands.extend(o.get("command", []) for o in overrides)
        return commands

    def one_off_overrides(self) -> list[dict[str, Any]]:
        backend = ecs_models.ecs_backends[ACCOUNT][REGION]
        return [task.overrides for task in backend.tasks.get(self.cluster, {}).values()]

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body in self._drain(self._events_queue_url)]

    def notifications(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body in self._drain(self._notifications_queue_url)]

    def _drain(self, url: str) -> list[str]:
        bodies: list[str] = []
        while True:
            messages = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return bodies
            for message in messages:
                bodies.append(message["Body"])
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def substitute(definition: str, substitutions: dict[str, str]) -> str:
    """Apply ``${Key}`` DefinitionSubstitutions as SAM does; every placeholder must be known."""
    result = definition
    for key, value in substitutions.items():
        result = result.replace("${" + key + "}", value)
    leftover = sorted({part.split("}")[0] for part in result.split("${")[1:]})
    if leftover:
        raise AssertionError(f"unsubstituted placeholders: {leftover}")
    return result


# --- wiring the patches --------------------------------------------------------------------
class _Patches:
    def __init__(self) -> None:
        self._undo: list[tuple[Any, str, Any]] = []

    def set(self, target: Any, name: str, value: Any) -> None:
        self._undo.append((target, name, getattr(target, name)))
        setattr(target, name, value)

    def undo(self) -> None:
        for target, name, value in reversed(self._undo):
            setattr(target, name, value)


_BOTO_CLIENT_MODULES = (
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.lambda_eval_utils",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_events",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_ecs",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sns",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk",
)


# One botocore session for the whole test process: loading its JSON models dominates otherwise.
# Clients are safe to reuse across mock_aws starts (moto intercepts every client globally).
_SHARED_SESSION = boto3.Session(region_name=REGION)
_CLIENT_CACHE: dict[tuple[str, str], Any] = {}
_CLIENT_LOCK = threading.Lock()


def _install_client_cache(patches: _Patches) -> None:
    """moto builds a new boto3 session (reloading botocore's JSON models) for every call:
    reuse one client per (region, service) instead. Same endpoint and configuration."""
    import importlib

    from botocore.config import Config

    session, cache, lock = _SHARED_SESSION, _CLIENT_CACHE, _CLIENT_LOCK

    def cached_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        with lock:
            if (region, service) not in cache:
                cache[(region, service)] = session.client(
                    service,
                    region_name=region,
                    aws_access_key_id="ak",
                    aws_secret_access_key="sk",
                    config=Config(
                        parameter_validation=False, retries={"max_attempts": 0, "total_max_attempts": 1}
                    ),
                )
            return cache[(region, service)]

    for module_name in _BOTO_CLIENT_MODULES:
        patches.set(importlib.import_module(module_name), "boto_client_for", cached_client_for)
    patches.set(sys.modules[__name__], "boto_client_for", cached_client_for)
    callback = importlib.import_module(
        "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_callback"
    )
    # .sync integrations re-check every 0.5 s; tasks stop immediately here, so check sooner.
    patches.set(callback, "_DELAY_SECONDS_SYNC_CONDITION_CHECK", 0.02)


def _install(patches: _Patches, faults: _Faults, time_scale: float) -> None:
    _install_client_cache(patches)
    service = state_task_service.StateTaskService
    patches.set(service, "_normalise_parameters", _normalise_parameters)
    patches.set(service, "_normalise_response", _normalise_response)
    patches.set(moto_jsonata, "_eval_jsonata", _eval_jsonata)
    patches.set(sfn_states, "encode_jsonata_variable_declarations", _encode_declarations)
    patches.set(variable_store, "encode_jsonata_variable_declarations", _encode_declarations)
    ecs_task = state_task_service_ecs.StateTaskServiceEcs
    patches.set(ecs_task, "_from_error", _make_ecs_from_error(ecs_task._from_error))
    patches.set(ecs_task, "_eval_service_task", _make_ecs_eval(ecs_task._eval_service_task))
    _install_ecs(patches, faults)
    _install_lambda(patches, faults)
    _install_clock(patches, faults, time_scale)


def _install_ecs(patches: _Patches, faults: _Faults) -> None:
    original_response = ecs_responses.EC2ContainerServiceResponse.run_task

    def run_task_response(self: Any) -> Any:
        with faults.lock:
            fail = faults.run_task_failures > 0
            if fail:
                faults.run_task_failures -= 1
        if fail:
            return ActionResult({"tasks": [], "failures": [{"reason": faults.run_task_reason}]})
        return original_response(self)

    patches.set(ecs_responses.EC2ContainerServiceResponse, "run_task", run_task_response)
    _install_ecs_models(patches, faults)
    # The .sync integration polls DescribeTasks until STOPPED: make that immediate.
    state_manager.set_transition("ecs::task", {"progression": "immediate"})


def _install_ecs_models(patches: _Patches, faults: _Faults) -> None:
    backend_cls = ecs_models.EC2ContainerServiceBackend
    original_run = backend_cls.run_task

    def run_task(self: Any, *args: Any, **kwargs: Any) -> Any:
        tasks = original_run(self, *args, **kwargs)
        for task in tasks:
            command = " ".join(
                " ".join(o.get("command", [])) for o in task.overrides.get("containerOverrides", [])
            )
            for needle, code in faults.exit_codes:
                if needle in command:
                    for container in task.containers:
                        container.exitCode = code
                    task.stopped_reason = (
                        "Essential container in task exited"
                        if code is not None
                        else "CannotPullContainerError"
                    )
        return tasks

    patches.set(backend_cls, "run_task", run_task)

    original_update = backend_cls.update_service

    def update_service(self: Any, service_properties: dict[str, Any]) -> Any:
        service = original_update(self, service_properties)
        if service.name in faults.stalled_services:
            service.running_count = 0
            service.pending_count = service.desired_count
        return service

    patches.set(backend_cls, "update_service", update_service)
    original_describe = backend_cls.describe_services

    def describe_services(self: Any, cluster_str: str, service_names_or_arns: list[str]) -> Any:
        # As ECS: at most 10 services per call (moto itself takes any number).
        if len(service_names_or_arns) > DESCRIBE_SERVICES_LIMIT:
            raise ecs_exceptions.InvalidParameterException(
                f"services can have at most {DESCRIBE_SERVICES_LIMIT} items, got {len(service_names_or_arns)}"
            )
        with faults.lock:
            faults.describe_services_sizes.append(len(service_names_or_arns))
        return original_describe(self, cluster_str, service_names_or_arns)

    patches.set(backend_cls, "describe_services", describe_services)


def _install_lambda(patches: _Patches, faults: _Faults) -> None:
    original_invoke = LambdaSimpleBackend.invoke

    def invoke(
        self: Any, function_name: str, qualifier: Any, body: Any, headers: Any, response_headers: Any
    ) -> Any:
        name = function_name.split(":")[-1] if function_name.startswith("arn:") else function_name
        handler = faults.lambda_handlers.get(name)
        if handler is not None:
            result, is_error = invoke_like_lambda_runtime(handler, name, body)
        else:
            result = original_invoke(self, function_name, qualifier, body, headers, response_headers)
            is_error = _is_error_document(result)
        if is_error:
            response_headers["x-amz-function-error"] = "Unhandled"
        return result

    patches.set(LambdaSimpleBackend, "invoke", invoke)


def _install_clock(patches: _Patches, faults: _Faults, time_scale: float) -> None:
    def scaled(kind: str) -> Callable[[float], float]:
        def scale(seconds: float) -> float:
            with faults.lock:
                faults.slept.append((kind, float(seconds)))
                factor = faults.scales.get(kind, time_scale)
            return max(0.0, float(seconds) * factor)

        return scale

    retry_scale, wait_scale = scaled("retry"), scaled("wait")
    retry_time = types.SimpleNamespace(sleep=lambda s: time.sleep(retry_scale(s)), time=time.time)
    patches.set(retrier_decl, "time", retry_time)

    def _wait_interval(self: Any, env: Any, wait_seconds: int) -> None:
        if wait_seconds > 0:
            env.program_state_event.wait(wait_scale(wait_seconds))
        else:
            wait_scale(0)

    patches.set(wait_function.WaitFunction, "_wait_interval", _wait_interval)


@contextlib.contextmanager
def emulated_aws(time_scale: float = 0.0) -> Iterator[Emulator]:
    """Start moto (Step Functions executing, Lambda without Docker) with the fixes above."""
    saved_env = {k: os.environ.get(k) for k in _ENV_KEYS}
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "POWERTOOLS_TRACE_DISABLED": "true",
        }
    )
    faults = _Faults()
    patches = _Patches()
    mock = mock_aws(
        config={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
    )
    mock.start()
    try:
        _install(patches, faults, time_scale)
        emulator = Emulator(faults, time_scale)
        emulator.provision()
        yield emulator
    finally:
        patches.undo()
        state_manager.unset_transition("ecs::task")
        mock.stop()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def load_handler_module(function_dir: str) -> types.ModuleType:
    """Import functions/<function_dir>/app.py under a unique module name (every Lambda has an app.py)."""
    from tests.conftest import function_app

    return function_app(function_dir, f"lambda_app_{function_dir}", reuse=True)
