"""``afctl autoscale --local``: the local worker autoscaler loop (run by the supervisor).

Started by ``afctl up`` as the supervisor's ``autoscaler`` service with the settings of that
``up`` on its command line; it can also be run by hand (``--ticks 1`` evaluates once).
"""

from __future__ import annotations

from pathlib import Path

import click

from airflow_control_plane.errors import InvalidInputError
from airflow_control_plane.local.autoscaler import AutoscalerSettings, run_loop
from airflow_control_plane.local.paths import StatePaths
from airflow_control_plane.local.settings import LocalSettings


@click.command("autoscale")
@click.option("--local", "local", is_flag=True, help="Scale the local runtime's workers (the only mode).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--interval", type=float, default=None, help="Seconds between evaluations (default 5).")
@click.option("--idle-seconds", type=int, default=None, help="Idle period before a scale-down (default 60).")
@click.option("--min", "min_workers", type=int, default=None, help="Fewest workers (default 0).")
@click.option("--max", "max_workers", type=int, default=None, help="Most workers (default 3).")
@click.option("--concurrency", type=int, default=None, help="Tasks per worker (AFCTL_WORKER_CONCURRENCY).")
@click.option("--queue", default="default", show_default=True, help="The Celery queue the workers consume.")
@click.option(
    "--prewarm-seconds",
    type=click.IntRange(min=0),
    default=None,
    help="Start workers for scheduled DAG runs due within this many seconds (default 0: off).",
)
@click.option("--ticks", type=click.IntRange(min=1), default=None, help="Stop after N evaluations.")
def autoscale(
    local: bool,
    state_dir: Path | None,
    interval: float | None,
    idle_seconds: int | None,
    min_workers: int | None,
    max_workers: int | None,
    concurrency: int | None,
    queue: str,
    prewarm_seconds: int | None,
    ticks: int | None,
) -> None:
    """Evaluate the worker scaling policy every few seconds and apply it to the local workers.

    Each decision and its reason is appended to logs/autoscaler.jsonl in the state folder.
    Defaults come from AFCTL_* settings (AFCTL_AUTOSCALE_INTERVAL, AFCTL_AUTOSCALE_IDLE_SECONDS,
    AFCTL_AUTOSCALE_PREWARM_SECONDS, AFCTL_WORKERS_MIN, AFCTL_WORKERS_MAX,
    AFCTL_WORKER_CONCURRENCY).
    """
    if not local:
        raise InvalidInputError("only --local is supported here; on AWS the autoscaler Lambda scales")
    defaults = LocalSettings.from_env()
    settings = AutoscalerSettings(
        state_dir=(state_dir or defaults.paths.root).resolve(),
        interval_s=defaults.autoscale_interval_s if interval is None else interval,
        idle_s=defaults.autoscale_idle_s if idle_seconds is None else idle_seconds,
        min_workers=defaults.workers_min if min_workers is None else min_workers,
        max_workers=defaults.workers_max if max_workers is None else max_workers,
        concurrency=defaults.worker_concurrency if concurrency is None else concurrency,
        queue=queue,
        prewarm_s=defaults.autoscale_prewarm_s if prewarm_seconds is None else prewarm_seconds,
    )
    if not StatePaths(settings.state_dir).settings.exists():
        raise InvalidInputError(f"no local environment in {settings.state_dir}; run `afctl up` first")
    run_loop(settings, ticks=ticks)


COMMANDS: list[click.Command] = [autoscale]
