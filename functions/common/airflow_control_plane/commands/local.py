"""``afctl up`` / ``down`` / ``status`` / ``bench-up``: the local runtime."""

from __future__ import annotations

import json
import os

import click

from airflow_control_plane.local.bench import run_bench
from airflow_control_plane.local.bringup import BringUp
from airflow_control_plane.local.hibernate import Hibernate
from airflow_control_plane.local.lease import JOIN_ENV
from airflow_control_plane.local.settings import LocalSettings
from airflow_control_plane.local.status import collect_status, render_status

UP_HELP = """Bring up the local Airflow environment (same steps as the AWS bring-up).

\b
Everything is optional; the defaults need only PostgreSQL and Redis on 127.0.0.1.
  AFCTL_STATE_DIR       state folder (default: .local/ of this checkout); one environment each
  AFCTL_DATABASE_URL    postgresql://user@host:port/db (default: the local server, a database
                        named after this checkout; embedded pgserver only when nothing is
                        configured and nothing answers on 127.0.0.1:5432)
  AFCTL_REDIS_URL       redis://host:port/N (default: the local server, a db number claimed
                        for this state folder; embedded redis-server as above)
  AFCTL_JOIN=1          use a database/Redis db another local environment leases (--join)
  AFCTL_BROKER          redis (default) or sqs: Celery on SQS, at AFCTL_SQS_ENDPOINT_URL
                        (default AWS's), AFCTL_SQS_REGION, AFCTL_SQS_QUEUE_PREFIX (default
                        the database name + "-"); credentials from the usual AWS variables
  AFCTL_API_PORT        UI/API port (default 8080 when free, else a free one, kept)
  AFCTL_DAGS_SOURCE     git (publish committed dags/, default) or folder (working tree)
  AFCTL_DAGS_FOLDER, AFCTL_DAG_REPO_URL, _REF, _SUBDIR, _TOKEN_ENV   where DAGs come from
  AFCTL_AUTOSCALE, AFCTL_WORKERS_MIN, AFCTL_WORKERS_MAX, AFCTL_AUTOSCALE_IDLE_SECONDS,
  AFCTL_WORKER_CONCURRENCY                                        workers
  AFCTL_HEALTH_TIMEOUT, AFCTL_STEADY_TIMEOUT, AFCTL_MIGRATE_TIMEOUT, AFCTL_STOP_GRACE,
  AFCTL_DRAIN_TIMEOUT                                             waits, in seconds
  AFCTL_SETTINGS_DIR    connections/variables/pools files applied at each up
                        (default: airflow_settings/ of this checkout)
  AIRFLOW__SECTION__KEY your own Airflow settings, passed to every component (except the
                        ones the runtime must own: executor, keys, database, broker, API)

A setting that changes the port, database or broker of a running environment is refused:
`afctl down` first.
"""


@click.command("up", help=UP_HELP)
@click.option("--join", is_flag=True, help="Join a database/Redis db another local environment leases.")
def up(join: bool) -> None:
    env = dict(os.environ)
    if join:
        env[JOIN_ENV] = "1"
    reporter = BringUp(LocalSettings.from_env(env), click.echo, base_env=env).run()
    click.echo(f"up: {reporter.total_seconds:.1f} s in total")


@click.command("down")
@click.option("--force", is_flag=True, help="Do not wait for running or queued tasks.")
@click.option(
    "--drain-timeout", type=float, default=None, help="Seconds to wait for tasks (AFCTL_DRAIN_TIMEOUT)."
)
def down(force: bool, drain_timeout: float | None) -> None:
    """Hibernate: scheduler first, drain, then the rest; the metadata DB is kept."""
    reporter = Hibernate(
        LocalSettings.from_env(), click.echo, force=force, drain_timeout_s=drain_timeout
    ).run()
    click.echo(f"down: {reporter.total_seconds:.1f} s in total")


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
def status(as_json: bool) -> None:
    """Services (desired/running, health), the DAG release and last refused sync, the autoscaler."""
    report = collect_status(LocalSettings.from_env())
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str))
        return
    for line in render_status(report):
        click.echo(line)


@click.command("bench-up")
@click.option("--keep", is_flag=True, help="Keep the temporary state folders and databases.")
@click.option(
    "--rounds", type=click.IntRange(1, 20), default=1, show_default=True, help="Alternating rounds."
)
def bench_up(keep: bool, rounds: int) -> None:
    """Time `airflow standalone` and `afctl up` to a healthy /api/v2/monitor/health.

    Each round runs both on fresh databases (and a fresh state folder / AIRFLOW_HOME) on
    the PostgreSQL of AFCTL_DATABASE_URL; the medians and their ratio are printed.
    """
    run_bench(LocalSettings.from_env(), click.echo, keep=keep, rounds=rounds)


COMMANDS: list[click.Command] = [up, down, status, bench_up]
