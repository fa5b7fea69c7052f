"""Worker queues as a list: worker_queues.json -> the worker parts of template.yaml.

Each entry of worker_queues.json is one Celery queue served by its own ECS service that scales
to zero::

    {"queues": [
      {"id": "Worker1", "name": "default", "min": 0, "max": 4, "concurrency": 8,
       "cpu": 1024, "memory": 2048, "capacity_provider": "FARGATE_SPOT"},
      {"name": "reports", "max": 2, "concurrency": 4}]}

``id`` is the logical-id prefix of the queue's resources (``<id>TaskDefinition``,
``<id>Service``); it defaults to ``Worker`` + the queue name in CamelCase. Logical ids and the
service name (``<env>-worker-<name>``) depend only on ``id`` and ``name``, never on a setting,
so a resize updates the service in place. ``cpu``/``memory`` left out take the WorkerCpu /
WorkerMemory parameters. The first queue is Airflow's default queue.

template.yaml carries the rendered parts between marker comments
(``# generated:<block> >>>`` ... ``# generated:<block> <<<``); ``render`` rewrites them, and the
static checks refuse a template whose blocks differ from what its queue file renders. Why a
generated plain-CloudFormation template and not ``Fn::ForEach`` (AWS::LanguageExtensions): see
README "Worker queues".

    python -m airflow_control_plane.worker_queues [--check] [TEMPLATE [QUEUES]]
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from airflow_control_plane.errors import ConfigError

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,30}$")
ID_PATTERN = re.compile(r"^[A-Z][A-Za-z0-9]{0,40}$")
CAPACITY_PROVIDERS = ("FARGATE", "FARGATE_SPOT")
# Fargate CPU units -> valid memory (MiB).
FARGATE_SIZES: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
}
_KNOWN = {"id", "name", "min", "max", "concurrency", "cpu", "memory", "capacity_provider"}
MAX_WORKERS = 50


@dataclass(frozen=True)
class WorkerQueue:
    logical_id: str
    name: str
    min_workers: int
    max_workers: int
    concurrency: int
    cpu: int | None
    memory: int | None
    capacity_provider: str

    @property
    def task_definition_id(self) -> str:
        return f"{self.logical_id}TaskDefinition"

    @property
    def service_id(self) -> str:
        return f"{self.logical_id}Service"


def default_logical_id(name: str) -> str:
    return "Worker" + "".join(part.capitalize() for part in re.split(r"[-_]", name) if part)


def _int(entry: Mapping[str, object], key: str, where: str, default: int | None, low: int, high: int) -> int:
    raw = entry.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ConfigError(f"{where}: {key} must be an integer, got {raw!r}")
    if not low <= raw <= high:
        raise ConfigError(f"{where}: {key} must be between {low} and {high}, got {raw}")
    return raw


def _size(entry: Mapping[str, object], where: str) -> tuple[int | None, int | None]:
    cpu, memory = entry.get("cpu"), entry.get("memory")
    if cpu is None and memory is None:
        return None, None
    if not isinstance(cpu, int) or not isinstance(memory, int):
        raise ConfigError(f"{where}: give cpu and memory together as integers (or neither)")
    if memory not in FARGATE_SIZES.get(cpu, ()):
        valid = {c: f"{m[0]}-{m[-1]}" for c, m in FARGATE_SIZES.items()}
        raise ConfigError(f"{where}: Fargate cannot run cpu {cpu} with memory {memory}; valid: {valid}")
    return cpu, memory


def _entry(entry: object, index: int) -> WorkerQueue:
    where = f"worker queue #{index}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be an object")
    unknown = sorted(set(entry) - _KNOWN)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(_KNOWN)}")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ConfigError(f"{where}: name must match {NAME_PATTERN.pattern}, got {name!r}")
    where = f"worker queue {name!r}"
    logical_id = entry.get("id", default_logical_id(name))
    if not isinstance(logical_id, str) or not ID_PATTERN.match(logical_id):
        raise ConfigError(f"{where}: id must match {ID_PATTERN.pattern}, got {logical_id!r}")
    capacity = entry.get("capacity_provider", "FARGATE")
    if capacity not in CAPACITY_PROVIDERS:
        raise ConfigError(f"{where}: capacity_provider must be one of {CAPACITY_PROVIDERS}")
    cpu, memory = _size(entry, where)
    queue = WorkerQueue(
        logical_id=logical_id,
        name=name,
        min_workers=_int(entry, "min", where, 0, 0, MAX_WORKERS),
        max_workers=_int(entry, "max", where, 2, 0, MAX_WORKERS),
        concurrency=_int(entry, "concurrency", where, 4, 1, 64),
        cpu=cpu,
        memory=memory,
        capacity_provider=str(capacity),
    )
    if queue.min_workers > queue.max_workers:
        raise ConfigError(f"{where}: min ({queue.min_workers}) is greater than max ({queue.max_workers})")
    return queue


def parse_queues(text: str, *, source: str = "worker_queues.json") -> tuple[WorkerQueue, ...]:
    """The queue list, validated: at least one queue, unique names and ids."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source} is not JSON: {exc}") from exc
    entries = document.get("queues") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f'{source} must be {{"queues": [...]}} with at least one queue')
    queues = tuple(_entry(entry, index) for index, entry in enumerate(entries))
    for attribute in ("name", "logical_id"):
        values = [getattr(q, attribute) for q in queues]
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            raise ConfigError(f"{source}: duplicate queue {attribute}(s) {duplicates}")
    return queues


