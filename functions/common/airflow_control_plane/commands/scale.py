"""``afctl scale``, ``afctl simulate`` and ``afctl bench-scaling``: the worker autoscaler by hand.

- ``scale --dry-run``: evaluate the policy against a real metadata database and broker and
  print each queue's decision with its reason (worker counts are given on the command line);
- ``simulate TRACE.csv``: replay a task trace through the policy, plain KEDA and always-on;
- ``bench-scaling``: decision latency over 1,000,000 task instances in a real Airflow schema
  (``airflow db migrate`` on a fresh database), then the simulation figures of the shipped trace.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import click

from airflow_control_plane import metadata_db
from airflow_control_plane.errors import InvalidInputError
from airflow_control_plane.metadata_db import connection_kwargs
from airflow_control_plane.scaling.broker import RedisQueueDepth
from airflow_control_plane.scaling.config import QueueScaling, parse_queue_map
from airflow_control_plane.scaling.demand import TASK_COUNTS_SQL, PgDemandReader
from airflow_control_plane.scaling.drain import InMemoryWorkerControl, KombuWorkerControl
from airflow_control_plane.scaling.ecs import InMemoryWorkerServices, ServiceCounts
from airflow_control_plane.scaling.events import RecordingPublisher
from airflow_control_plane.scaling.hibernation import FixedFlag
from airflow_control_plane.scaling.memory import InMemoryStore
from airflow_control_plane.scaling.seed import migrate_schema, seed_bulk
from airflow_control_plane.scaling.service import ScalingPorts, ScalingRun, evaluate
from airflow_control_plane.scaling.simulate import (
    POLICIES,
    WEEKDAY_QUEUES_JSON,
    WEEKDAY_TRACE,
    SimulationSettings,
    compare,
    format_report,
    load_trace,
)


def _queues(value: str) -> tuple[QueueScaling, ...]:
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            value = path.read_text()
        except OSError as exc:
            raise InvalidInputError(f"cannot read queue map {path}: {exc}") from None
    return parse_queue_map(value, source="--queues")


def _pairs(values: tuple[str, ...], option: str) -> dict[str, int]:
    result: dict[str, int] = {}
    for item in values:
        name, sep, number = item.partition("=")
        if not sep or not number.strip().isdigit():
            raise InvalidInputError(f"{option} takes QUEUE=COUNT, got {item!r}")
        result[name.strip()] = int(number)
    return result


def _print_run(run: ScalingRun) -> None:
    for outcome in run.outcomes:
        d = outcome.decision
        click.echo(f"{d.queue} ({d.service}): {d.action.value} {d.current} -> {outcome.target}")
        click.echo(f"  why: {d.reason}")
        if outcome.drain is not None:
            click.echo(f"  drain: {outcome.drain.reason}")
    for error in run.errors:
        click.secho(f"  read error (no scale-down on it): {error}", fg="yellow")
    click.echo("dry run: nothing was changed" if run.dry_run else "applied")


@click.command("scale")
@click.option(
    "--db-url", required=True, help="Metadata database, postgresql://user@host:5432/db (read-only role)."
)
@click.option("--broker-url", required=True, help="Celery broker, redis://host:6379/0.")
@click.option(
    "--queues",
    "queues_json",
    required=True,
    help='Queue map: a JSON list of objects, e.g. \'[{"queue": "default", "service": "worker-default", '
    '"concurrency": 16, "min": 0, "max": 4, "idle_seconds": 600}]\', or @file.json.',
)
@click.option("--current", multiple=True, help="QUEUE=N: the worker service's desired count now (default 0).")
@click.option("--at", "at", default=None, help="Evaluation time, ISO 8601 (default: now).")
@click.option("--hibernated", is_flag=True, help="Evaluate as if the environment were hibernated.")
@click.option(
    "--dry-run", is_flag=True, default=True, hidden=True, help="Always: the Lambda and `afctl up` act."
)
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON (the Lambda's result shape).")
def scale_command(
    db_url: str,
    broker_url: str,
    queues_json: str,
    current: tuple[str, ...],
    at: str | None,
    hibernated: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Evaluate the worker autoscaling policy and print each decision with its reason.

    A dry run only: nothing is changed. The autoscaler Lambda (on AWS) and the local runtime's
    autoscaler (`afctl up`) apply the same policy.
    """
    queues = _queues(queues_json)
    counts = _pairs(current, "--current")
    try:
        now = datetime.fromisoformat(at) if at else datetime.now(UTC)
    except ValueError:
        raise InvalidInputError(f"--at {at!r} is not an ISO 8601 time") from None
    services = InMemoryWorkerServices(
        {q.service: ServiceCounts(counts.get(q.queue, 0), counts.get(q.queue, 0)) for q in queues}
    )
    ports = ScalingPorts(
        demand=PgDemandReader.from_dsn(db_url),
        broker=RedisQueueDepth.from_url(broker_url),
        services=services,
        memory=InMemoryStore(),
        hibernation=FixedFlag(hibernated),
        publisher=RecordingPublisher(),
        control=KombuWorkerControl(broker_url),
    )
    run = evaluate(queues, ports, now if now.tzinfo else now.replace(tzinfo=UTC), dry_run=True)
    if as_json:
        click.echo(json.dumps(run.to_dict(), indent=2, sort_keys=True))
        return
    _print_run(run)


