"""The local ECS port: set a service's desired count, describe services.

:class:`ServiceControl` is the interface the bring-up, hibernate and (later) the worker
autoscaler use; :class:`LocalEcs` talks to the supervisor daemon over its unix socket and
:class:`InMemoryServices` is the fake for unit tests.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from airflow_control_plane.errors import ControlPlaneError, InvalidInputError, TransientError
from airflow_control_plane.local import proc
from airflow_control_plane.local.files import read_json
from airflow_control_plane.local.paths import StatePaths
from airflow_control_plane.local.protocol import ServiceState
from airflow_control_plane.poll import PollTimedOut, poll_done, poll_until


class ServiceControl(Protocol):
    def set_desired_count(self, service: str, count: int) -> None: ...

    def describe(self) -> list[ServiceState]: ...

    def release_protection(self, service: str, indices: list[int]) -> list[int]: ...


class SupervisorNotRunning(TransientError):
    """The local supervisor is not running (nothing is up)."""


class LocalEcs:
    """Client of the supervisor's control socket."""

    def __init__(self, paths: StatePaths, *, timeout_s: float = 10.0) -> None:
        self._paths = paths
        self._timeout_s = timeout_s

    def _call(self, request: Mapping[str, Any]) -> dict[str, Any]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self._timeout_s)
        try:
            sock.connect(str(self._paths.supervisor_socket))
            sock.sendall(json.dumps(dict(request)).encode() + b"\n")
            buffer = b""
            while not buffer.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buffer += chunk
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise SupervisorNotRunning(f"the local supervisor is not running ({exc.strerror})") from exc
        except OSError as exc:
            raise TransientError(f"the local supervisor did not answer: {exc}") from exc
        finally:
            sock.close()
        try:
            response = json.loads(buffer)
        except ValueError as exc:
            raise TransientError(f"the local supervisor sent a malformed answer: {buffer[:200]!r}") from exc
        if not isinstance(response, dict) or not response.get("ok"):
            error = response.get("error") if isinstance(response, dict) else response
            raise InvalidInputError(f"the local supervisor refused: {error}")
        return response

    def set_desired_count(self, service: str, count: int) -> None:
        self._call({"op": "set_desired", "service": service, "count": count})

    def describe(self) -> list[ServiceState]:
        return [ServiceState.from_json(s) for s in self._call({"op": "describe"})["services"]]

    def release_protection(self, service: str, indices: list[int]) -> list[int]:
        answer = self._call({"op": "release_protection", "service": service, "indices": indices})
        return [int(i) for i in answer.get("released", [])]

    def is_running(self) -> bool:
        try:
            self._call({"op": "describe"})
        except SupervisorNotRunning:
            return False
        return True

    def supervisor_pid(self) -> int | None:
        data = read_json(self._paths.supervisor_pid)
        pid = data.get("pid") if isinstance(data, dict) else None
        return pid if isinstance(pid, int) and proc.is_alive(pid) else None

    def shutdown(self, *, timeout_s: float, sleep: Callable[[float], None] = time.sleep) -> None:
        """Stop every service and the supervisor; wait (bounded) until it has exited."""
        pid = self.supervisor_pid()
        with contextlib.suppress(SupervisorNotRunning):
            self._call({"op": "shutdown"})
        if pid is None:
            return
        poll_done(
            lambda: not proc.is_alive(pid),
            timeout_s=timeout_s,
            interval_s=0.2,
            sleep=sleep,
        )
        if proc.is_alive(pid):
            proc.signal_group(pid, signal.SIGKILL)
            raise ControlPlaneError(
                f"the local supervisor (pid {pid}) did not stop within {timeout_s:.0f} s and was killed"
            )


def ensure_supervisor(paths: StatePaths, env: Mapping[str, str], *, timeout_s: float = 30.0) -> LocalEcs:
    """Start the supervisor daemon unless it already runs; return a client once it answers."""
    ecs = LocalEcs(paths)
    if ecs.is_running():
        return ecs
    stale = ecs.supervisor_pid()
    if stale is not None:
        raise ControlPlaneError(
            f"a supervisor (pid {stale}) owns {paths.root} but does not answer; run `afctl down` first"
        )
    with paths.supervisor_log.open("ab") as log_file:
        subprocess.Popen(
            [sys.executable, "-m", "airflow_control_plane.local.supervisor", "--state-dir", str(paths.root)],
            env=dict(env),
            cwd=paths.root,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives `afctl up`; not killed by the terminal's Ctrl-C
        )
    try:
        poll_until(ecs.is_running, timeout_s=timeout_s, interval_s=0.1, what="the local supervisor answers")
    except PollTimedOut:
        raise TransientError(
            f"the local supervisor did not start within {timeout_s:.0f} s; see {paths.supervisor_log}"
        ) from None
    return ecs


class InMemoryServices:
    """Fake :class:`ServiceControl`: processes 'run' as soon as their count is set."""

    def __init__(self, services: tuple[str, ...]) -> None:
        self.desired: dict[str, int] = dict.fromkeys(services, 0)
        self.calls: list[tuple[str, int]] = []
        self.released: dict[str, set[int]] = {}

    def set_desired_count(self, service: str, count: int) -> None:
        if service not in self.desired:
            raise InvalidInputError(f"unknown service {service!r}")
        self.desired[service] = count
        self.calls.append((service, count))

    def describe(self) -> list[ServiceState]:
        return [
            ServiceState(
                name,
                n,
                n,
                0,
                tuple(range(1000, 1000 + n)),
                0,
                None,
                True,
                unprotected=tuple(sorted(i for i in self.released.get(name, set()) if i < n)),
            )
            for name, n in self.desired.items()
        ]

    def release_protection(self, service: str, indices: list[int]) -> list[int]:
        self.released.setdefault(service, set()).update(indices)
        return sorted(indices)