def load_queues(path: Path) -> tuple[WorkerQueue, ...]:
    return parse_queues(path.read_text(), source=str(path))


# ---------------------------------------------------------------------- rendering


# The results-only database of CeleryBroker=sqs (role and database of one name; the template's
# ResultBackendUrlSecret and db-migrate use the same name): what the entrypoint's
# AIRFLOW_CELERY_RESULTS_DATABASE tells a worker to accept as its result backend.
RESULTS_DATABASE_ENV = "AIRFLOW_CELERY_RESULTS_DATABASE"
RESULTS_DATABASE = "celery_results"


def _service_name(queue: WorkerQueue) -> str:
    return f"${{EnvironmentName}}-worker-{queue.name}"


def _resources(queue: WorkerQueue) -> list[str]:
    cpu = str(queue.cpu) if queue.cpu is not None else "!Ref WorkerCpu"
    memory = str(queue.memory) if queue.memory is not None else "!Ref WorkerMemory"
    return [
        f"# Queue {queue.name}: {queue.min_workers}-{queue.max_workers} workers of {queue.concurrency}"
        f" slots on {queue.capacity_provider}.",
        f"{queue.task_definition_id}:",
        "  Type: AWS::ECS::TaskDefinition",
        "  Properties:",
        f'    Family: !Sub "{_service_name(queue)}"',
        f"    Cpu: {cpu}",
        f"    Memory: {memory}",
        "    NetworkMode: awsvpc",
        "    RequiresCompatibilities: [FARGATE]",
        "    RuntimePlatform:",
        "      CpuArchitecture: X86_64",
        "      OperatingSystemFamily: LINUX",
        "    ExecutionRoleArn: !GetAtt TaskExecutionRole.Arn",
        "    TaskRoleArn: !GetAtt TaskRole.Arn",
        "    Volumes:",
        "      - Name: dags",
        "        EFSVolumeConfiguration:",
        "          FilesystemId: !Ref DagsFileSystem",
        "          TransitEncryption: ENABLED",
        "          AuthorizationConfig:",
        "            AccessPointId: !Ref DagsAccessPoint",
        "            IAM: ENABLED",
        "    ContainerDefinitions:",
        "      - Name: celery-worker",
        "        Image: !Ref AirflowImageUri",
        "        Essential: true",
        f'        Command: ["celery-worker", "--queues", "{queue.name}"]',
        "        StopTimeout: 120",
        "        HealthCheck:",
        '          Command: ["CMD", "python", "/opt/airflow-image/entrypoint.py", "healthcheck",'
        ' "celery-worker"]',
        "          Interval: 30",
        "          Timeout: 20",
        "          Retries: 5",
        "          StartPeriod: 180",
        "        MountPoints:",
        "          - SourceVolume: dags",
        "            ContainerPath: /opt/airflow/dags",
        "            ReadOnly: true",
        "        LogConfiguration:",
        "          LogDriver: awslogs",
        "          Options:",
        "            awslogs-group: !Ref AirflowLogGroup",
        "            awslogs-region: !Ref AWS::Region",
        f"            awslogs-stream-prefix: worker-{queue.name}",
        "        Environment:",
        "          - Name: AIRFLOW__CORE__EXECUTOR",
        "            Value: CeleryExecutor",
        '          # The broker\'s transport options (README "SQS broker"): with CeleryBroker=sqs,',
        "          # the region, kombu's queue names <env>-<queue> and SQS's longest visibility",
        "          # timeout (a task's message stays in flight, invisible to other workers, for up",
        "          # to 12 h until its worker acknowledges it); with Redis, Airflow's own default",
        "          # visibility timeout and two options the Redis transport ignores.",
        "          - Name: AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__REGION",
        "            Value: !Ref AWS::Region",
        "          - Name: AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__QUEUE_NAME_PREFIX",
        '            Value: !Sub "${EnvironmentName}-"',
        "          - Name: AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT",
        '            Value: !If [BrokerIsSqs, "43200", "86400"]',
        "          - Name: AIRFLOW__CORE__AUTH_MANAGER",
        "            Value: airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager",
        "          - Name: AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        '            Value: !Sub "http://api-server.${EnvironmentName}.airflow.internal:8080/execution/"',
        "          - Name: AIRFLOW__CORE__DAGS_FOLDER",
        "            Value: /opt/airflow/dags/current",
        "          - Name: AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST",
        '            Value: \'[{"name": "dags", "classpath": '
        '"airflow_control_plane.dagsync.airflow_bundle.ReleaseDagBundle", "kwargs": '
        '{"target": "/opt/airflow/dags", "refresh_interval": 1}}]\'',
        "          - Name: AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL",
        '            Value: "1"',
        "          - Name: AIRFLOW__OPERATORS__DEFAULT_QUEUE",
        "            Value: !FindInMap [WorkerQueues, Airflow, DefaultQueue]",
        "          - Name: AIRFLOW__CORE__LOAD_EXAMPLES",
        '            Value: "False"',
        "          - Name: AIRFLOW__LOGGING__REMOTE_LOGGING",
        '            Value: "True"',
        "          - Name: AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER",
        '            Value: !Sub "s3://${TaskLogsBucket}/logs"',
        "          - Name: AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID",
        "            Value: aws_default",
        "          - Name: AIRFLOW_CONN_AWS_DEFAULT",
        '            Value: !Sub \'{"conn_type": "aws", "extra": {"region_name": "${AWS::Region}"}}\'',
        "          - Name: PYTHONDONTWRITEBYTECODE",
        '            Value: "1"',
        "          - Name: AIRFLOW__CELERY__WORKER_CONCURRENCY",
        f'            Value: "{queue.concurrency}"',
        "          - Name: DUMB_INIT_SETSID",
        '            Value: "0"',
        "          # CeleryBroker=sqs: the result backend is the results-only database of this name",
        "          # (role and database); the entrypoint takes no other database backend. Empty (no",
        "          # database backend at all) with Redis.",
        f"          - Name: {RESULTS_DATABASE_ENV}",
        f'            Value: !If [BrokerIsSqs, {RESULTS_DATABASE}, ""]',
        "        # A worker runs DAG code: only the broker and the result backend (Redis, or the",
        "        # results-only database with CeleryBroker=sqs). It reaches Airflow through the Task",
        "        # Execution API; no metadata database, Fernet, JWT or API secret key (the entrypoint",
        "        # refuses to start a worker that carries one).",
        "        Secrets:",
        "          - Name: AIRFLOW__CELERY__BROKER_URL",
        "            ValueFrom: !Ref BrokerUrlSecret",
        "          - Name: AIRFLOW__CELERY__RESULT_BACKEND",
        "            ValueFrom: !Ref ResultBackendUrlSecret",
        f"{queue.service_id}:",
        "  Type: AWS::ECS::Service",
        "  Properties:",
        f'    ServiceName: !Sub "{_service_name(queue)}"',
        "    Cluster: !Ref Cluster",
        f"    TaskDefinition: !Ref {queue.task_definition_id}",
        f"    DesiredCount: !GetAtt ServiceCounts.{queue.logical_id}",
        f"    CapacityProviderStrategy: [{{ CapacityProvider: {queue.capacity_provider}, Weight: 1 }}]",
        "    PlatformVersion: LATEST",
        "    PropagateTags: SERVICE",
        "    EnableECSManagedTags: true",
        "    AvailabilityZoneRebalancing: DISABLED",
        "    DeploymentConfiguration:",
        "      MinimumHealthyPercent: 100",
        "      MaximumPercent: 200",
        "      DeploymentCircuitBreaker: { Enable: true, Rollback: true }",
        "    NetworkConfiguration:",
        "      AwsvpcConfiguration:",
        "        AssignPublicIp: DISABLED",
        "        SecurityGroups: [!Ref WorkerSecurityGroup]",
        "        Subnets: !If",
        "          - CreateVpc",
        "          - [!Ref PrivateSubnet1, !Ref PrivateSubnet2]",
        "          - [!Ref ExistingPrivateSubnet1Id, !Ref ExistingPrivateSubnet2Id]",
    ]


