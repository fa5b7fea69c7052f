"""Run the template's containers with Docker the way ECS runs them (host networking only).

:class:`LocalEcs` starts one container per :class:`~tests.containers.taskdefs.ContainerSpec`:
the task definition's command, environment and secrets (resolved locally, passed through the
Docker client's environment so no secret value is ever on a command line), mounts (the EFS
volume is a host directory laid out as the access point's root), stop timeout (ECS's 30 s
default when the task definition sets none), health check (same command, interval, timeout,
retries and start period) and ``--cpus``/``--memory`` equal to the task's size.

Host networking is the only network here: every container shares 127.0.0.1, Cloud Map names
resolve to 127.0.0.1 (``--add-host``), and the ports each task would have on its own ENI (the
api-server's, the worker's and triggerer's log servers) get free ports on the shared host
(``env_overrides``, set by tests/containers/conftest.py); that is the one deliberate
difference from ECS.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.containers.taskdefs import ContainerSpec, resolve_secret

ECS_DEFAULT_STOP_TIMEOUT_S = 30
LABEL = "io.airflow-ecs.test-run"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def docker(*args: str, env: Mapping[str, str] | None = None, timeout: float = 120, check: bool = True) -> str:
    proc = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
        check=False,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {args[0]} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def engine_available() -> bool:
    try:
        docker("info", "--format", "{{.ServerVersion}}", timeout=20)
    except (RuntimeError, OSError, subprocess.TimeoutExpired):
        return False
    return True


# Fargate injects the task's region into every container (AWS_REGION, AWS_DEFAULT_REGION).
ECS_AGENT_ENV = {
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EXECUTION_ENV": "AWS_ECS_FARGATE",
}


@dataclass
class RunningContainer:
    name: str
    spec: ContainerSpec

    def inspect(self) -> dict[str, object]:
        data = json.loads(docker("inspect", self.name))
        assert isinstance(data, list)
        assert data
        first = data[0]
        assert isinstance(first, dict)
        return first

    def state(self) -> dict[str, object]:
        state = self.inspect()["State"]
        assert isinstance(state, dict)
        return state

    def health(self) -> str | None:
        health = self.state().get("Health")
        return str(health["Status"]) if isinstance(health, dict) else None

    def health_log(self) -> list[dict[str, object]]:
        health = self.state().get("Health")
        return list(health.get("Log", [])) if isinstance(health, dict) else []

    def logs(self) -> str:
        proc = subprocess.run(
            ["docker", "logs", self.name], capture_output=True, text=True, timeout=60, check=False
        )
        return proc.stdout + proc.stderr

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.state()
            if not state.get("Running"):
                code = state.get("ExitCode")
                raise AssertionError(
                    f"{self.name} exited with {code} before turning healthy:\n{self.logs()[-4000:]}"
                )
            status = self.health()
            if status == "healthy":
                return
            if status == "unhealthy":
                raise AssertionError(f"{self.name} is unhealthy: {self.health_log()}\n{self.logs()[-4000:]}")
            time.sleep(2)
        raise AssertionError(
            f"{self.name} not healthy within {timeout_s:.0f} s: {self.health_log()}\n{self.logs()[-4000:]}"
        )

    def wait_exit(self, timeout_s: float) -> int:
        out = docker("wait", self.name, timeout=timeout_s)
        return int(out.strip())

    def exec(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "exec", self.name, *argv], capture_output=True, text=True, timeout=timeout, check=False
        )


@dataclass
class LocalEcs:
    """Containers of one test run; :meth:`cleanup` removes every one of them."""

    secret_values: Mapping[str, str]
    dags_efs_root: Path  # host directory that stands for the EFS file system's root
    service_hosts: Sequence[str] = ()
    env_overrides: Mapping[str, str] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    started: list[RunningContainer] = field(default_factory=list)

    def container_env(self, spec: ContainerSpec) -> tuple[dict[str, str], dict[str, str]]:
        """(plain environment, secret environment) as ECS would inject them."""
        plain = dict(spec.environment)
        secret = {ref.name: resolve_secret(ref, self.secret_values) for ref in spec.secrets}
        overlap = set(plain) & set(secret)
        if overlap:
            raise ValueError(f"{spec.family}: {sorted(overlap)} set both as environment and as secret")
        # What the Fargate agent itself adds to every container (no task metadata endpoint here:
        # workers then use Celery's default node name).
        for name, value in ECS_AGENT_ENV.items():
            plain.setdefault(name, value)
        plain.update(self.env_overrides)
        return plain, secret

    def run(
        self,
        spec: ContainerSpec,
        *,
        suffix: str = "",
        command: Sequence[str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        health: bool = True,
    ) -> RunningContainer:
        name = f"afecs-{self.run_id}-{spec.name}{suffix}"
        plain, secret = self.container_env(spec)
        for key, value in (extra_env or {}).items():
            # An override of a secret replaces the secret's value (never put on a command line).
            (secret if key in secret else plain)[key] = value
        args = [
            "run",
            "--detach",
            "--name",
            name,
            "--label",
            f"{LABEL}={self.run_id}",
            "--network",
            "host",
            "--cpus",
            f"{spec.cpus:g}",
            "--memory",
            f"{spec.task_memory}m",
            "--stop-timeout",
            str(spec.stop_timeout or ECS_DEFAULT_STOP_TIMEOUT_S),
        ]
        for host in self.service_hosts:
            args += ["--add-host", f"{host}:127.0.0.1"]
        for key, value in plain.items():
            args += ["--env", f"{key}={value}"]
        for key in secret:
            args += ["--env", key]  # value from the client's environment: never on a command line
        for mount in spec.mounts:
            if mount.efs_root is None:
                raise ValueError(f"{spec.family}: only EFS volumes are laid out locally ({mount.volume})")
            source = self.dags_efs_root / mount.efs_root.lstrip("/")
            args += ["--volume", f"{source}:{mount.container_path}:{'ro' if mount.read_only else 'rw'}"]
        if spec.health is not None and health:
            args += [
                "--health-cmd",
                spec.health.shell_command(),
                "--health-interval",
                f"{spec.health.interval}s",
                "--health-timeout",
                f"{spec.health.timeout}s",
                "--health-retries",
                str(spec.health.retries),
                "--health-start-period",
                f"{spec.health.start_period}s",
            ]
        else:
            args += ["--no-healthcheck"]
        argv = list(spec.command if command is None else command)
        if spec.entry_point:
            # Docker's --entrypoint takes one program; the rest of ECS's EntryPoint goes before
            # the command, which is how ECS joins the two.
            args += ["--entrypoint", spec.entry_point[0]]
            argv = [*spec.entry_point[1:], *argv]
        args += [spec.image, *argv]
        docker(*args, env=secret)
        running = RunningContainer(name, spec)
        self.started.append(running)
        return running

    def cleanup(self) -> None:
        ids = docker("ps", "-aq", "--filter", f"label={LABEL}={self.run_id}", check=False).split()
        if ids:
            docker("rm", "-f", *ids, check=False, timeout=180)
        self.started.clear()
