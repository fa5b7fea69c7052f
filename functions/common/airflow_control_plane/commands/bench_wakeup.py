"""``afctl bench-wakeup``: time from a task queued with zero workers to a worker running it.

Runs against the local environment of this state folder (``afctl up`` with autoscaling on):
waits until the autoscaler has stopped every worker, triggers the ``fanout`` DAG with one
item, and reads from the metadata database when its first task (``plan``) was queued and
when it started; the autoscaler's log gives when the scale-up was decided. Each round waits
for the workers to return to zero first (one idle period), so rounds are slow by design.
"""

from __future__ import annotations

import json
import statistics
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

import click

from airflow_control_plane import metadata_db
from airflow_control_plane.errors import ConfigError, TransientError
from airflow_control_plane.local.airflow_env import WORKER_SERVICE
from airflow_control_plane.local.autoscaler import read_decisions
from airflow_control_plane.local.ecs import LocalEcs
from airflow_control_plane.local.runtime_state import RuntimeState
from airflow_control_plane.local.secrets_store import load_credentials
from airflow_control_plane.local.settings import LocalSettings
from airflow_control_plane.poll import PollTimedOut, poll_until

PLAN_SQL = (
    "SELECT queued_dttm, start_date FROM task_instance "
    "WHERE dag_id = 'fanout' AND run_id = :r AND task_id = 'plan'"
)


def _api(url: str, body: object | None, token: str | None, method: str) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def _wait(what: str, timeout_s: float, check: Any) -> Any:
    try:
        return poll_until(lambda: check() or None, timeout_s=timeout_s, interval_s=0.5, what=what)
    except PollTimedOut:
        raise TransientError(f"timed out after {timeout_s:.0f} s waiting for {what}") from None


def _workers(ecs: LocalEcs) -> int:
    return next(s.running + s.stopping for s in ecs.describe() if s.name == WORKER_SERVICE)


def _round(settings: LocalSettings, base: str, token: str, dsn: str, timeout_s: float) -> float:
    ecs = LocalEcs(settings.paths)
    _wait("the workers to scale to zero", timeout_s + settings.autoscale_idle_s, lambda: _workers(ecs) == 0)
    _api(f"{base}/api/v2/dags/fanout", {"is_paused": False}, token, "PATCH")
    conf = {"task_count": 1, "sleep_seconds": 0}
    run = _api(f"{base}/api/v2/dags/fanout/dagRuns", {"logical_date": None, "conf": conf}, token, "POST")
    run_id = str(run["dag_run_id"])

    def started() -> list[Any] | None:
        conn = metadata_db.connect(dsn)
        try:
            rows = conn.run(PLAN_SQL, r=run_id)
        finally:
            conn.close()
        return rows[0] if rows and rows[0][1] is not None else None

    queued, start = _wait("the first task to start", timeout_s, started)
    seconds = float((start - queued).total_seconds())
    ups = [
        d
        for d in read_decisions(settings.paths)
        if d.get("action") == "scale_up" and datetime.fromisoformat(str(d["at"])) >= queued
    ]
    decided = (
        f"scale-up decided after {(datetime.fromisoformat(str(ups[0]['at'])) - queued).total_seconds():.1f} s"
        if ups
        else "no scale-up logged"
    )
    click.echo(f"queued -> running with zero workers: {seconds:.1f} s ({decided}; run {run_id})")
    return seconds


@click.command("bench-wakeup")
@click.option("--rounds", type=click.IntRange(1, 10), default=1, show_default=True)
@click.option("--timeout", "timeout_s", type=float, default=300.0, show_default=True)
def bench_wakeup(rounds: int, timeout_s: float) -> None:
    """Time a task queued with zero workers until a worker runs it (local, autoscaling on)."""
    settings = LocalSettings.from_env()
    if not settings.autoscale:
        raise ConfigError("autoscaling is off (AFCTL_AUTOSCALE=false): workers never wake up from zero")
    state = RuntimeState.load(settings.paths)
    credentials = load_credentials(settings.paths.credentials)
    if not state.api_port or not state.database_url or credentials is None:
        raise ConfigError(f"no local environment in {settings.paths.root}; run `afctl up` first")
    base = f"http://127.0.0.1:{state.api_port}"
    body = {"username": credentials.username, "password": credentials.password}
    token = str(_api(f"{base}/auth/token", body, None, "POST")["access_token"])
    timings = [_round(settings, base, token, state.database_url, timeout_s) for _ in range(rounds)]
    click.echo(
        f"wake-up from zero workers over {rounds} round(s): median {statistics.median(timings):.1f} s, "
        f"max {max(timings):.1f} s (autoscaler every {settings.autoscale_interval_s} s)"
    )


COMMANDS: list[click.Command] = [bench_wakeup]