# The SQS broker option: SQS's longest visibility timeout (12 h). A task message stays in
# flight, invisible to other workers, until its worker acknowledges it at the task's end
# (Airflow acknowledges late): 12 h is how long a task runs before SQS may redeliver it.
SQS_VISIBILITY_TIMEOUT_S = 43200
SQS_MAX_RECEIVE_COUNT = 5


def _broker_queues(queue: WorkerQueue) -> list[str]:
    skip = (
        '      - { id: CKV_AWS_27, comment: "Encrypted at rest with SQS-managed SSE (SqsManagedSseEnabled);'
        " checkov's rule only recognises KmsMasterKeyId.\" }"
    )
    return [
        f"# Queue {queue.name} on the SQS broker (CeleryBroker=sqs): kombu's name <env>-<queue>.",
        f"{queue.logical_id}BrokerQueue:",
        "  Type: AWS::SQS::Queue",
        "  Condition: BrokerIsSqs",
        "  Metadata:",
        "    checkov:",
        "      skip:",
        skip,
        "  Properties:",
        f'    QueueName: !Sub "${{EnvironmentName}}-{queue.name}"',
        f"    VisibilityTimeout: {SQS_VISIBILITY_TIMEOUT_S}",
        "    MessageRetentionPeriod: 345600",
        "    ReceiveMessageWaitTimeSeconds: 10",
        "    SqsManagedSseEnabled: true",
        "    RedrivePolicy:",
        f"      deadLetterTargetArn: !GetAtt {queue.logical_id}BrokerDeadLetterQueue.Arn",
        f"      maxReceiveCount: {SQS_MAX_RECEIVE_COUNT}",
        f"{queue.logical_id}BrokerDeadLetterQueue:",
        "  Type: AWS::SQS::Queue",
        "  Condition: BrokerIsSqs",
        "  Metadata:",
        "    checkov:",
        "      skip:",
        skip,
        "  Properties:",
        f'    QueueName: !Sub "${{EnvironmentName}}-{queue.name}-dlq"',
        "    MessageRetentionPeriod: 1209600",
        "    SqsManagedSseEnabled: true",
    ]


