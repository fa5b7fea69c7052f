"""The local worker autoscaler: the same policy as the Lambda, every few seconds, with local adapters.

Run by the supervisor as the ``autoscaler`` service: ``python -m
airflow_control_plane.local.autoscaler`` (this package's ``__main__``, the command line of
``afctl autoscale --local``; the library here never imports the command). Each tick
evaluates :func:`airflow_control_plane.scaling.service.evaluate` with:

- demand: ``PgDemandReader`` on the local metadata database;
- broker depth: ``RedisQueueDepth`` on the local Redis, or ``SqsQueueDepth`` with the SQS
  broker (``AFCTL_BROKER=sqs``), as the Lambda with ``BROKER_TRANSPORT=sqs``;
- workers' busy counts and the drain: ``KombuWorkerControl`` on the broker (on SQS it reports
  Celery remote control unavailable, so no worker is drained: README "SQS broker");
- workers: :class:`LocalWorkerServices` (the supervisor's ``worker`` service);
- idle clock: ``JsonFileStore`` at ``run/scale-memory.json``;
- hibernation: ``FileFlag`` at ``run/hibernated``, written by ``afctl down`` before anything
  stops and removed by ``afctl up`` before the autoscaler starts;

and appends one JSON line per decision (with its reason) to ``logs/autoscaler.jsonl``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow_control_plane.errors import ConfigError, ControlPlaneError
from airflow_control_plane.local.airflow_env import WORKER_SERVICE, ServiceSpec
from airflow_control_plane.local.ecs import LocalEcs, ServiceControl
from airflow_control_plane.local.paths import StatePaths
from airflow_control_plane.local.runtime_state import RuntimeState
from airflow_control_plane.local.settings import LocalSettings
from airflow_control_plane.local.sqs_broker import SqsBroker
from airflow_control_plane.local.worker_services import LocalWorkerServices
from airflow_control_plane.poll import poll_done
from airflow_control_plane.scaling.broker import BrokerDepth, RedisQueueDepth
from airflow_control_plane.scaling.config import QueueScaling
from airflow_control_plane.scaling.demand import PgDemandReader
from airflow_control_plane.scaling.drain import KombuWorkerControl
from airflow_control_plane.scaling.events import RecordingPublisher
from airflow_control_plane.scaling.hibernation import FileFlag
from airflow_control_plane.scaling.memory import JsonFileStore
from airflow_control_plane.scaling.service import ScalingPorts, ScalingRun, evaluate

AUTOSCALER_SERVICE = "autoscaler"
MAX_LOG_BYTES = 5_000_000  # about 6,000 decisions (8 h at 5 s) before the log rotates
DEFAULT_QUEUE = "default"  # the Celery queue local workers consume (Airflow's [celery] default_queue)


def hibernation_flag(paths: StatePaths) -> Path:
    return paths.run / "hibernated"


def memory_file(paths: StatePaths) -> Path:
    return paths.run / "scale-memory.json"


def decisions_log(paths: StatePaths) -> Path:
    return paths.logs / "autoscaler.jsonl"


@dataclass(frozen=True)
class AutoscalerSettings:
    """What ``up`` hands the autoscaler service on its command line."""

    state_dir: Path
    interval_s: float
    idle_s: int
    min_workers: int
    max_workers: int
    concurrency: int
    queue: str = DEFAULT_QUEUE
    prewarm_s: int = 0  # scheduled DAG runs due within this lead time get their workers

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ConfigError(f"autoscaler interval must be > 0 s, got {self.interval_s}")
        if not 0 <= self.min_workers <= self.max_workers:
            raise ConfigError(
                f"workers min ({self.min_workers}) must be between 0 and max ({self.max_workers}) "
                "(AFCTL_WORKERS_MIN, AFCTL_WORKERS_MAX)"
            )
        if self.concurrency < 1 or self.idle_s < 0 or self.prewarm_s < 0:
            raise ConfigError("worker concurrency must be >= 1, the idle period and pre-warm >= 0 s")

    @property
    def scaling(self) -> QueueScaling:
        return QueueScaling(
            queue=self.queue,
            service=WORKER_SERVICE,
            concurrency=self.concurrency,
            min_workers=self.min_workers,
            max_workers=self.max_workers,
            idle_seconds=self.idle_s,
            prewarm_seconds=self.prewarm_s,
        )

    def argv(self, python: str) -> tuple[str, ...]:
        return (
            python, "-m", "airflow_control_plane.local.autoscaler",
            "--state-dir", str(self.state_dir),
            "--interval", str(self.interval_s),
            "--idle-seconds", str(self.idle_s),
            "--min", str(self.min_workers),
            "--max", str(self.max_workers),
            "--concurrency", str(self.concurrency),
            "--queue", self.queue,
            "--prewarm-seconds", str(self.prewarm_s),
        )  # fmt: skip


def autoscaler_spec(settings: AutoscalerSettings, python: str = sys.executable) -> ServiceSpec:
    """The supervisor's task definition of the autoscaler (one process at most)."""
    return ServiceSpec(AUTOSCALER_SERVICE, settings.argv(python), max_count=1)