@click.command("simulate")
@click.argument("traces", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--startup-delay",
    default=45.0,
    show_default=True,
    help="Seconds from scale-up to a ready worker (the idle period defaults to it).",
)
@click.option("--queues", "queues_json", default=WEEKDAY_QUEUES_JSON, help="Queue map JSON, or @file.json.")
@click.option("--evaluate-every", default=60.0, show_default=True, help="Seconds between scaler runs.")
@click.option("--tick", default=5.0, show_default=True, help="Simulation step in seconds.")
@click.option(
    "--stop-timeout", default=120.0, show_default=True, help="Fargate stop timeout (at most 120 s)."
)
@click.option("--prefetch", default=1, show_default=True, help="Celery worker_prefetch_multiplier.")
@click.option("--seed", default=7, show_default=True, help="Seed of the zone-balance choice on scale-in.")
@click.option("--check", is_flag=True, help="Exit 1 unless every policy meets the bound against KEDA.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document: each trace's comparison.")
def simulate_command(
    traces: tuple[Path, ...],
    startup_delay: float,
    queues_json: str,
    evaluate_every: float,
    tick: float,
    stop_timeout: float,
    prefetch: int,
    seed: int,
    check: bool,
    as_json: bool,
) -> None:
    """Replay task traces (CSV arrival,duration,queue[,scheduled]; default: the shipped weekday)
    through the policy, plain KEDA and always-on, beside the clairvoyant lower bound."""
    if tick <= 0 or evaluate_every <= 0 or startup_delay < 0 or not 0 <= stop_timeout <= 120 or prefetch < 1:
        raise InvalidInputError(
            "need tick > 0, evaluate-every > 0, startup-delay >= 0, 0 <= stop-timeout <= 120, prefetch >= 1"
        )
    queues = _queues(queues_json)
    settings = SimulationSettings(
        startup_delay, evaluate_every, tick, stop_timeout, seed, prefetch_multiplier=prefetch
    )
    failed: list[str] = []
    documents: list[dict[str, object]] = []
    for trace in traces or (WEEKDAY_TRACE,):
        tasks = load_trace(trace, [q.queue for q in queues])
        comparison = compare(tasks, queues, settings)
        if as_json:
            documents.append({"trace": str(trace), "tasks": len(tasks), **comparison.to_dict()})
        else:
            click.echo(f"trace {trace}: {len(tasks)} tasks on {len(queues)} queue(s)")
            click.echo(format_report(comparison, settings))
        failed.extend(
            f"{trace.name}: {comparison.verdict(s)[1]}" for s in POLICIES if not comparison.verdict(s)[0]
        )
    if as_json:
        click.echo(json.dumps({"traces": documents}, indent=2, sort_keys=True))
    if check and failed:
        raise click.ClickException("not met: " + "; ".join(failed))