def _autoscaler_queues(queues: Sequence[WorkerQueue]) -> list[str]:
    entries = ", ".join(
        f'{{"queue": "{q.name}", "service": "${{{q.service_id}.Name}}", "concurrency": {q.concurrency}, '
        f'"min": {q.min_workers}, "max": {q.max_workers}, "capacity_provider": "{q.capacity_provider}"}}'
        for q in queues
    )
    return [f"WORKER_QUEUES: !Sub '[{entries}]'"]


def _state_machine_services(queues: Sequence[WorkerQueue]) -> list[str]:
    entries = ", ".join(
        f"{{'queue': '{q.name}', 'serviceName': '${{{q.service_id}.Name}}', 'minimum': {q.min_workers}}}"
        for q in queues
    )
    return [f'WorkerServices: !Sub "[{entries}]"']


BLOCKS: dict[str, Callable[[Sequence[WorkerQueue]], list[str]]] = {
    "mappings": lambda qs: [
        "WorkerQueues:",
        "  Airflow:",
        f"    DefaultQueue: {qs[0].name}",
        f'    Names: "{",".join(q.name for q in qs)}"',
    ],
    "resources": lambda qs: [line for q in qs for line in _resources(q)],
    "broker-queues": lambda qs: [line for q in qs for line in _broker_queues(q)],
    "broker-queue-arns": lambda qs: [f"- !GetAtt {q.logical_id}BrokerQueue.Arn" for q in qs],
    "service-refs": lambda qs: [f"- !Ref {q.service_id}" for q in qs],
    "service-count-names": lambda qs: [f'{q.logical_id}: !Sub "{_service_name(q)}"' for q in qs],
    "service-count-task-definitions": lambda qs: [f"- !Ref {q.task_definition_id}" for q in qs],
    "service-count-settings": lambda qs: [
        f"- {q.logical_id} {q.name} {q.capacity_provider} {q.cpu or '-'} {q.memory or '-'}" for q in qs
    ],
    "autoscaler-queues": _autoscaler_queues,
    "state-machine-services": _state_machine_services,
}
_MARKER = re.compile(r"^(?P<indent> *)# generated:(?P<block>[a-z-]+) (?P<edge>>>>|<<<)\s*$")