def settings_for(local: LocalSettings) -> AutoscalerSettings:
    return AutoscalerSettings(
        state_dir=local.paths.root,
        interval_s=float(local.autoscale_interval_s),
        idle_s=local.autoscale_idle_s,
        min_workers=local.workers_min,
        # Autoscaling off: the bounds are unused; keep them valid whatever AFCTL_WORKERS_MIN is.
        max_workers=local.workers_max if local.autoscale else max(local.workers_max, local.workers_min),
        concurrency=local.worker_concurrency,
        prewarm_s=local.autoscale_prewarm_s,
    )


def specs(local: LocalSettings) -> dict[str, ServiceSpec]:
    """The autoscaler's entry in the supervisor's spec (present even when autoscaling is off,
    so ``status`` lists it and ``down`` can stop it)."""
    return {AUTOSCALER_SERVICE: autoscaler_spec(settings_for(local))}


def initial_workers(ecs: ServiceControl, local: LocalSettings) -> int:
    """The worker count ``up`` sets: the minimum, but with autoscaling on never lower than the
    current desired count (a second ``up`` must not stop workers the autoscaler started)."""
    if not local.autoscale:
        return local.workers_min
    current = next((s.desired for s in ecs.describe() if s.name == WORKER_SERVICE), 0)
    return max(local.workers_min, current)


def start(ecs: ServiceControl, local: LocalSettings) -> str:
    """``up``: leave hibernation, then run the autoscaler (or keep it stopped when off)."""
    set_hibernated(local.paths, False)
    if not local.autoscale:
        ecs.set_desired_count(AUTOSCALER_SERVICE, 0)
        return "autoscaling off (AFCTL_AUTOSCALE=false): the worker count stays as set"
    ecs.set_desired_count(AUTOSCALER_SERVICE, 1)
    return (
        f"autoscaler started: every {local.autoscale_interval_s} s, workers {local.workers_min}.."
        f"{local.workers_max}, idle period {local.autoscale_idle_s} s, "
        f"pre-warm {local.autoscale_prewarm_s} s (log {decisions_log(local.paths)})"
    )


