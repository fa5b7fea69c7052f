"""``afctl bench-prewarm``: does pre-warm remove the cold start of scheduled runs? Measured with
real Celery workers, the real policy and drain, once without pre-warm and once with it.

A scheduled DAG run is known before it starts (Airflow's ``dag.next_dagrun_create_after``);
here the schedule is the benchmark's own list of due times, served through the same
``DemandReader.due_dag_runs`` port the scaler reads on AWS and locally. Runs are spaced so
that the workers return to zero between them: without pre-warm every run waits for a worker
to start; with pre-warm (lead time = measured start-up + one evaluation interval) a worker is
ready when the run's tasks arrive. Workers and the ECS stand-in are those of
``afctl bench-scalein``.
"""

from __future__ import annotations

import importlib
import math
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import redis

from airflow_control_plane.commands.bench_scalein import (
    APP,
    QUEUE,
    SERVICE,
    ProcessWorkers,
    broker,
    measure_startup,
    stop_on_sigterm,
)
from airflow_control_plane.errors import ControlPlaneError, InvalidInputError
from airflow_control_plane.scaling.broker import RedisQueueDepth
from airflow_control_plane.scaling.config import QueueScaling
from airflow_control_plane.scaling.demand import DueDagRun, TaskCounts
from airflow_control_plane.scaling.drain import DEFAULT_SETTLE_S, KombuWorkerControl
from airflow_control_plane.scaling.events import RecordingPublisher
from airflow_control_plane.scaling.hibernation import FixedFlag
from airflow_control_plane.scaling.memory import InMemoryStore
from airflow_control_plane.scaling.service import ScalingPorts, evaluate

INTERVAL_S = 0.5


class _ScheduledDemand:
    """Running from the workers; due runs from the schedule (what ``dag`` holds on Airflow)."""

    def __init__(self, control: KombuWorkerControl, due: list[datetime]) -> None:
        self._control = control
        self._due = due

    def task_counts(self) -> dict[str, TaskCounts]:
        return {QUEUE: TaskCounts(queued=0, running=sum(self._control.busy(QUEUE).values()))}

    def due_dag_runs(self, now: datetime, horizon: timedelta) -> list[DueDagRun]:
        # A run stops being "due" once created (its tasks are then queued demand).
        return [
            DueDagRun("scheduled", at, frozenset({QUEUE})) for at in self._due if now <= at <= now + horizon
        ]


@dataclass(frozen=True)
class PrewarmResult:
    prewarm_s: int
    waits: tuple[float, ...]
    worker_hours: float

    def line(self) -> str:
        label = f"pre-warm {self.prewarm_s}s" if self.prewarm_s else "no pre-warm"
        return (
            f"{label:<14} wait of scheduled tasks: p50 {statistics.median(self.waits):.1f}s, "
            f"max {max(self.waits):.1f}s over {len(self.waits)} tasks; worker-hours {self.worker_hours:.4f}"
        )


def run_mode(
    broker_url: str, folder: Path, *, startup: float, prewarm_s: int, runs: int, tasks: int
) -> PrewarmResult:
    store = redis.Redis.from_url(broker_url)
    control = KombuWorkerControl(broker_url, timeout_s=1.0)
    celery = importlib.import_module("celery").Celery("prewarm_bench_client", broker=broker_url)
    workers = ProcessWorkers(folder, broker_url, concurrency=2)
    gap = 2 * startup + 12  # long enough for the workers to be drained between runs
    start = datetime.now(UTC)
    due = [start + timedelta(seconds=gap * (i + 1)) for i in range(runs)]
    scaling = QueueScaling(QUEUE, SERVICE, 2, 0, 2, startup_seconds=round(startup), prewarm_seconds=prewarm_s)
    ports = ScalingPorts(
        demand=_ScheduledDemand(control, due),
        broker=RedisQueueDepth.from_url(broker_url),
        services=workers,
        memory=InMemoryStore(),
        hibernation=FixedFlag(False),
        publisher=RecordingPublisher(),
        control=control,
        interval_s=INTERVAL_S,
        settle_s=DEFAULT_SETTLE_S,
    )
    published: dict[str, float] = {}
    pending = list(due)
    deadline = time.monotonic() + gap * (runs + 3) + 120
    try:
        while pending or workers.procs or any(store.get(f"bench:done:{k}") is None for k in published):
            if time.monotonic() > deadline:
                raise ControlPlaneError("the pre-warm benchmark did not finish in time")
            now = datetime.now(UTC)
            while pending and pending[0] <= now:
                pending.pop(0)
                for _ in range(tasks):
                    key = uuid.uuid4().hex
                    published[key] = time.time()
                    celery.send_task("bench.work", args=[key, 1.0], queue=QUEUE)
            evaluate([scaling], ports, now)
            workers.reconcile()
            time.sleep(INTERVAL_S)
    finally:
        workers.shutdown()
    waits = []
    for key, at in published.items():
        waits.append(float(store.get(f"bench:start:{key}") or at) - at)
        store.delete(f"bench:runs:{key}", f"bench:start:{key}", f"bench:done:{key}")
    return PrewarmResult(prewarm_s, tuple(waits), workers.worker_seconds / 3600)


@click.command("bench-prewarm")
@click.option(
    "--broker-url",
    "given_broker",
    default="",
    help="Redis to use (default: a private redis-server for the run).",
)
@click.option("--runs", default=4, show_default=True, help="Scheduled runs per mode.")
@click.option("--tasks", default=2, show_default=True, help="Tasks per run (1 s each).")
def bench_prewarm_command(given_broker: str, runs: int, tasks: int) -> None:
    """Scheduled runs with real Celery workers, without and with pre-warm: the cold start."""
    if runs < 1 or tasks < 1:
        raise InvalidInputError("runs and tasks must be >= 1")
    stop_on_sigterm()
    with broker(given_broker) as broker_url, tempfile.TemporaryDirectory(prefix="bench-prewarm-") as name:
        control = KombuWorkerControl(broker_url, timeout_s=1.0)
        folder = Path(name)
        (folder / "scalein_bench_app.py").write_text(APP)
        probe = ProcessWorkers(folder, broker_url, concurrency=2)
        try:
            startup = measure_startup(probe, control)
        finally:
            probe.shutdown()
        lead = math.ceil(startup + 2 * INTERVAL_S)
        click.echo(
            f"measured worker start-up {startup:.1f}s; pre-warm lead {lead}s; {runs} runs x {tasks} tasks"
        )
        cold = run_mode(broker_url, folder, startup=startup, prewarm_s=0, runs=runs, tasks=tasks)
        click.echo(cold.line())
        warm = run_mode(broker_url, folder, startup=startup, prewarm_s=lead, runs=runs, tasks=tasks)
        click.echo(warm.line())


COMMANDS: list[click.Command] = [bench_prewarm_command]
