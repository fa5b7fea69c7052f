"""``afctl status``: each service's desired and running count, and the health document."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from airflow_control_plane.errors import ControlPlaneError
from airflow_control_plane.health import HealthVerdict, HttpHealthSource, NotHealthyYet, evaluate_health
from airflow_control_plane.local.airflow_env import ALL_SERVICES
from airflow_control_plane.local.autoscaler import read_decisions
from airflow_control_plane.local.dag_source import live_release, select_dag_source
from airflow_control_plane.local.ecs import LocalEcs
from airflow_control_plane.local.files import read_json
from airflow_control_plane.local.protocol import ServiceState
from airflow_control_plane.local.runtime_state import RuntimeState
from airflow_control_plane.local.settings import LocalSettings
from airflow_control_plane.local.sync_record import read_sync_record

STATUS_JSON_VERSION = 1  # bumped only when a key of ``StatusReport.to_dict`` is renamed or removed


def _without_password(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _broker(state: RuntimeState) -> str | None:
    """The broker the components use: the Redis URL, or the SQS queue prefix and endpoint."""
    if state.broker == "sqs" and state.sqs:
        where = state.sqs.get("endpoint_url") or f"AWS {state.sqs.get('region')}"
        return f"sqs ({where}, queues {state.sqs.get('queue_name_prefix')}*)"
    return _without_password(state.redis_url)


def _dags(settings: LocalSettings) -> tuple[str, str | None]:
    """(where DAGs come from, the live release); never fails the status."""
    try:
        source = select_dag_source(
            os.environ, default_folder=settings.dags_folder, state_root=settings.paths.root
        )
        return source.reason, live_release(source)
    except ControlPlaneError as exc:
        return f"unknown ({exc})", None


@dataclass(frozen=True)
class StatusReport:
    supervisor_running: bool
    services: tuple[ServiceState, ...]
    base_url: str | None
    health: HealthVerdict | None
    last_scaling: dict[str, object] | None = None  # the autoscaler's last logged decision
    dag_source: str = ""  # where DAGs come from (git sync or a folder)
    live_release: str | None = None  # the release Airflow reads (git mode)
    last_sync: dict[str, Any] | None = None
    last_refused_sync: dict[str, Any] | None = None
    database: str | None = None
    broker: str | None = None
    components: dict[str, str] | None = None  # each component's status in the health document

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data: the documented ``afctl status --json`` shape.

        Every key is always present (``null`` when unknown); fields are only ever added, and
        ``version`` changes if one is renamed or removed. README: "afctl status --json".
        """
        return {
            "version": STATUS_JSON_VERSION,
            "supervisor_running": self.supervisor_running,
            "services": [
                {
                    "name": s.name,
                    "desired": s.desired,
                    "running": s.running,
                    "stopping": s.stopping,
                    "steady": s.steady,
                    "restarts": s.restarts,
                    "pids": list(s.pids),
                    "last_exit_code": s.last_exit_code,
                    "waiting": list(s.waiting),
                }
                for s in self.services
            ],
            "base_url": self.base_url,
            "health": None if self.health is None else self._health_dict(),
            "components": None if self.components is None else dict(self.components),
            "dag_source": self.dag_source,
            "live_release": self.live_release,
            "last_sync": self.last_sync,
            "last_refused_sync": self.last_refused_sync,
            "database": self.database,
            "broker": self.broker,
            "last_scaling": self.last_scaling,
        }

    def _health_dict(self) -> dict[str, Any]:
        assert self.health is not None
        return {"healthy": self.health.healthy, "reason": self.health.reason}


def collect_status(settings: LocalSettings) -> StatusReport:
    paths = settings.paths
    ecs = LocalEcs(paths)
    state = RuntimeState.load(paths) if paths.root.is_dir() else RuntimeState()
    base_url = f"http://{settings.api_host}:{state.api_port}" if state.api_port else None
    source, release = _dags(settings)
    record = read_sync_record(paths)
    extra: dict[str, Any] = {
        "dag_source": source,
        "live_release": release,
        "last_sync": record.get("last"),
        "last_refused_sync": record.get("last_refused"),
        "database": _without_password(state.database_url),
        "broker": _broker(state),
    }
    if not ecs.is_running():
        desired = read_json(paths.desired_counts) or {}
        services = tuple(
            ServiceState(n, int(desired.get(n, 0)), 0, 0, (), 0, None, int(desired.get(n, 0)) == 0)
            for n in ALL_SERVICES
        )
        return StatusReport(False, services, base_url, None, **extra)
    services = tuple(ecs.describe())
    payload: object = None
    health: HealthVerdict | None = None
    if base_url:
        try:
            payload = HttpHealthSource(base_url).fetch()
            health = evaluate_health(payload)
        except NotHealthyYet as exc:
            health = HealthVerdict(False, {}, str(exc))
    if isinstance(payload, dict):
        extra["components"] = {
            str(name): str(entry.get("status")) for name, entry in payload.items() if isinstance(entry, dict)
        }
    last = read_decisions(paths, last=1)
    return StatusReport(True, services, base_url, health, last[-1] if last else None, **extra)


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
    if report.components:
        lines.extend(f"  {name}: {status}" for name, status in sorted(report.components.items()))
    lines.append(f"dags: {report.dag_source}")
    lines.append(f"  live release: {report.live_release or 'none'}")
    if report.last_sync:
        d = report.last_sync
        lines.append(f"  last sync at {d.get('at')}: {d.get('action')} ({d.get('reason')})")
    if report.last_refused_sync and report.last_refused_sync != report.last_sync:
        d = report.last_refused_sync
        lines.append(f"  last refused sync at {d.get('at')}: {d.get('action')} ({d.get('reason')})")
    if report.database:
        lines.append(f"database: {report.database}; broker: {report.broker}")
    if report.supervisor_running and report.last_scaling is not None:
        d = report.last_scaling
        lines.append(
            f"autoscaler: last decision at {d.get('at')}: {d.get('action')} {d.get('current')} -> "
            f"{d.get('target')} ({d.get('reason')})"
        )
    return lines
