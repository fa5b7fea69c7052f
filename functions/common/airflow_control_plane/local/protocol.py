"""The supervisor's control protocol and the service state it reports.

One JSON request line, one JSON response line, over the supervisor's unix socket:
``{"op": "describe"}``, ``{"op": "set_desired", "service": ..., "count": ...}``,
``{"op": "release_protection", "service": ..., "indices": [...]}``, ``{"op": "shutdown"}``.
Responses carry ``"ok"`` and either data or an ``"error"``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from airflow_control_plane.errors import ControlPlaneError


@dataclass(frozen=True)
class ServiceState:
    """One service as ECS DescribeServices would show it, plus the local process details."""

    name: str
    desired: int
    running: int
    stopping: int
    pids: tuple[int, ...]
    restarts: int
    last_exit_code: int | None
    steady: bool
    waiting: tuple[str, ...] = ()
    unprotected: tuple[int, ...] = ()  # slot indices whose scale-in protection was released

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["pids"] = list(self.pids)
        data["waiting"] = list(self.waiting)
        data["unprotected"] = list(self.unprotected)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServiceState:
        try:
            return cls(
                name=str(data["name"]),
                desired=int(data["desired"]),
                running=int(data["running"]),
                stopping=int(data["stopping"]),
                pids=tuple(int(p) for p in data["pids"]),
                restarts=int(data["restarts"]),
                last_exit_code=None if data["last_exit_code"] is None else int(data["last_exit_code"]),
                steady=bool(data["steady"]),
                waiting=tuple(str(w) for w in data.get("waiting", ())),
                unprotected=tuple(int(i) for i in data.get("unprotected", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ControlPlaneError(f"malformed service state from the supervisor: {data!r}") from exc
