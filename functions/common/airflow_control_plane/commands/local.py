"""``afctl up`` / ``down`` / ``status`` / ``bench-up``: the local runtime."""

from __future__ import annotations

import click

from airflow_control_plane.local.bench import run_bench
from airflow_control_plane.local.bringup import BringUp
from airflow_control_plane.local.hibernate import Hibernate
from airflow_control_plane.local.settings import LocalSettings
from airflow_control_plane.local.status import collect_status, render_status


@click.command("up")
def up() -> None:
    """Bring up the local Airflow environment (same steps as the AWS bring-up)."""
    reporter = BringUp(LocalSettings.from_env(), click.echo).run()
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
def status() -> None:
    """Each local service's desired and running count, and the health."""
    for line in render_status(collect_status(LocalSettings.from_env())):
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
