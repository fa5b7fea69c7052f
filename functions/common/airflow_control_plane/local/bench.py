"""``afctl bench-up``: time to healthy of ``airflow standalone`` and of ``afctl up``.

Both run in the same invocation on the same machine, each on a fresh state folder and a
fresh PostgreSQL database (so both pay for the schema creation), and both are judged by the
same criterion: /api/v2/monitor/health reports every component healthy.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from airflow_control_plane.errors import ControlPlaneError
from airflow_control_plane.health import HttpHealthSource, read_health
from airflow_control_plane.local import backing, proc
from airflow_control_plane.local.airflow_env import process_environment
from airflow_control_plane.local.bringup import BringUp
from airflow_control_plane.local.hibernate import Hibernate
from airflow_control_plane.local.ports import free_port
from airflow_control_plane.local.settings import LocalSettings
from airflow_control_plane.local.step_report import StepReporter
from airflow_control_plane.poll import PollTimedOut, poll_until

_TIMEOUT_S = 300.0


def _fresh_database(base: backing.PostgresTarget, label: str) -> backing.PostgresTarget:
    target = base.with_database(f"afctl_bench_{label}_{uuid.uuid4().hex[:8]}")
    backing.ensure_database(target)
    return target


def _drop_database(target: backing.PostgresTarget) -> None:
    conn = target.with_database("postgres").connect()
    try:
        conn.run(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
    finally:
        conn.close()


def time_standalone(settings: LocalSettings, target: backing.PostgresTarget, home: Path) -> float:
    """Seconds from starting ``airflow standalone`` to a fully healthy health document."""
    port = free_port()
    bin_dir = str(Path(settings.airflow_bin).parent)
    env = process_environment(
        os.environ,
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": target.sqlalchemy_url,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(settings.dags_folder),
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",  # standalone runs `airflow`
        },
    )
    log = (home / "standalone.log").open("wb")
    started = time.monotonic()
    process = subprocess.Popen(
        [settings.airflow_bin, "standalone"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    source = HttpHealthSource(f"http://127.0.0.1:{port}")

    def healthy() -> bool:
        if process.poll() is not None:
            raise ControlPlaneError(f"airflow standalone exited early; see {home / 'standalone.log'}")
        return read_health(source.fetch).healthy

    try:
        poll_until(healthy, timeout_s=_TIMEOUT_S, interval_s=0.25, what="airflow standalone healthy")
        return time.monotonic() - started
    except PollTimedOut:
        raise ControlPlaneError(f"airflow standalone not healthy within {_TIMEOUT_S:.0f} s") from None
    finally:
        proc.signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.signal_group(process.pid, signal.SIGKILL)
            process.wait()
        proc.signal_group(process.pid, signal.SIGKILL)  # children that outlived the parent
        log.close()


def time_up(settings: LocalSettings, target: backing.PostgresTarget, state_dir: Path) -> StepReporter:
    env = {**os.environ, "AFCTL_STATE_DIR": str(state_dir), "AFCTL_DATABASE_URL": _url(target)}
    local = LocalSettings.from_env(env)
    try:
        return BringUp(local, lambda line: None, base_env=env).run()
    finally:
        Hibernate(local, lambda line: None, force=True).run()


def _url(target: backing.PostgresTarget) -> str:
    auth = target.user + (f":{target.password}" if target.password else "")
    return f"postgresql://{auth}@{target.host}:{target.port}/{target.database}"


def _one_round(
    settings: LocalSettings,
    base: backing.PostgresTarget,
    workdir: Path,
    databases: list[backing.PostgresTarget],
    echo: Callable[[str], None],
) -> tuple[float, float]:
    echo("airflow standalone (fresh database, fresh AIRFLOW_HOME) ...")
    db = _fresh_database(base, "standalone")
    databases.append(db)
    home = workdir / f"standalone-{len(databases)}"
    home.mkdir()
    standalone_s = time_standalone(settings, db, home)
    echo(f"  healthy after {standalone_s:.1f} s")
    echo("afctl up (fresh database, fresh state folder) ...")
    db = _fresh_database(base, "up")
    databases.append(db)
    reporter = time_up(settings, db, workdir / f"up-{len(databases)}")
    for timing in reporter.timings:
        echo(f"  {timing.step:<28} {timing.seconds:6.1f} s")
    healthy_at = sum(t.seconds for t in reporter.timings[:6])  # through health_gate
    echo(f"  healthy after {healthy_at:.1f} s (ready after {reporter.total_seconds:.1f} s)")
    echo(f"  ratio up/standalone to healthy: {healthy_at / standalone_s:.2f}")
    return standalone_s, healthy_at


def run_bench(settings: LocalSettings, echo: Callable[[str], None], *, keep: bool, rounds: int = 1) -> None:
    """Alternate standalone and up ``rounds`` times; print each and the medians."""
    base = backing.PostgresTarget.parse(settings.database_url)
    workdir = Path(tempfile.mkdtemp(prefix="afctl-bench-"))
    databases: list[backing.PostgresTarget] = []
    results = []
    try:
        for number in range(1, rounds + 1):
            echo(f"--- round {number}/{rounds}")
            results.append(_one_round(settings, base, workdir, databases, echo))
        standalone = statistics.median(r[0] for r in results)
        up = statistics.median(r[1] for r in results)
        echo(f"median to healthy: standalone {standalone:.1f} s, afctl up {up:.1f} s")
        echo(f"ratio up/standalone: {up / standalone:.2f} (goal <= 1.5)")
    finally:
        if not keep:
            for db in databases:
                _drop_database(db)
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            echo(f"kept {workdir} and databases {[d.database for d in databases]}")
