"""``afctl status``: each service's desired and running count, and the health document."""

from __future__ import annotations

from dataclasses import dataclass

from airflow_control_plane.local.airflow_env import ALL_SERVICES
from airflow_control_plane.local.autoscaler import read_decisions
from airflow_control_plane.local.ecs import LocalEcs
from airflow_control_plane.local.files import read_json
from airflow_control_plane.local.health import HealthVerdict, evaluate_health, fetch_health
from airflow_control_plane.local.protocol import ServiceState
from airflow_control_plane.local.runtime_state import RuntimeState
from airflow_control_plane.local.settings import LocalSettings


@dataclass(frozen=True)
class StatusReport:
    supervisor_running: bool
    services: tuple[ServiceState, ...]
    base_url: str | None
    health: HealthVerdict | None
    last_scaling: dict[str, object] | None = None  # the autoscaler's last logged decision


def collect_status(settings: LocalSettings) -> StatusReport:
    paths = settings.paths
    ecs = LocalEcs(paths)
    state = RuntimeState.load(paths) if paths.root.is_dir() else RuntimeState()
    base_url = f"http://{settings.api_host}:{state.api_port}" if state.api_port else None
    if not ecs.is_running():
        desired = read_json(paths.desired_counts) or {}
        services = tuple(
            ServiceState(n, int(desired.get(n, 0)), 0, 0, (), 0, None, int(desired.get(n, 0)) == 0)
            for n in ALL_SERVICES
        )
        return StatusReport(False, services, base_url, None)
    services = tuple(ecs.describe())
    health = evaluate_health(fetch_health(base_url)) if base_url else None
    last = read_decisions(paths, last=1)
    return StatusReport(True, services, base_url, health, last[-1] if last else None)


def render_status(report: StatusReport) -> list[str]:
    lines = [f"{'SERVICE':<14} {'DESIRED':>7} {'RUNNING':>7} {'STEADY':>6} {'RESTARTS':>8}  PIDS"]
    for s in report.services:
        lines.append(
            f"{s.name:<14} {s.desired:>7} {s.running:>7} {'yes' if s.steady else 'no':>6} {s.restarts:>8}  "
            + (",".join(str(p) for p in s.pids) or "-")
        )
        lines.extend(f"  waiting: {w}" for w in s.waiting)
    if not report.supervisor_running:
        lines.append("supervisor: not running (hibernated or never started)")
    elif report.health is not None:
        word = "healthy" if report.health.healthy else "unhealthy"
        lines.append(f"health: {word} ({report.health.reason}) at {report.base_url}")
    if report.supervisor_running and report.last_scaling is not None:
        d = report.last_scaling
        lines.append(
            f"autoscaler: last decision at {d.get('at')}: {d.get('action')} {d.get('current')} -> "
            f"{d.get('target')} ({d.get('reason')})"
        )
    return lines
