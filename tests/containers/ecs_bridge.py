"""A local ECS: moto's ECS stays the API, Docker runs the tasks, and the two are kept in step.

Why this design: the state machines (through the emulator's ECS integration) and the Lambdas
(through boto3) both talk to ECS's API. Keeping moto as that API means every caller stays
unchanged; only moto's *models* are wrapped, so what a caller reads back is what Docker runs:

- ``RunTask`` of a bridged task definition starts one container from the template's task
  definition (:class:`~tests.containers.taskdefs.ContainerSpec`), with the call's container
  overrides (command, environment). The moto task reads ``RUNNING`` while the container runs
  and ``STOPPED`` with the container's real exit code once it exits, so ``runTask.sync``
  waits for the real job and the state machine checks its real exit code. The task gets a
  ``startedAt`` (moto has none; the AwsEcsExecutor reads a stopped task without it as never
  started).
- ``StopTask`` of an unknown task raises ECS's ``InvalidParameterException`` ("The referenced
  task was not found."), which the AwsEcsExecutor's start-up health check expects; moto raises a
  bare exception (a 500 from its server). StopTask of a bridged task does not stop its container.
- ``UpdateService`` records the desired count (moto) and then reconciles: containers are
  started up to the desired count, each as a moto task of the service (``group`` =
  ``service:<name>``, so ``ListTasks(serviceName=...)`` finds it), or stopped down to it
  (``docker stop`` with the task definition's stop timeout, in the background, as ECS stops a
  task: SIGTERM, then SIGKILL). Only tasks without scale-in protection are stopped, newest
  first; protected ones keep running above the desired count, as ECS keeps them.
  ``DescribeServices`` reconciles again (an exited container is replaced, as ECS replaces a
  stopped task) and then writes Docker's truth into moto's service: ``runningCount`` = the
  containers that run (a stopping one still counts until it exits, as a task does until it is
  STOPPED), ``pendingCount`` = desired minus running, and one deployment whose
  ``rolloutState`` is ``COMPLETED`` only when exactly the desired number run, none is
  stopping, and every one is ``healthy`` under its own health check (ECS completes a
  deployment only when its tasks pass their container health checks).
- Every service task gets a :class:`TaskAgent`: the task metadata endpoint v4 and the task
  scale-in protection endpoint the ECS agent serves (``ECS_CONTAINER_METADATA_URI_V4``,
  ``ECS_AGENT_URI`` injected into its container), so the image's worker names itself after its
  task and its protection hook runs for real. ``UpdateTaskProtection``/``GetTaskProtection``
  (which moto lacks) are answered from the same state for the clients given to
  :meth:`EcsBridge.serve_task_protection` (tests/contract/ecs_task_protection.py).

What is not emulated: placement, task replacement on an ``unhealthy`` verdict (an unhealthy
container is reported, so the rollout never completes, but not replaced), task ENIs (host
networking: see tests/containers/docker.py), the agent for one-off tasks, protection expiry
other than by its date, and everything about ECS that is not one of the calls above (those
still answer from moto alone). Whether ECS also keeps a protected task when a plain
``UpdateService`` lowers the desired count is modelled as "kept" (AWS documents protection
against service scale-in; see README "Known gaps").
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from moto.ecs import models as ecs_models

from tests.containers.docker import ECS_DEFAULT_STOP_TIMEOUT_S, LABEL, LocalEcs, RunningContainer, docker
from tests.containers.taskdefs import ContainerSpec
from tests.contract.ecs_task_protection import TaskProtectionTable

# A .sync integration re-checks the task this often (real containers: no need to spin).
SYNC_CHECK_SECONDS = 1.0


@dataclass
class _Observed:
    running: bool
    health: str | None  # healthy | unhealthy | starting | None (no health check)
    exit_code: int | None


def _observe(names: list[str]) -> dict[str, _Observed]:
    """One ``docker inspect`` for many containers (a missing one reads as exited, no code)."""
    if not names:
        return {}
    proc = subprocess.run(
        ["docker", "inspect", "--format", "{{json .Name}} {{json .State}}", *names],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    seen: dict[str, _Observed] = {}
    for line in proc.stdout.splitlines():
        raw_name, _, raw_state = line.partition(" ")
        state = json.loads(raw_state)
        health = state.get("Health")
        seen[json.loads(raw_name).lstrip("/")] = _Observed(
            running=bool(state.get("Running")) or bool(state.get("Restarting")),
            health=str(health["Status"]) if isinstance(health, dict) else None,
            exit_code=None if state.get("Running") else int(state.get("ExitCode", 0)),
        )
    return {name: seen.get(name, _Observed(False, None, None)) for name in names}


class TaskAgent:
    """What the ECS agent serves one task: its task metadata endpoint v4
    (``ECS_CONTAINER_METADATA_URI_V4``: ``GET .../task`` answers the ``TaskARN``, from which the
    image names a worker ``worker-<task id>@host``) and its task scale-in protection endpoint
    (``ECS_AGENT_URI``).

    ``PUT/GET $ECS_AGENT_URI/task-protection/v1/state`` as the agent answers them (AWS "task
    scale-in protection endpoint"); the same state answers ``UpdateTaskProtection`` and
    ``GetTaskProtection`` (:class:`TaskProtectionTable` reads ``lock``/``enabled``/``expires``),
    as on ECS, where both change one task's protection.
    """

    def __init__(self, task_arn: str) -> None:
        self.task_arn = task_arn
        self.enabled = False
        self.expires: datetime | None = None
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, Any] | None]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/{self.task_arn.rsplit('/', 1)[-1]}"

    @property
    def metadata_uri(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v4/{self.task_arn.rsplit('/', 1)[-1]}"

    def env(self) -> dict[str, str]:
        """The variables the ECS agent injects into the task's containers."""
        return {"ECS_AGENT_URI": self.uri, "ECS_CONTAINER_METADATA_URI_V4": self.metadata_uri}

    def answer(self) -> dict[str, Any]:
        with self.lock:
            protection: dict[str, Any] = {"ProtectionEnabled": self.enabled, "TaskArn": self.task_arn}
            if self.expires is not None:
                protection["ExpirationDate"] = self.expires.isoformat().replace("+00:00", "Z")
        return {"protection": protection}

    def put(self, payload: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(("PUT", payload))
            self.enabled = bool(payload["ProtectionEnabled"])
            minutes = int(payload.get("ExpiresInMinutes", 120))
            self.expires = datetime.now(UTC) + timedelta(minutes=minutes) if self.enabled else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def _send(self) -> None:
                if self.path.endswith("/task-protection/v1/state"):
                    body = agent.answer()
                elif self.path.endswith("/task") and self.command == "GET":
                    body = {"TaskARN": agent.task_arn, "LaunchType": "FARGATE"}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.endswith("/task-protection/v1/state"):
                    with agent.lock:
                        agent.requests.append(("GET", None))
                self._send()

            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                agent.put(json.loads(self.rfile.read(length) or b"{}"))
                self._send()

        return Handler

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class _ServiceContainers:
    spec: ContainerSpec
    live: list[RunningContainer] = field(default_factory=list)
    stopping: list[RunningContainer] = field(default_factory=list)
    exited: list[tuple[str, int | None]] = field(default_factory=list)
    started: int = 0


@dataclass
class EcsBridge:
    """Docker follows moto's ECS for the bridged task definitions and services."""

    ecs: LocalEcs
    task_definitions: Mapping[str, ContainerSpec]  # task definition ARN -> container
    services: Mapping[str, ContainerSpec]  # service name -> container
    # Environment added to every container of one role (the command's first word): how a test
    # breaks a role for real (a wrong database URL, a wrong setting).
    role_env: dict[str, dict[str, str]] = field(default_factory=dict)
    tasks: dict[str, RunningContainer] = field(default_factory=dict)  # task id -> container
    task_models: dict[str, Any] = field(default_factory=dict)  # task id -> moto's task
    task_states: dict[str, _Observed] = field(default_factory=dict)
    service_containers: dict[str, _ServiceContainers] = field(default_factory=dict)
    container_tasks: dict[str, str] = field(default_factory=dict)  # service container -> task id
    agents: dict[str, TaskAgent] = field(default_factory=dict)  # task id -> its agent endpoint
    cluster: str = "airflow-test"
    lock: threading.RLock = field(default_factory=threading.RLock)
    _stoppers: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name, spec in self.services.items():
            self.service_containers[name] = _ServiceContainers(spec)
        # UpdateTaskProtection/GetTaskProtection (moto has neither) over the agents' state.
        self.protection = TaskProtectionTable(self.cluster)

    def serve_task_protection(self, client: Any) -> None:
        """Answer this ECS client's task protection calls from the tasks' agents."""
        if getattr(client, "_bridge_protection", None) is self.protection:
            return
        client.meta.events.register("before-call.ecs.GetTaskProtection", self.protection.get)
        client.meta.events.register("before-call.ecs.UpdateTaskProtection", self.protection.update)
        client._bridge_protection = self.protection

    def close(self) -> None:
        for agent in self.agents.values():
            agent.close()

    # -- one-off tasks ------------------------------------------------------------------------
    def start_task(self, task: Any) -> None:
        spec = self.task_definitions[task.task_definition_arn]
        command: list[str] | None = None
        env: dict[str, str] = {}
        for override in task.overrides.get("containerOverrides", []):
            if override.get("name") not in (None, spec.name):
                continue
            command = override.get("command") or command
            env.update({item["name"]: item["value"] for item in override.get("environment", [])})
        role = (command or list(spec.command) or [""])[0]
        env.update(self.role_env.get(role, {}))
        container = self.ecs.run(spec, suffix=f"-{task.id[:8]}", command=command, extra_env=env)
        # ECS reports when the task started (moto has no such field); the AwsEcsExecutor reads
        # a stopped task without it as one that never started.
        task.started_at = datetime.now(UTC)
        with self.lock:
            self.tasks[task.id] = container
            self.task_models[task.id] = task
            self.task_states[task.id] = _Observed(True, None, None)

    def refresh_tasks(self, task_ids: list[str]) -> None:
        """Read the containers of these tasks; a stopped one's exit code goes into moto's task
        before anything serializes it (its containers come before lastStatus in a response)."""
        with self.lock:
            wanted = [t for t in task_ids if t in self.tasks and self.task_states[t].running]
            observed = _observe([self.tasks[t].name for t in wanted])
            for task_id in wanted:
                state = observed[self.tasks[task_id].name]
                self.task_states[task_id] = state
                if not state.running:
                    task = self.task_models[task_id]
                    for container in task.containers:
                        container.exitCode = state.exit_code
                        container.last_status = "STOPPED"
                    task.desired_status = "STOPPED"
                    task.stopped_reason = task.stopped_reason or "Essential container in task exited"
                    task.stopped_at = datetime.now(UTC)

    def one_off_exit_codes(self) -> list[int | None]:
        """Exit code of every one-off task (RunTask) so far, oldest first (None: still running)."""
        with self.lock:
            services = set(self.container_tasks.values())
            return [state.exit_code for task_id, state in self.task_states.items() if task_id not in services]

    def task_status(self, task: Any) -> str | None:
        """moto's ``lastStatus`` for a bridged task (None: not bridged)."""
        with self.lock:
            state = self.task_states.get(task.id)
        if state is None:
            return None
        return "RUNNING" if state.running else "STOPPED"

    # -- services -----------------------------------------------------------------------------
    def reconcile(self, service: Any) -> None:
        entry = self.service_containers.get(service.name)
        if entry is None:
            return
        with self.lock:
            observed = _observe([c.name for c in entry.live + entry.stopping])
            for container in [c for c in entry.live if not observed[c.name].running]:
                entry.live.remove(container)
                entry.exited.append((container.name, observed[container.name].exit_code))
            entry.stopping = [c for c in entry.stopping if observed[c.name].running]
            for container in entry.live + entry.stopping:
                self._record_state(container, observed[container.name])
            desired = int(service.desired_count)
            # ECS stops only tasks without scale-in protection; newest first here.
            excess = len(entry.live) - desired
            for container in [c for c in reversed(entry.live) if not self._protected(c)][: max(0, excess)]:
                entry.live.remove(container)
                self._stop(entry, container)
            while len(entry.live) < desired:
                container = self._start_service_task(service, entry)
                entry.live.append(container)
                observed[container.name] = _Observed(True, "starting" if entry.spec.health else None, None)
            self._write_back(service, entry, observed)

    def _start_service_task(self, service: Any, entry: _ServiceContainers) -> RunningContainer:
        """A moto task of the service (so ListTasks and task protection see it), its agent
        endpoints, and its container with the variables the ECS agent injects."""
        backend = service._backend
        cluster = backend._get_cluster(service.cluster_name)
        task = ecs_models.Task(
            cluster,
            backend.describe_task_definition(service.task_definition),
            None,
            None,
            backend,
            group=f"service:{service.name}",
            launch_type="FARGATE",
            started_by=f"ecs-svc/{service.name}",
            networking_configuration=service.network_configuration,
        )
        backend.tasks.setdefault(cluster.name, {})[task.task_arn] = task
        agent = TaskAgent(task.task_arn)
        self.agents[task.id] = agent
        self.protection.agents[task.id] = agent
        entry.started += 1
        role = entry.spec.command[0] if entry.spec.command else ""
        container = self.ecs.run(
            entry.spec,
            suffix=f"-{entry.started}-{task.id[:6]}",
            extra_env={**agent.env(), **self.role_env.get(role, {})},
        )
        self.tasks[task.id] = container
        self.task_models[task.id] = task
        self.task_states[task.id] = _Observed(True, None, None)
        self.container_tasks[container.name] = task.id
        return container

    def _record_state(self, container: RunningContainer, state: _Observed) -> None:
        task_id = self.container_tasks.get(container.name)
        if task_id is None:
            return
        self.task_states[task_id] = state
        if not state.running:
            task = self.task_models[task_id]
            task.desired_status = "STOPPED"
            for model in task.containers:
                model.exitCode = state.exit_code
                model.last_status = "STOPPED"

    def _protected(self, container: RunningContainer) -> bool:
        task_id = self.container_tasks.get(container.name)
        if task_id is None:
            return False
        protected = self.protection.is_enabled(task_id)
        agent = self.agents[task_id]
        with agent.lock:
            expired = agent.expires is not None and agent.expires <= datetime.now(UTC)
        return protected and not expired

    def agent_of(self, container: RunningContainer) -> TaskAgent:
        return self.agents[self.container_tasks[container.name]]

    def service_task_ids(self, service_name: str) -> list[str]:
        """Ids of the service's tasks not yet stopped (what ListTasks answers)."""
        with self.lock:
            return [
                task_id
                for task_id, task in self.task_models.items()
                if task.group == f"service:{service_name}" and task.desired_status == "RUNNING"
            ]

    def _stop(self, entry: _ServiceContainers, container: RunningContainer) -> None:
        entry.stopping.append(container)
        task_id = self.container_tasks.get(container.name)
        if task_id is not None:
            self.task_models[task_id].desired_status = "STOPPED"
        timeout = entry.spec.stop_timeout or ECS_DEFAULT_STOP_TIMEOUT_S

        def stop() -> None:
            docker("stop", "-t", str(timeout), container.name, timeout=timeout + 60, check=False)

        thread = threading.Thread(target=stop, name=f"stop-{container.name}", daemon=True)
        thread.start()
        self._stoppers.append(thread)

    @staticmethod
    def _write_back(service: Any, entry: _ServiceContainers, observed: Mapping[str, _Observed]) -> None:
        running = sum(1 for c in entry.live + entry.stopping if observed[c.name].running)
        desired = int(service.desired_count)
        healthy = all(observed[c.name].health in (None, "healthy") for c in entry.live)
        complete = len(entry.live) == desired and not entry.stopping and healthy
        service.running_count = running
        service.pending_count = max(0, desired - running)
        for deployment in service.deployments[:1]:
            deployment.update(
                desiredCount=desired,
                runningCount=running,
                pendingCount=service.pending_count,
                rolloutState="COMPLETED" if complete else "IN_PROGRESS",
            )

    def containers_of(self, service_name: str) -> list[RunningContainer]:
        entry = self.service_containers[service_name]
        with self.lock:
            return list(entry.live + entry.stopping)

    def running_containers(self) -> list[str]:
        """Names of every running container this bridge started (services and tasks)."""
        label = f"{LABEL}={self.ecs.run_id}"
        return docker("ps", "--filter", f"label={label}", "--format", "{{.Names}}").split()

    def wait_stopped(self, timeout_s: float) -> None:
        for thread in list(self._stoppers):
            thread.join(timeout_s)
        self._stoppers = [t for t in self._stoppers if t.is_alive()]


class _Patches:
    def __init__(self) -> None:
        self._undo: list[tuple[Any, str, Any]] = []

    def set(self, target: Any, name: str, value: Any) -> None:
        self._undo.append((target, name, target.__dict__[name]))
        setattr(target, name, value)

    def undo(self) -> None:
        for target, name, value in reversed(self._undo):
            setattr(target, name, value)


def _stop_task() -> Any:
    """StopTask: ECS's answer for an unknown task (a known one is moto's alone: its container is
    not stopped)."""
    stop_task = ecs_models.EC2ContainerServiceBackend.stop_task

    def bridged_stop_task(self: Any, cluster_str: str, task_str: str, reason: str) -> Any:
        cluster = self._get_cluster(cluster_str)
        task_id = task_str.rsplit("/", 1)[-1]
        if not any(arn.endswith(task_id) for arn in self.tasks.get(cluster.name, {})):
            # ECS answers an unknown task with InvalidParameterException "The referenced task was
            # not found."; moto raises a bare Exception (HTTP 500 from its server). The
            # AwsEcsExecutor's start-up health check stops a made-up task id and needs ECS's answer.
            raise ecs_models.InvalidParameterException("The referenced task was not found.")
        return stop_task(self, cluster_str, task_str, reason)

    return bridged_stop_task


def _backend_wrappers(bridge: EcsBridge) -> dict[str, Any]:
    """moto's ECS backend methods, wrapped so Docker follows them and answers them."""
    backend_cls = ecs_models.EC2ContainerServiceBackend
    run_task, describe_tasks = backend_cls.run_task, backend_cls.describe_tasks
    update_service, describe_services = backend_cls.update_service, backend_cls.describe_services

    def bridged_run_task(self: Any, *args: Any, **kwargs: Any) -> Any:
        tasks = run_task(self, *args, **kwargs)
        for task in tasks:
            if task.task_definition_arn in bridge.task_definitions:
                bridge.start_task(task)
        return tasks

    def bridged_describe_tasks(self: Any, cluster_str: str, tasks: list[str]) -> Any:
        bridge.refresh_tasks([t.rsplit("/", 1)[-1] for t in tasks])
        return describe_tasks(self, cluster_str, tasks)

    list_tasks = backend_cls.list_tasks

    def bridged_list_tasks(
        self: Any,
        cluster_str: str | None = None,
        container_instance: str | None = None,
        family: str | None = None,
        started_by: str | None = None,
        service_name: str | None = None,
        desired_status: str | None = None,
    ) -> Any:
        # moto's ListTasks passes these positionally and ignores the service name: filter on it
        # here, as ECS does, or a drain reads every other service's tasks as unprotected workers.
        tasks = list_tasks(self, cluster_str, container_instance, family, started_by, None, desired_status)
        if not service_name:
            return tasks
        name = service_name.rsplit("/", 1)[-1]
        return [t for t in tasks if t.group == f"service:{name}"]

    def bridged_update_service(self: Any, service_properties: dict[str, Any]) -> Any:
        service = update_service(self, service_properties)
        bridge.reconcile(service)
        return service

    def bridged_describe_services(self: Any, cluster_str: str, names: list[str]) -> Any:
        services, failures = describe_services(self, cluster_str, names)
        for service in services:
            bridge.reconcile(service)
        return services, failures

    return {
        "run_task": bridged_run_task,
        "describe_tasks": bridged_describe_tasks,
        "update_service": bridged_update_service,
        "describe_services": bridged_describe_services,
        "list_tasks": bridged_list_tasks,
        "stop_task": _stop_task(),
    }


def _task_status(bridge: EcsBridge) -> property:
    """``Task.last_status``: a bridged task's comes from its container, others from moto."""
    status = ecs_models.Task.__dict__["last_status"]

    def get_status(task: Any) -> str:
        return bridge.task_status(task) or status.fget(task)

    def set_status(task: Any, value: str) -> None:
        if task.id not in bridge.tasks:
            status.fset(task, value)

    return property(get_status, set_status)


@contextlib.contextmanager
def bridged(bridge: EcsBridge) -> Iterator[EcsBridge]:
    """Wrap moto's ECS models (already running under ``emulated_aws``) for the bridge."""
    import importlib

    patches = _Patches()
    for name, wrapper in _backend_wrappers(bridge).items():
        patches.set(ecs_models.EC2ContainerServiceBackend, name, wrapper)
    patches.set(ecs_models.Task, "last_status", _task_status(bridge))
    callback = importlib.import_module(
        "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_callback"
    )
    patches.set(callback, "_DELAY_SECONDS_SYNC_CONDITION_CHECK", SYNC_CHECK_SECONDS)
    try:
        yield bridge
    finally:
        patches.undo()
        bridge.close()