def stop(
    ecs: ServiceControl,
    paths: StatePaths,
    *,
    timeout_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """``down``: flag hibernation first (a live autoscaler then holds), then stop it, bounded."""
    set_hibernated(paths, True)
    if not any(s.name == AUTOSCALER_SERVICE for s in ecs.describe()):
        return "hibernation flag set; no autoscaler service"
    ecs.set_desired_count(AUTOSCALER_SERVICE, 0)

    def stopped() -> bool:
        state = next(s for s in ecs.describe() if s.name == AUTOSCALER_SERVICE)
        return state.running == 0 and state.stopping == 0

    if not poll_done(stopped, timeout_s=timeout_s, interval_s=0.2, sleep=sleep):
        raise ControlPlaneError(f"the autoscaler did not stop within {timeout_s:.0f} s")
    return "hibernation flag set; autoscaler stopped"


def set_hibernated(paths: StatePaths, hibernated: bool) -> None:
    flag = hibernation_flag(paths)
    if hibernated:
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.write_text(datetime.now(UTC).isoformat(timespec="seconds") + "\n")
    else:
        flag.unlink(missing_ok=True)


def build_ports(
    paths: StatePaths, ecs: ServiceControl, *, interval_s: float = 5.0
) -> tuple[ScalingPorts, LocalWorkerServices]:
    state = RuntimeState.load(paths)
    if not state.database_url or not state.redis_url:
        raise ConfigError(f"{paths.settings} records no database or Redis URL; run `afctl up` first")
    services = LocalWorkerServices(ecs)
    broker: BrokerDepth = RedisQueueDepth.from_url(state.redis_url)
    control = KombuWorkerControl(state.redis_url)
    if state.broker == "sqs":
        sqs = SqsBroker.from_record(state.sqs or {})
        broker = sqs.depth()
        control = KombuWorkerControl(sqs.broker_url, transport_options=sqs.transport_options)
    ports = ScalingPorts(
        demand=PgDemandReader.from_dsn(state.database_url),
        broker=broker,
        services=services,
        memory=JsonFileStore(memory_file(paths)),
        hibernation=FileFlag(hibernation_flag(paths)),
        publisher=RecordingPublisher(),
        control=control,
        interval_s=interval_s,
    )
    return ports, services


def run_record(run: ScalingRun, now: datetime, services: LocalWorkerServices) -> list[dict[str, Any]]:
    """One JSON-able record per decision (what the log file holds)."""
    records = []
    for outcome in run.outcomes:
        d = outcome.decision
        records.append(
            {
                "at": now.isoformat(timespec="seconds"),
                "queue": d.queue,
                "service": d.service,
                "action": d.action.value,
                "current": d.current,
                "target": outcome.target,
                "running_workers": outcome.running,
                "applied": outcome.applied,
                "demand": d.demand,
                "needed": d.needed,
                "idle_since": {n: t.isoformat() for n, t in sorted(d.memory.idle_since.items())},
                "drained": list(outcome.drain.released) if outcome.drain else [],
                "kept": [f"{n}: {why}" for n, why in outcome.drain.kept] if outcome.drain else [],
                "hibernated": run.hibernated,
                "errors": list(run.errors),
                "reason": d.reason + (f"; {outcome.drain.reason}" if outcome.drain else ""),
            }
        )
    return records


def tick(
    settings: AutoscalerSettings, ports: ScalingPorts, services: LocalWorkerServices, now: datetime
) -> list[dict[str, Any]]:
    run = evaluate([settings.scaling], ports, now)
    records = run_record(run, now, services)
    log_path = decisions_log(StatePaths(settings.state_dir))
    if log_path.exists() and log_path.stat().st_size > MAX_LOG_BYTES:
        log_path.replace(log_path.with_suffix(".jsonl.1"))  # one old generation is kept
    with log_path.open("a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
    return records


def read_decisions(paths: StatePaths, *, last: int | None = None) -> list[dict[str, Any]]:
    """The logged decisions (malformed lines skipped), oldest first."""
    try:
        lines = decisions_log(paths).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines[-last:] if last else lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def run_loop(
    settings: AutoscalerSettings,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] = time.sleep,
    ticks: int | None = None,
) -> None:
    """Evaluate every ``interval_s`` until stopped (SIGTERM ends the process between ticks)."""
    paths = StatePaths(settings.state_dir)
    ports, services = build_ports(paths, LocalEcs(paths), interval_s=settings.interval_s)
    done = 0
    while ticks is None or done < ticks:
        started = time.monotonic()
        for record in tick(settings, ports, services, clock()):
            print(
                f"{record['at']} {record['action']} {record['current']} -> {record['target']}: "
                f"{record['reason']}" + (f" [errors: {record['errors']}]" if record["errors"] else ""),
                flush=True,
            )
        done += 1
        sleep(max(0.0, settings.interval_s - (time.monotonic() - started)))