def render(template_text: str, queues: Sequence[WorkerQueue]) -> str:
    """Replace every marked block of the template with its rendering for ``queues``."""
    out: list[str] = []
    open_block: tuple[str, str] | None = None
    for number, line in enumerate(template_text.splitlines(keepends=True), start=1):
        match = _MARKER.match(line.rstrip("\n"))
        if open_block is None:
            out.append(line)
            if match and match["edge"] == ">>>":
                if match["block"] not in BLOCKS:
                    raise ConfigError(f"line {number}: unknown generated block {match['block']!r}")
                open_block = (match["block"], match["indent"])
                out.extend(f"{match['indent']}{text}\n" for text in BLOCKS[match["block"]](queues))
            continue
        if match and match["edge"] == "<<<":
            if match["block"] != open_block[0]:
                raise ConfigError(f"line {number}: block {open_block[0]!r} closed by {match['block']!r}")
            out.append(line)
            open_block = None
    if open_block is not None:
        raise ConfigError(f"generated block {open_block[0]!r} is never closed")
    return "".join(out)


def drift(template_path: Path, queues_path: Path) -> list[str]:
    """Why the template's generated blocks differ from its queue file (empty: in sync)."""
    if not queues_path.is_file():
        return []
    text = template_path.read_text()
    if "# generated:" not in text:
        return []
    try:
        expected = render(text, load_queues(queues_path))
    except ConfigError as exc:
        return [str(exc)]
    if expected == text:
        return []
    return [f"{template_path.name}: worker blocks differ from {queues_path.name}; run `make worker-queues`"]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    paths = [a for a in args if a != "--check"]
    template = Path(paths[0]) if paths else Path("template.yaml")
    queues_file = Path(paths[1]) if len(paths) > 1 else template.parent / "worker_queues.json"
    try:
        rendered = render(template.read_text(), load_queues(queues_file))
    except ConfigError as exc:
        print(f"worker queues: {exc}", file=sys.stderr)
        return 2
    if check:
        problems = drift(template, queues_file)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    template.write_text(rendered)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