def _bench_latency(dsn: str, broker_url: str, queues: tuple[QueueScaling, ...], repeats: int) -> list[float]:
    ports = ScalingPorts(
        demand=PgDemandReader.from_dsn(dsn),
        broker=RedisQueueDepth.from_url(broker_url),
        services=InMemoryWorkerServices({q.service: ServiceCounts(1, 1) for q in queues}),
        memory=InMemoryStore(),
        hibernation=FixedFlag(False),
        publisher=RecordingPublisher(),
        control=InMemoryWorkerControl({}),
    )
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        run = evaluate(queues, ports, datetime.now(UTC), dry_run=True)
        timings.append(time.perf_counter() - start)
        if run.errors:
            raise InvalidInputError(f"benchmark evaluation failed: {run.errors}")
    return timings


@click.command("bench-scaling")
@click.option("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres", show_default=True)
@click.option("--broker-url", default="redis://127.0.0.1:6379/0", show_default=True, help="Only LLEN is run.")
@click.option("--rows", default=1_000_000, show_default=True, help="task_instance rows to seed.")
@click.option("--repeats", default=30, show_default=True)
@click.option(
    "--airflow", "airflow_bin", default=str(Path(sys.executable).parent / "airflow"), show_default=True
)
def bench_scaling_command(pg_url: str, broker_url: str, rows: int, repeats: int, airflow_bin: str) -> None:
    """Decision latency over a large task_instance table, then the simulation figures."""
    admin_kwargs = connection_kwargs(pg_url)
    name = f"acp_bench_scaling_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = metadata_db.connect(pg_url)
    admin.run(f'CREATE DATABASE "{name}"')
    user = admin_kwargs["user"]
    host, port = admin_kwargs["host"], admin_kwargs["port"]
    dsn = f"postgresql://{user}@{host}:{port}/{name}"
    queues = parse_queue_map(WEEKDAY_QUEUES_JSON)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-scaling-") as home:
            start = time.perf_counter()
            migrate_schema(
                Path(airflow_bin), f"postgresql+psycopg2://{user}@{host}:{port}/{name}", Path(home)
            )
            click.echo(f"airflow db migrate: {time.perf_counter() - start:.1f}s")
        conn = metadata_db.connect(dsn, timeout_s=None)  # seeding is slow
        start = time.perf_counter()
        seed_bulk(conn, rows=rows, queues=[q.queue for q in queues])
        total = conn.run("SELECT count(*) FROM task_instance")[0][0]
        click.echo(f"seeded {total} task instances in {time.perf_counter() - start:.1f}s")
        query_ms = []
        for _ in range(repeats):
            begin = time.perf_counter()
            conn.run(TASK_COUNTS_SQL)
            query_ms.append((time.perf_counter() - begin) * 1000)
        click.echo(f"task-count query alone (open connection): median {statistics.median(query_ms):.2f} ms")
        conn.close()
        timings = _bench_latency(dsn, broker_url, queues, repeats)
        per_queue = [t / len(queues) * 1000 for t in timings]
        click.echo(
            f"decision latency ({len(queues)} queues, database + broker reads + decide, new connection "
            f"each run): median {statistics.median(timings) * 1000:.1f} ms per evaluation, "
            f"{statistics.median(per_queue):.1f} ms per queue (p95 "
            f"{sorted(per_queue)[max(0, int(0.95 * len(per_queue)) - 1)]:.1f} ms); goal < 50 ms per queue"
        )
    finally:
        admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    settings = SimulationSettings()
    comparison = compare(load_trace(WEEKDAY_TRACE, [q.queue for q in queues]), queues, settings)
    click.echo(format_report(comparison, settings))


COMMANDS: list[click.Command] = [scale_command, simulate_command, bench_scaling_command]
