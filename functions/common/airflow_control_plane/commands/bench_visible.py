"""``afctl bench-visible``: push -> new DAG listed by ``/api/v2/dags``, this project beside GitDagBundle.

One real Airflow (a migrated PostgreSQL database, one dag-processor, one api-server) reads two
bundles in the same run: ``release`` (ReleaseDagBundle over a DAG sync target, refreshed every
second) and ``git`` (Airflow's GitDagBundle, the common choice, refreshed every 10 s). Each
push commits a new DAG to both repositories at the same instant; the release side then runs
``afctl sync`` as a separate process (its start-up included), the git side does nothing more.
The time to each DAG being listed by the REST API is measured from the commit. Needs an
Airflow environment with ``apache-airflow-providers-git`` (``make bench-visible`` builds one
from the runtime lock plus that provider; it is not in the image).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from airflow_control_plane.local.airflow_env import RELEASE_BUNDLE_CLASSPATH
from airflow_control_plane.poll import poll_done

GIT_BUNDLE_CLASSPATH = "airflow.providers.git.bundles.git.GitDagBundle"
DAG = """from datetime import datetime

from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG(dag_id="{dag_id}", start_date=datetime(2026, 1, 1), schedule=None):
    EmptyOperator(task_id="noop")
"""
GOAL_S = 3.0


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid"}
    env |= {"GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}
    done = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)
    return done.stdout.decode().strip()


def _commit_dag(repo: Path, dag_id: str) -> None:
    (repo / "dags").mkdir(parents=True, exist_ok=True)
    (repo / "dags" / f"{dag_id}.py").write_text(DAG.format(dag_id=dag_id))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", f"add {dag_id}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _database(admin_url: str) -> Iterator[str]:
    import pg8000.native

    from airflow_control_plane.local.backing import PostgresTarget

    target = PostgresTarget.parse(admin_url)
    name = f"bench_visible_{secrets.token_hex(4)}"
    admin = target.with_database("postgres").connect()
    try:
        admin.run(f'CREATE DATABASE "{name}"')
    finally:
        admin.close()
    try:
        yield target.with_database(name).sqlalchemy_url
    finally:
        try:
            admin = target.with_database("postgres").connect()
            try:
                admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                admin.close()
        except (pg8000.native.DatabaseError, pg8000.native.InterfaceError, OSError) as exc:
            click.echo(f"warning: could not drop the scratch database {name}: {exc}", err=True)


def _airflow_env(root: Path, sql_url: str, target: Path, git_repo: Path, refresh_s: int) -> dict[str, str]:
    bundles = [
        {
            "name": "release",
            "classpath": RELEASE_BUNDLE_CLASSPATH,
            "kwargs": {"target": str(target), "refresh_interval": refresh_s},
        },
        {
            "name": "git",
            "classpath": GIT_BUNDLE_CLASSPATH,
            "kwargs": {"repo_url": f"file://{git_repo}", "tracking_ref": "main", "refresh_interval": 10},
        },
    ]
    return {
        **os.environ,
        "AIRFLOW_HOME": str(root / "airflow-home"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_url,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager."
        "SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
        # how often the processor asks the bundles whether they are due (default 5 s)
        "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "1",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
    }


def _listed(api: str) -> set[str]:
    try:
        with urllib.request.urlopen(f"{api}/api/v2/dags?limit=1000", timeout=5) as resp:  # noqa: S310
            data = json.loads(resp.read())
    except OSError:
        return set()
    return {str(d["dag_id"]) for d in data.get("dags", [])}


def _wait_listed(api: str, dag_ids: set[str], timeout_s: float) -> dict[str, float]:
    started = time.monotonic()
    seen: dict[str, float] = {}

    def all_listed() -> bool:
        listed = _listed(api)
        for dag_id in dag_ids - set(seen):
            if dag_id in listed:
                seen[dag_id] = time.monotonic() - started
        return len(seen) == len(dag_ids)

    poll_done(all_listed, timeout_s=timeout_s, interval_s=0.1)  # what is missing then is reported
    return seen


@click.command("bench-visible")
@click.option(
    "--airflow-venv",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="A virtual environment with Airflow, apache-airflow-providers-git and this package.",
)
@click.option("--pushes", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--refresh", "refresh_s", default=1, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--database-url",
    envvar="AFCTL_DATABASE_URL",
    default="postgresql://postgres@127.0.0.1:5432/postgres",
    show_default=True,
    help="A PostgreSQL server where a scratch database may be created (and dropped at the end).",
)
def bench_visible(airflow_venv: Path, pushes: int, refresh_s: int, database_url: str) -> None:
    """Time push -> DAG listed by /api/v2/dags: DAG sync + ReleaseDagBundle vs GitDagBundle (10 s)."""
    airflow = airflow_venv / "bin" / "airflow"
    if not airflow.exists():
        raise click.UsageError(f"no airflow in {airflow_venv}")
    afctl = Path(sys.executable).parent / "afctl"
    with tempfile.TemporaryDirectory(prefix="bench-visible-") as tmp, _database(database_url) as sql_url:
        root = Path(tmp)
        rel_repo, git_repo, target = root / "release-repo", root / "git-repo", root / "target"
        for repo, first in ((rel_repo, "rel_000"), (git_repo, "git_000")):
            repo.mkdir()
            _git(repo, "init", "-q", "-b", "main")
            _commit_dag(repo, first)
        sync = [str(afctl), "sync", "--repo", f"file://{rel_repo}", "--target", str(target)]
        sync += ["--cache-dir", str(root / "cache")]
        subprocess.run(sync, check=True, capture_output=True)
        env = _airflow_env(root, sql_url, target, git_repo, refresh_s)
        click.echo("migrating the scratch database ...")
        subprocess.run([str(airflow), "db", "migrate"], env=env, check=True, capture_output=True)
        port = _free_port()
        logs = root / "logs"
        logs.mkdir()
        procs = [
            subprocess.Popen(
                [str(airflow), *args],
                env=env,
                stdout=(logs / f"{args[0]}.log").open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            for args in (["dag-processor"], ["api-server", "--port", str(port)])
        ]
        api = f"http://127.0.0.1:{port}"
        try:
            initial = _wait_listed(api, {"rel_000", "git_000"}, 180)
            if len(initial) < 2:
                tail = (logs / "dag-processor.log").read_text()[-2000:]
                raise click.ClickException(
                    f"the first DAGs never appeared ({initial}); dag-processor:\n{tail}"
                )
            results = _measure(api, rel_repo, git_repo, sync, pushes)
        finally:
            for proc in procs:
                _stop(proc)
        _report(results, refresh_s)


def _measure(
    api: str, rel_repo: Path, git_repo: Path, sync: list[str], pushes: int
) -> list[tuple[float | None, float | None, float]]:
    results = []
    for index in range(1, pushes + 1):
        rel_id, git_id = f"rel_{index:03d}", f"git_{index:03d}"
        _commit_dag(git_repo, git_id)
        _commit_dag(rel_repo, rel_id)
        started = time.monotonic()
        subprocess.run(sync, check=True, capture_output=True)  # what a push (webhook) or a user runs
        sync_s = time.monotonic() - started
        seen = _wait_listed(api, {rel_id, git_id}, 60)  # times counted from the end of the sync
        rel = seen.get(rel_id)
        git = seen.get(git_id)
        results.append((None if rel is None else rel + sync_s, None if git is None else git + sync_s, sync_s))
        click.echo(
            f"push {index}: release bundle {_fmt(results[-1][0])} (afctl sync {sync_s:.2f} s), "
            f"GitDagBundle {_fmt(results[-1][1])}"
        )
    return results


def _fmt(value: float | None) -> str:
    return "not seen in 60 s" if value is None else f"{value:.2f} s"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=10)


def _report(results: list[tuple[float | None, float | None, float]], refresh_s: int) -> None:
    rel = [r for r, _g, _s in results if r is not None]
    git = [g for _r, g, _s in results if g is not None]
    syncs = [s for _r, _g, s in results]
    rel_median = statistics.median(rel) if rel else float("nan")
    git_median = statistics.median(git) if git else float("nan")
    click.echo(
        f"push -> listed by /api/v2/dags, median over {len(results)} pushes: "
        f"DAG sync + ReleaseDagBundle (refresh {refresh_s} s) {rel_median:.2f} s "
        f"(afctl sync {statistics.median(syncs):.2f} s); GitDagBundle (refresh 10 s) {git_median:.2f} s"
    )
    ok = len(rel) == len(results) and statistics.median(rel) < GOAL_S
    click.echo(f"  [{'PASS' if ok else 'FAIL'}] push -> visible < {GOAL_S:.0f} s median")


COMMANDS: list[click.Command] = [bench_visible]
